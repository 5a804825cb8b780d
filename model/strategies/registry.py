"""The strategy registry: one ``StrategySpec`` per name in ``STRATEGIES``, added by ``register``.

A strategy is ONE registry entry holding everything about it: its per-item values function, its
ranking (``order_by_value`` of the values unless it is batch-aware and brings its own ranking
function), whether it needs MC-dropout samples, whether it uses the labeled set's embeddings,
whether its ranking carries cluster ids, and the training settings its name implies. The family
modules (uncertainty, learning_loss, diversity, combined) register their entries on import.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from model.outputs import ScoreOutputs


@dataclass
class Ranking:
    order: np.ndarray  # (N,) int64, a permutation of range(N), most informative first
    cluster: np.ndarray | None = None  # (N,) int64 index of the nearest picked item, or None


# (outputs, rng, labeled_embedding) -> (N,) per-item values, higher = more informative
ValuesFunction = Callable[[ScoreOutputs, np.random.Generator, "np.ndarray | None"], np.ndarray]
# (outputs, rng, budget, labeled_embedding) -> Ranking of the whole pool
RankFunction = Callable[[ScoreOutputs, np.random.Generator, int, "np.ndarray | None"], Ranking]


@dataclass(frozen=True)
class StrategySpec:
    """Everything the code base needs to know about one strategy, in one place."""

    name: str
    summary: str  # one line for docs and error messages
    # Per-item informativeness (higher = more informative): the strategy's ranking for value-based
    # strategies; for batch-aware ones the value behind the choice (preselection or rest order).
    values: ValuesFunction
    # Own ranking function; None = order_by_value(values). Required when batch_aware.
    ranking: RankFunction | None = None
    batch_aware: bool = False  # picks ``budget`` items jointly (uses rank()'s budget)
    needs_mc_samples: bool = False  # needs ScoreOutputs.mc_probs: score(..., mc_samples > 0)
    uses_labeled_embedding: bool = False  # rank() uses labeled_embedding (pass it)
    clusters: bool = False  # its Ranking carries cluster ids (pushed with PUSH_CLUSTERS)
    # Training settings the name stands for (TrainConfig field -> value), e.g. learning_loss_v2 is
    # learning_loss's ranking of a module trained with lpm_loss="v2".
    train_overrides: Mapping[str, Any] = field(default_factory=dict)


STRATEGIES: dict[str, StrategySpec] = {}


def register(
    name: str,
    summary: str,
    values: ValuesFunction,
    ranking: RankFunction | None = None,
    *,
    batch_aware: bool = False,
    needs_mc_samples: bool = False,
    uses_labeled_embedding: bool = False,
    clusters: bool = False,
    train_overrides: Mapping[str, Any] | None = None,
) -> StrategySpec:
    """Add one strategy to the registry; refuses a duplicate name or an entry that cannot work."""
    if name in STRATEGIES:
        raise ValueError(f"strategy {name!r} is registered twice")
    if batch_aware and ranking is None:
        raise ValueError(f"batch-aware strategy {name!r} needs its own ranking function")
    entry = StrategySpec(
        name,
        summary,
        values,
        ranking,
        batch_aware,
        needs_mc_samples,
        uses_labeled_embedding,
        clusters,
        MappingProxyType(dict(train_overrides or {})),
    )
    STRATEGIES[name] = entry
    return entry


def spec(name: str) -> StrategySpec:
    """The registry entry of ``name``; ValueError naming the known strategies otherwise."""
    try:
        return STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}; known: {', '.join(sorted(STRATEGIES))}") from None


# ----------------------------------------------------------------------------- value order


def order_by_value(values: np.ndarray) -> np.ndarray:
    """Indices by descending value; ties keep pool order (stable); NaN last."""
    values = np.asarray(values, dtype=np.float64)
    keys = np.where(np.isnan(values), -np.inf, values)
    return np.argsort(-keys, kind="stable").astype(np.int64)
