"""Uncertainty strategies on the classifier's probabilities: least confidence, margin, entropy,
BALD over MC-dropout samples, and the random baseline."""

from __future__ import annotations

import numpy as np

from model.outputs import ScoreOutputs
from model.strategies.registry import Ranking, register

_EPS = 1e-12


def least_confidence_values(probs: np.ndarray) -> np.ndarray:
    return 1.0 - probs.max(axis=1)


def margin_values(probs: np.ndarray) -> np.ndarray:
    """Negative gap between the two most probable classes (a small gap = informative)."""
    if probs.shape[1] < 2:
        return np.zeros(len(probs))
    top_two = np.partition(probs, -2, axis=1)[:, -2:]
    return -(top_two[:, 1] - top_two[:, 0])


def entropy_values(probs: np.ndarray) -> np.ndarray:
    p = np.clip(probs.astype(np.float64), _EPS, 1.0)
    return -(probs * np.log(p)).sum(axis=-1)


def bald_values(mc_probs: np.ndarray) -> np.ndarray:
    """Mutual information H[mean_t p_t] - mean_t H[p_t] over T MC-dropout samples (T, N, C)."""
    return entropy_values(mc_probs.mean(axis=0)) - entropy_values(mc_probs).mean(axis=0)


# ----------------------------------------------------------------------------- values functions
# Signature (outputs, rng, labeled_embedding) -> (N,) values, higher = more informative.


def _random_values(
    outputs: ScoreOutputs, rng: np.random.Generator, labeled_embedding: np.ndarray | None
) -> np.ndarray:
    return rng.random(len(outputs))


def _least_confidence(
    outputs: ScoreOutputs, rng: np.random.Generator, labeled_embedding: np.ndarray | None
) -> np.ndarray:
    return least_confidence_values(outputs.probs)


def _margin(
    outputs: ScoreOutputs, rng: np.random.Generator, labeled_embedding: np.ndarray | None
) -> np.ndarray:
    return margin_values(outputs.probs)


def _entropy(
    outputs: ScoreOutputs, rng: np.random.Generator, labeled_embedding: np.ndarray | None
) -> np.ndarray:
    return entropy_values(outputs.probs)


def _bald(
    outputs: ScoreOutputs, rng: np.random.Generator, labeled_embedding: np.ndarray | None
) -> np.ndarray:
    if outputs.mc_probs is None:
        raise ValueError("strategy 'bald' needs MC-dropout samples: call score(..., mc_samples=T > 0)")
    return bald_values(outputs.mc_probs)


def _random_ranking(
    outputs: ScoreOutputs, rng: np.random.Generator, budget: int, labeled_embedding: np.ndarray | None
) -> Ranking:
    """A seeded random permutation (kept as the original draw, so seeded runs stay comparable)."""
    return Ranking(rng.permutation(len(outputs)).astype(np.int64))


# ----------------------------------------------------------------------------- the entries


register("random", "seeded random permutation: the baseline to beat", _random_values, _random_ranking)
register("least_confidence", "1 - max p", _least_confidence)
register("margin", "smallest gap between the two most probable classes first", _margin)
register("entropy", "highest softmax entropy first", _entropy)
register(
    "bald",
    "mutual information over MC-dropout samples (needs score(..., mc_samples=T))",
    _bald,
    needs_mc_samples=True,
)
