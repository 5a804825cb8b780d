"""How the backend fetches task images and scores them with a model: the one setup that a training
round (backend.rounds) and /predict (backend.ml_model) share, so both read images under the same
limits and score them the same way."""

from __future__ import annotations

import numpy as np
from PIL import Image

from backend.images import ImageFetcher
from backend.ls_client import LabelStudioClient
from backend.settings import Settings
from model import scoring, strategies
from model.config import ModelConfig
from model.networks import LossLearningNet
from model.outputs import ScoreOutputs


def image_fetcher(settings: Settings, client: LabelStudioClient, image_size: int) -> ImageFetcher:
    """A fetcher holding images at the model's input size ``image_size`` (pretrained weights set
    their own, e.g. 224 px), within the settings' download, pixel and cache limits."""
    downloader = client.image_downloader(
        settings.allowed_image_hosts,
        settings.local_files_document_root,
        retries=settings.image_fetch_retries,
        backoff_s=settings.image_fetch_backoff_s,
    )
    return ImageFetcher(
        downloader,
        settings.resolved_image_cache_dir,
        max_bytes=settings.image_max_bytes,
        max_pixels=settings.image_max_pixels,
        timeout_s=settings.image_fetch_timeout_s,
        resize_to=image_size,
        cache_max_bytes=settings.image_cache_max_bytes,
    )


def mc_samples_for(settings: Settings, strategy: str | None) -> int:
    """MC-dropout samples a scoring pass takes: MC_DROPOUT_SAMPLES when ``strategy`` ranks with
    them, none when it does not or when nothing is ranked (``strategy`` None)."""
    if strategy is None or not strategies.needs_mc_samples(strategy):
        return 0
    return settings.mc_dropout_samples


def score_images(
    model: LossLearningNet,
    images: list[Image.Image | np.ndarray],
    model_config: ModelConfig,
    settings: Settings,
    strategy: str | None = None,
) -> ScoreOutputs:
    """One scoring pass over ``images`` (PIL images or their model-ready arrays, see
    ImageFetcher.fetch_arrays) with the settings' batch size, device and seed, and the
    MC-dropout samples ``strategy`` needs."""
    return scoring.score(
        model,
        images,
        model_config,
        batch_size=settings.score_batch_size,
        device=settings.device,
        seed=settings.seed,
        mc_samples=mc_samples_for(settings, strategy),
    )
