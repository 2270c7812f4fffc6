"""Layer selectors besides SKI: CKA importance, gradient probe, shallow top-k, uniform, random-k and manual.

Each is a baseline the SKI selection is compared with on the same harness (design notes, section 5).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from lightning_inflect.names import CKA_IMPORTANCE, PARAM_GRAD_NORM
from lightning_inflect.selection.base import (
    History,
    Selection,
    Selector,
    _check_k_fits,
    _describe_windows,
    _fmt,
    _gather,
    _is_int,
    _top_k,
)
from lightning_inflect.validation import check_int

__all__ = ["CKAImportance", "GradientProbe", "Manual", "RandomK", "TopK", "Uniform"]


class _TopKByMetric(Selector):
    """The ``k`` blocks with the highest smoothed ``metric`` (ties to the lower block; unmeasured blocks never)."""

    metric: str

    def __init__(self, k: int = 4, window: int = 1) -> None:
        check_int("k", k, low=1)
        check_int("window", window, low=1)
        self.k, self.window = k, window
        self.requires = (self.metric,)

    def _params(self) -> dict[str, object]:
        return {"k": self.k, "window": self.window}

    def check_fits(self, num_layers: int) -> None:
        _check_k_fits(self, self.k, num_layers)

    def select(self, history: History, num_layers: int) -> Selection:
        """Rank the blocks by the smoothed metric and keep the best ``k``."""
        check_int("num_layers", num_layers, low=1)
        _check_k_fits(self, self.k, num_layers)
        values, steps, n = _gather(history, self.metric, num_layers, self.window, who=repr(self))
        scores = tuple(values.tolist())
        ranked = _top_k(scores, self.k)
        layers = sorted(ranked)
        best = ", ".join(f"{i} ({_fmt(scores[i])})" for i in ranked)
        measured = sum(s == s for s in scores)
        short = f" (only {measured} of {num_layers} blocks measured)" if measured < self.k else ""
        reason = (
            f"{type(self).__name__} k={self.k} over {_describe_windows({self.metric: (steps, n)})}: "
            f"top-{self.k} by {self.metric}: blocks {best}{short} -> {layers}"
        )
        return Selection(tuple(layers), scores, reason)


class CKAImportance(_TopKByMetric):
    r"""The ``k`` blocks that change their input the most: top-k by ``cka_importance`` (Ogawa et al. 2026).

    ``cka_importance`` of block ``l`` is :math:`1 - \mathrm{CKA}(R_{l-1}, R_l)` between the representations entering
    and leaving the block, computed by ``InjectionCallback``'s own probe; it is averaged over the last ``window`` logs.

    Args:
        k: number of blocks.
        window: number of recent logs to average.

    Example:
        >>> h = {"cka_importance": {"steps": [5], "values": [[0.1, 0.4, 0.2, 0.4]]}}
        >>> CKAImportance(k=2).select(h, num_layers=4).layers
        (1, 3)
    """

    metric = CKA_IMPORTANCE
    requires = (CKA_IMPORTANCE,)


class GradientProbe(_TopKByMetric):
    """The ``k`` blocks with the largest parameter-gradient norm (``param_grad_norm``, from ``GradientNormMonitor``).

    Args:
        k: number of blocks.
        window: number of recent logs to average.

    Example:
        >>> h = {"param_grad_norm": {"steps": [5, 6], "values": [[1.0, 0.0, 3.0], [1.0, 4.0, 3.0]]}}
        >>> GradientProbe(k=1, window=2).select(h, num_layers=3).reason
        'GradientProbe k=1 over logs at steps 5-6: top-1 by param_grad_norm: blocks 2 (3) -> [2]'
    """

    metric = PARAM_GRAD_NORM
    requires = (PARAM_GRAD_NORM,)


class TopK(Selector):
    """The last ``k`` blocks (shallow unfreezing: the blocks nearest the head).

    Example:
        >>> TopK(k=2).select({}, num_layers=5)
        Selection(layers=(3, 4), scores=None, reason='TopK k=2: the last 2 of 5 blocks -> [3, 4]')
    """

    def __init__(self, k: int = 4) -> None:
        check_int("k", k, low=1)
        self.k = k

    def _params(self) -> dict[str, object]:
        return {"k": self.k}

    def check_fits(self, num_layers: int) -> None:
        _check_k_fits(self, self.k, num_layers)

    def select(self, history: History, num_layers: int) -> Selection:
        """The last ``k`` of ``num_layers`` blocks; the history is not read."""
        check_int("num_layers", num_layers, low=1)
        _check_k_fits(self, self.k, num_layers)
        layers = list(range(num_layers - self.k, num_layers))
        return Selection(tuple(layers), None, f"TopK k={self.k}: the last {self.k} of {num_layers} blocks -> {layers}")


class Uniform(Selector):
    """Every block.

    Example:
        >>> Uniform().select({}, num_layers=3).layers
        (0, 1, 2)
    """

    def select(self, history: History, num_layers: int) -> Selection:
        """All ``num_layers`` blocks; the history is not read."""
        check_int("num_layers", num_layers, low=1)
        layers = list(range(num_layers))
        return Selection(tuple(layers), None, f"Uniform: all {num_layers} blocks -> {layers}")


class RandomK(Selector):
    """``k`` blocks sampled without replacement, as LISA samples layers; deterministic in ``seed``.

    Uses its own ``random.Random(seed)`` on every call: the same seed and ``num_layers`` give the same blocks, and
    neither Python's nor torch's global random state is read or advanced.

    Args:
        k: number of blocks.
        seed: seed of the private generator.

    Example:
        >>> RandomK(k=3, seed=0).select({}, num_layers=3).layers
        (0, 1, 2)
    """

    def __init__(self, k: int = 4, seed: int = 0) -> None:
        check_int("k", k, low=1)
        if not _is_int(seed):
            raise ValueError(f"Expected argument `seed` to be an int but got {seed!r}.")
        self.k, self.seed = k, seed

    def _params(self) -> dict[str, object]:
        return {"k": self.k, "seed": self.seed}

    def check_fits(self, num_layers: int) -> None:
        _check_k_fits(self, self.k, num_layers)

    def select(self, history: History, num_layers: int) -> Selection:
        """Sample ``k`` of ``num_layers`` blocks; the history is not read."""
        check_int("num_layers", num_layers, low=1)
        _check_k_fits(self, self.k, num_layers)
        layers = sorted(random.Random(self.seed).sample(range(num_layers), self.k))
        return Selection(
            tuple(layers),
            None,
            f"RandomK k={self.k} seed={self.seed}: sampled without replacement from {num_layers} blocks -> {layers}",
        )


class Manual(Selector):
    """Exactly the given blocks; negative indices count from the end, as in Python.

    Args:
        layers: non-empty sequence of distinct block indices.

    Example:
        >>> Manual([0, -1]).select({}, num_layers=6)
        Selection(layers=(0, 5), scores=None, reason='Manual layers=[0, -1] of 6 blocks -> [0, 5]')
    """

    def __init__(self, layers: Sequence[int]) -> None:
        ok = isinstance(layers, Sequence) and not isinstance(layers, str) and len(layers) > 0
        if not ok or not all(_is_int(i) for i in layers) or len(set(layers)) != len(layers):
            raise ValueError(
                "Expected argument `layers` to be a non-empty sequence of distinct int block indices "
                f"but got {layers!r}."
            )
        self.layers = tuple(layers)

    def _params(self) -> dict[str, object]:
        return {"layers": self.layers}

    def check_fits(self, num_layers: int) -> None:
        self.select({}, num_layers)

    def select(self, history: History, num_layers: int) -> Selection:
        """The given blocks, checked against ``num_layers``; the history is not read."""
        check_int("num_layers", num_layers, low=1)
        bad = [i for i in self.layers if not -num_layers <= i < num_layers]
        if bad:
            raise ValueError(
                f"`{self!r}` names blocks {bad}, outside [-{num_layers}, {num_layers}) for a model with "
                f"`num_layers`={num_layers}."
            )
        resolved = [i % num_layers for i in self.layers]
        dup = sorted({i for i in resolved if resolved.count(i) > 1})
        if dup:
            raise ValueError(
                f"`{self!r}` names blocks {dup} more than once for `num_layers`={num_layers} "
                "(a negative index and a positive one resolve to the same block)."
            )
        layers = sorted(resolved)
        return Selection(tuple(layers), None, f"Manual layers={list(self.layers)} of {num_layers} blocks -> {layers}")
