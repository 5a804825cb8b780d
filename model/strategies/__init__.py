"""Acquisition strategies: pure numpy functions of ScoreOutputs that rank the whole pool.

A strategy is ONE registry entry (``StrategySpec`` in ``STRATEGIES``, ``registry.py``) holding
everything about it: its per-item values function, its ranking (``order_by_value`` of the values
unless it is batch-aware and brings its own ranking function), whether it needs MC-dropout
samples, whether it uses the labeled set's embeddings, whether its ranking carries cluster ids,
and the training settings its name implies. A new strategy is one function + one ``register(...)``
call in the module of its family; the registry test fails when an entry is incomplete or
inconsistent.

The modules, by family:
- ``registry.py``: ``StrategySpec``, ``STRATEGIES``, ``register``, ``spec``, ``order_by_value``;
- ``uncertainty.py``: random, least_confidence, margin, entropy, bald;
- ``learning_loss.py``: learning_loss, learning_loss_v2;
- ``diversity.py``: the batch-aware coreset, typiclust, badge, hybrid (on ``geometry.py``'s
  chunked distances and k-center greedy);
- ``combined.py``: margin and predicted loss combined, with a per-class cap or k-center diversity;
- ``ranking.py``: the entry points ``rank``, ``informativeness_values``, ``needs_mc_samples``,
  ``ranking_to_scores``;
- ``placement.py``: placing new tasks by their nearest ranked task (``place_by_nearest``).

Every strategy orders ALL N pool items, most informative first. Batch-aware strategies pick
``budget`` items jointly; the rest follow in the order of their remaining score.

Informativeness values are "higher = more informative" everywhere; ``ranking_to_scores`` is the
single conversion to Label Studio scores (lower = more informative).

numpy only, no torch: backend/settings.py imports this package to check STRATEGY.
"""

from __future__ import annotations

from model.strategies import learning_loss  # noqa: F401  (its entries; no public names)
from model.strategies.combined import (
    class_capped_order,
    ll_margin_class_capped,
    ll_margin_diverse,
    margin_class_capped,
    margin_diverse,
    rank_average_values,
)
from model.strategies.diversity import HYBRID_PRESELECT_FACTOR, badge, coreset, hybrid, typiclust
from model.strategies.geometry import (
    CHUNK_ROWS,
    MAX_LABELED_CENTERS,
    k_center_greedy,
    min_squared_distances,
    nearest_center,
)
from model.strategies.placement import (
    NEAREST_BLOCK_ROWS,
    NEIGHBOUR_DIMS,
    nearest_rows,
    neighbour_embedding,
    place_by_nearest,
)
from model.strategies.ranking import (
    DEFAULT_BUDGET,
    informativeness_values,
    needs_mc_samples,
    rank,
    ranking_to_scores,
)

# The family modules register their entries on import, in this order.
from model.strategies.registry import (
    STRATEGIES,
    RankFunction,
    Ranking,
    StrategySpec,
    ValuesFunction,
    order_by_value,
    register,
    spec,
)
from model.strategies.uncertainty import (
    bald_values,
    entropy_values,
    least_confidence_values,
    margin_values,
)

__all__ = [
    "CHUNK_ROWS",
    "DEFAULT_BUDGET",
    "HYBRID_PRESELECT_FACTOR",
    "MAX_LABELED_CENTERS",
    "NEAREST_BLOCK_ROWS",
    "NEIGHBOUR_DIMS",
    "STRATEGIES",
    "RankFunction",
    "Ranking",
    "StrategySpec",
    "ValuesFunction",
    "badge",
    "bald_values",
    "class_capped_order",
    "coreset",
    "entropy_values",
    "hybrid",
    "informativeness_values",
    "k_center_greedy",
    "least_confidence_values",
    "ll_margin_class_capped",
    "ll_margin_diverse",
    "margin_class_capped",
    "margin_diverse",
    "margin_values",
    "min_squared_distances",
    "nearest_center",
    "nearest_rows",
    "neighbour_embedding",
    "order_by_value",
    "place_by_nearest",
    "needs_mc_samples",
    "rank",
    "rank_average_values",
    "ranking_to_scores",
    "register",
    "spec",
    "typiclust",
]
