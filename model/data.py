"""Images in, tensors out: decoding untrusted bytes, colour-mode normalisation, resizing, augmentation.

Training keeps the resized labeled set once as a uint8 tensor (``images_to_uint8``) and augments
and normalises each mini-batch on the training device, so PIL work is done once per image, not
once per epoch.
"""

from __future__ import annotations

import dataclasses
import io
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from model.augment import KEEP_COLOUR, StrongAugment
from model.config import ModelConfig


class ImageError(ValueError):
    """The bytes are not an image we can use (not an image, truncated, or too large)."""


# Transparent pixels are shown on white in Label Studio, so we composite onto white too.
_BACKGROUND = (255, 255, 255)


def _high_depth_to_8bit(img: Image.Image) -> Image.Image:
    """Scale a 16/32-bit integer or float single-channel image to 8-bit grayscale.

    PIL's own convert("L") clips 16-bit values at 255, turning most 16-bit images white.
    """
    values = np.asarray(img, dtype=np.float64)
    if img.mode.startswith("I;16"):
        scaled = values / 257.0  # 65535 -> 255
    elif img.mode == "F" and values.size and values.min() >= 0.0 and values.max() <= 1.0:
        scaled = values * 255.0
    elif values.size and values.min() >= 0.0 and values.max() <= 255.0:
        scaled = values
    else:
        # Unknown range (e.g. signed 32-bit depth maps): stretch to the full 8-bit range.
        low, high = (values.min(), values.max()) if values.size else (0.0, 0.0)
        scaled = (values - low) * (255.0 / (high - low)) if high > low else values * 0.0
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), mode="L")


def to_rgb_image(img: Image.Image) -> Image.Image:
    """Return an 8-bit RGB copy of ``img`` whatever its mode; animated images give their first frame."""
    if getattr(img, "is_animated", False):
        img.seek(0)
    mode = img.mode
    if mode == "RGB":
        return img.copy()
    if mode in ("I", "F") or mode.startswith("I;16"):
        return _high_depth_to_8bit(img).convert("RGB")
    if mode == "P":
        # Palette images may carry transparency in their info; RGBA exposes it as alpha.
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "La", "RGBa", "PA"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _BACKGROUND + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    try:
        return img.convert("RGB")  # L, 1, CMYK, YCbCr, HSV ...
    except (ValueError, OSError) as error:
        raise ImageError(f"cannot convert image mode {mode!r} to RGB: {error}") from error


def load_image_bytes(data: bytes, max_pixels: int) -> Image.Image:
    """Decode untrusted bytes into an RGB image (EXIF orientation applied).

    Raises ImageError for empty input, non-images, truncated files, and images with more than
    ``max_pixels`` pixels (checked from the header, before decoding: decompression bombs).
    """
    if max_pixels < 1:
        raise ValueError(f"max_pixels must be >= 1, got {max_pixels}")
    if not data:
        raise ImageError("empty image data (0 bytes)")
    with warnings.catch_warnings():
        # We enforce our own pixel limit; PIL's global warning would only be noise.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            img: Image.Image = Image.open(io.BytesIO(data))
        except UnidentifiedImageError as error:
            raise ImageError(f"not a recognised image format ({len(data)} bytes)") from error
        except Image.DecompressionBombError as error:
            raise ImageError(f"image too large: {error}") from error
        except (OSError, ValueError, SyntaxError) as error:
            raise ImageError(f"cannot read image header: {error}") from error
        width, height = img.size
        if width < 1 or height < 1:
            raise ImageError(f"image has no pixels ({width}x{height})")
        if width * height > max_pixels:
            raise ImageError(
                f"image too large: {width}x{height} = {width * height} pixels "
                f"exceeds the limit of {max_pixels}"
            )
        try:
            img.load()
            img = ImageOps.exif_transpose(img) or img
            return to_rgb_image(img)
        except ImageError:
            raise
        except Image.DecompressionBombError as error:
            raise ImageError(f"image too large: {error}") from error
        except (OSError, ValueError, SyntaxError, EOFError) as error:
            # Truncated or corrupt pixel data shows up only when decoding.
            raise ImageError(f"corrupt or truncated image ({img.format}): {error}") from error


def _to_model_mode(img: Image.Image, channels: int) -> Image.Image:
    rgb = img if img.mode == "RGB" else to_rgb_image(img)
    return rgb if channels == 3 else rgb.convert("L")


def resize_for_model(img: Image.Image, image_size: int) -> Image.Image:
    """The image at the model's square input size, in RGB: what images_to_uint8 feeds the network.

    Callers that hold many images (a whole labeled set) resize on arrival, so memory scales with
    image_size², not with the originals' megapixels; resizing again later is then a no-op.
    """
    rgb = img if img.mode == "RGB" else to_rgb_image(img)
    if rgb.size == (image_size, image_size):
        return rgb
    return rgb.resize((image_size, image_size), Image.Resampling.BILINEAR)


# The version of what model_ready_array makes of a decoded image. Arrays cached on disk are keyed
# by it: bump it whenever load_image_bytes, resize_for_model or the colour-mode conversion would
# give other pixels for the same bytes, so no cache serves arrays of the old preprocessing.
MODEL_ARRAY_VERSION = 1


def model_ready_array(img: Image.Image, image_size: int, channels: int) -> np.ndarray:
    """The pixels the network sees before normalisation: uint8 (image_size, image_size, channels).

    The one resize path of training and scoring (``images_to_uint8`` stacks these), so an array
    computed once and kept gives exactly what decoding and resizing again would.
    """
    resized = _to_model_mode(resize_for_model(img, image_size), channels)
    return np.asarray(resized, dtype=np.uint8).reshape(image_size, image_size, channels).copy()


def images_to_uint8(images: Sequence[Image.Image | np.ndarray], cfg: ModelConfig) -> torch.Tensor:
    """Resize to image_size x image_size and stack as a uint8 tensor (N, C, H, W).

    An item may also be a ready ``model_ready_array`` of this size and channel count (a cached
    one), which is stacked as it is.
    """
    size = cfg.image_size
    shape = (size, size, cfg.channels)
    out = torch.empty((len(images), cfg.channels, size, size), dtype=torch.uint8)
    rows = out.numpy()  # a view: rows are copied in by numpy, read-only sources included
    for index, img in enumerate(images):
        if isinstance(img, np.ndarray):
            if img.shape != shape or img.dtype != np.uint8:
                raise ValueError(f"a ready array must be uint8 of shape {shape}, got {img.dtype} {img.shape}")
            array = img
        else:
            array = model_ready_array(img, size, cfg.channels)
        rows[index] = array.transpose(2, 0, 1)
    return out


def scaled_crop_padding(cfg: ModelConfig) -> int:
    """Crop padding in pixels at the model's resolution (the setting is given for 32 px)."""
    return int(round(cfg.crop_padding * cfg.image_size / 32))


def augment_batch(
    batch: torch.Tensor, cfg: ModelConfig, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Random crop after zero padding, then an optional horizontal flip, per image.

    Works on uint8 or float tensors (N, C, H, W) before normalisation, so padding is black as in
    torchvision's RandomCrop. Randomness is drawn on the CPU from ``generator`` for reproducibility.
    """
    n, _, height, width = batch.shape
    if n == 0:
        return batch
    pad = scaled_crop_padding(cfg)
    out = batch
    if pad > 0:
        padded = torch.nn.functional.pad(batch, (pad, pad, pad, pad))
        offsets = torch.randint(0, 2 * pad + 1, (n, 2), generator=generator).tolist()
        out = torch.stack(
            [padded[i, :, dy : dy + height, dx : dx + width] for i, (dy, dx) in enumerate(offsets)]
        )
    if cfg.hflip:
        flip = torch.rand(n, generator=generator) < 0.5
        flip = flip.to(out.device)
        out = torch.where(flip[:, None, None, None], out.flip(-1), out)
    return out


# Floor of a per-image standard deviation (pixels in [0, 1]): a flat image stays flat instead of
# having its sensor noise blown up to unit variance.
_PER_IMAGE_MIN_STD = 1e-2


def to_unit_float(batch_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float32 in [0, 1]."""
    return batch_uint8.to(torch.float32) / 255.0


def standardize(batch: torch.Tensor, cfg: ModelConfig) -> torch.Tensor:
    """float (N, C, H, W) in [0, 1] -> the network's input, by cfg.input_norm:
    "per_image" subtracts each image's own mean and divides by its own std (all pixels and
    channels together, so colour relations are kept); "dataset" uses cfg.mean / cfg.std."""
    if cfg.input_norm == "per_image":
        mean = batch.mean(dim=(1, 2, 3), keepdim=True)
        std = batch.std(dim=(1, 2, 3), keepdim=True, unbiased=False).clamp(min=_PER_IMAGE_MIN_STD)
        return (batch - mean) / std
    mean = torch.tensor(cfg.mean, dtype=torch.float32, device=batch.device)
    std = torch.tensor(cfg.std, dtype=torch.float32, device=batch.device)
    return (batch - mean[None, :, None, None]) / std[None, :, None, None]


def normalize(batch_uint8: torch.Tensor, cfg: ModelConfig) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float32 scaled to [0, 1] then standardised (see ``standardize``)."""
    return standardize(to_unit_float(batch_uint8), cfg)


def train_batch(
    batch_uint8: torch.Tensor, cfg: ModelConfig, generator: torch.Generator | None = None
) -> torch.Tensor:
    """A training mini-batch as the network's input: augmented by cfg.augment_policy (when
    cfg.augment), then standardised."""
    if not cfg.augment:
        return normalize(batch_uint8, cfg)
    if cfg.augment_policy == "crop_flip":
        return normalize(augment_batch(batch_uint8, cfg, generator), cfg)
    policy = StrongAugment(crop_scale=(cfg.crop_scale_min, 1.0), hflip=cfg.hflip)
    if cfg.keep_colour:
        policy = dataclasses.replace(policy, **KEEP_COLOUR)
    return standardize(policy(to_unit_float(batch_uint8), generator), cfg)


def images_to_tensor(
    images: list[Image.Image],
    cfg: ModelConfig,
    train: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """PIL images -> normalised float32 tensor (N, C, image_size, image_size).

    ``train=True`` applies the augmentation when ``cfg.augment`` is on (see ``train_batch``).
    """
    batch = images_to_uint8(images, cfg)
    if train:
        return train_batch(batch, cfg, generator)
    return normalize(batch, cfg)
