"""The selector interface, its result, and the history helpers every selector shares.

A history maps metric names to what the monitors keep in ``.history``: a
:class:`~lightning_inflect.history.MetricHistory` per metric (spread over all ``num_layers`` blocks, NaN where a
block is not monitored). Written by hand, a plain mapping works too::

    {"attn_entropy": {"steps": [100, 200], "values": [[2.1, 1.9, nan, 2.0], [2.0, 1.8, nan, 2.1]]}, ...}

one row per logging step, one column per block (``num_layers`` columns), NaN where a block was not measured.
Pure code: torch and the standard library only.
"""

from __future__ import annotations

import itertools
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from lightning_inflect.history import MetricHistory
from lightning_inflect.names import (
    ACT_GRAD_NORM,
    ATTN_ENTROPY,
    ATTN_ENTROPY_NORMALIZED,
    CKA_DRIFT,
    CKA_IMPORTANCE,
    PARAM_GRAD_NORM,
)
from lightning_inflect.validation import check_int

__all__ = [
    "METRIC_SOURCES",
    "History",
    "MetricHistory",
    "PlainHistory",
    "Selection",
    "Selector",
    "history_tensor",
    "select_or_fall_back",
]

PlainHistory = Mapping[str, Sequence]
"""A hand-written history: ``{"steps": [int, ...], "values": [[float per block], ...]}``; ``steps`` may be left
out. Selectors take it as well as a :class:`~lightning_inflect.history.MetricHistory`."""

History = Mapping[str, MetricHistory | PlainHistory]
"""Metric name -> its :class:`~lightning_inflect.history.MetricHistory` (what the monitors keep) or a
:data:`PlainHistory`."""

METRIC_SOURCES: dict[str, str] = {
    ATTN_ENTROPY: "logged by `AttentionEntropyMonitor`: add one to the Trainer's callbacks",
    ATTN_ENTROPY_NORMALIZED: (
        "logged by `AttentionEntropyMonitor(normalized=True)`: add one to the Trainer's callbacks"
    ),
    ACT_GRAD_NORM: (
        "logged by `GradientNormMonitor` with 'activation' in its `norms` (the default): add one to the Trainer's "
        "callbacks"
    ),
    PARAM_GRAD_NORM: (
        "logged by `GradientNormMonitor` with 'parameter' in its `norms` (the default): add one to the Trainer's "
        "callbacks"
    ),
    CKA_IMPORTANCE: "computed by `InjectionCallback`'s own probe (1 - CKA between consecutive block outputs)",
    CKA_DRIFT: "logged by `CKADriftMonitor`: add one to the Trainer's callbacks",
}
"""Where each metric comes from, quoted in the errors about a missing or empty metric."""


@dataclass(frozen=True)
class Selection:
    """The blocks a selector picked, with its per-block scores and the reason, in words.

    Args:
        layers: sorted, distinct block indices (0-based); may be empty, the caller decides what that means.
        scores: one score per block (NaN where a block could not be scored), or None for rules without a score.
        reason: the rule, its parameters, the steps it looked at, and why these blocks.

    Example:
        >>> Selection([3, 4], None, "manual")
        Selection(layers=(3, 4), scores=None, reason='manual')
    """

    layers: tuple[int, ...]
    scores: tuple[float, ...] | None
    reason: str

    def __post_init__(self) -> None:
        if any(isinstance(i, bool) or not isinstance(i, int) for i in self.layers):
            raise ValueError(f"Expected `layers` to be block indices (ints) but got {self.layers!r}.")
        layers = tuple(int(i) for i in self.layers)
        if any(i < 0 for i in layers) or any(b <= a for a, b in itertools.pairwise(layers)):
            raise ValueError(f"Expected `layers` to be sorted, distinct, non-negative block indices but got {layers}.")
        object.__setattr__(self, "layers", layers)
        if self.scores is not None:
            object.__setattr__(self, "scores", tuple(float(s) for s in self.scores))


class Selector(ABC):
    """Picks the blocks to adapt from the per-block diagnostics seen so far.

    Subclasses set :attr:`requires` (the metrics the caller must collect), validate their arguments in
    ``__init__``, list them in :meth:`_params` (used by ``repr``, ``==`` and ``hash``) and implement :meth:`select`.
    """

    requires: tuple[str, ...] = ()
    """The metrics :meth:`select` reads from the history."""

    @abstractmethod
    def select(self, history: History, num_layers: int) -> Selection:
        """Pick blocks of a model with ``num_layers`` blocks from ``history``."""

    def check_fits(self, num_layers: int) -> None:
        """Raise ``ValueError`` now if this selector cannot work on a model with ``num_layers`` blocks (a ``k``
        larger than the model, blocks outside it); callers check at setup, before training starts. The default
        accepts any model."""
        return None

    def _params(self) -> dict[str, Any]:
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._params().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self._params() == other._params()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__, tuple(self._params().items())))


def select_or_fall_back(
    selector: Selector,
    history: History,
    num_layers: int,
    on_empty: str = "raise",
    fallback: Selector | None = None,
    step: int | None = None,
) -> Selection:
    """``selector``'s choice; when it picks no block, ``on_empty`` decides: ``"raise"``, ``"skip"`` (the empty
    selection is returned, the caller goes on without it) or ``"fallback"`` (``fallback``'s choice, both reasons).

    Example:
        >>> class Nothing(Selector):
        ...     def select(self, history, num_layers):
        ...         return Selection((), None, "nothing stands out")
        >>> from lightning_inflect.selection import TopK
        >>> select_or_fall_back(Nothing(), {}, 4, "fallback", TopK(1)).reason
        'nothing stands out; fallback TopK(k=1): TopK k=1: the last 1 of 4 blocks -> [3]'
    """
    selection = selector.select(history, num_layers)
    if selection.layers or on_empty == "skip":
        return selection
    if on_empty == "raise" or fallback is None:
        at = f" at step {step}" if step is not None else ""
        raise RuntimeError(
            f"{selector!r} selected no block{at}: {selection.reason}. Set `on_empty='skip'` to train on without "
            "injection, or `on_empty='fallback'` with a `fallback_selector`."
        )
    chosen = fallback.select(history, num_layers)
    return Selection(chosen.layers, chosen.scores, f"{selection.reason}; fallback {fallback!r}: {chosen.reason}")


# ---------------------------------------------------------------------------------------------------------------------
# argument checks (house style: name the argument, the allowed values, the value received)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_k_fits(selector: Selector, k: int, num_layers: int, name: str = "k") -> None:
    if k > num_layers:
        raise ValueError(
            f"`{selector!r}` asks for {name}={k} blocks but the model has only {num_layers} "
            f"(`num_layers`={num_layers}); use {name} <= {num_layers}, or `Uniform()` for all blocks."
        )


# ---------------------------------------------------------------------------------------------------------------------
# history helpers


def _source(metric: str) -> str:
    return METRIC_SOURCES.get(metric, "not logged by any lightning-inflect monitor: the caller must record it")


def _gather(
    history: History, metric: str, num_layers: int, window: int = 1, who: str | None = None
) -> tuple[Tensor, list[int] | None, int]:
    """Smoothed per-block values, the steps of the rows used (None when the history has no steps), and their count."""
    check_int("num_layers", num_layers, low=1)
    check_int("window", window, low=1)
    prefix = f"{who} needs metric `{metric}`, " if who else f"Metric `{metric}` is "
    if metric not in history:
        raise ValueError(
            f"{prefix}{'which is ' if who else ''}missing from the history (it has {sorted(history)}); "
            f"`{metric}` is {_source(metric)}."
        )
    hist = history[metric]
    if isinstance(hist, MetricHistory):
        spread = hist if hist.blocks == tuple(range(num_layers)) else hist.over(num_layers)
        hist = {"steps": spread.steps, "values": spread.rows}
    if not isinstance(hist, Mapping) or "values" not in hist:
        raise ValueError(
            f"Expected the history of `{metric}` to be a mapping with 'steps' and 'values' but got "
            f"{type(hist).__name__}{' without values' if isinstance(hist, Mapping) else ''}."
        )
    values = hist["values"]
    steps = hist.get("steps")
    if steps is not None and len(steps) != len(values):
        raise ValueError(f"The history of `{metric}` has {len(steps)} steps but {len(values)} rows of values.")
    rows = [list(r) for r in values[-window:]]
    used = [int(s) for s in steps[-window:]] if steps is not None else None
    for i, row in enumerate(rows):
        if len(row) != num_layers:
            at = f"step {used[i]}" if used is not None else f"row {len(values) - len(rows) + i}"
            raise ValueError(
                f"The history of `{metric}` has {len(row)} values at {at} but `num_layers` is {num_layers}: record "
                "one value per block, NaN where a block was not measured."
            )
    t = torch.tensor(rows, dtype=torch.float64).reshape(len(rows), num_layers)
    t = torch.where(torch.isfinite(t), t, torch.full_like(t, math.nan))
    if not rows or t.isnan().all():
        last = "its last log" if len(rows) == 1 else f"its last {len(rows)} logs"
        where = f"in {last} ({_describe_steps(used, len(rows))})" if rows else "(no logs yet)"
        raise ValueError(
            f"{who + ': metric' if who else 'Metric'} `{metric}` has no finite values {where}. It is "
            f"{_source(metric)}; it must log a finite value for some block before the selection."
        )
    return t.nanmean(dim=0), used, len(rows)


def history_tensor(history: History, metric: str, num_layers: int, window: int = 1) -> Tensor:
    """Per-block mean of the last ``window`` logged rows of ``metric``, ignoring NaN (and other non-finite values).

    Args:
        history: metric name -> ``{"steps": [...], "values": [[per block], ...]}``.
        metric: which metric to read.
        num_layers: number of blocks; every row must have this many values.
        window: how many of the most recent rows to average.

    Returns:
        ``(num_layers,)`` float64 tensor; NaN for a block with no finite value in the window.

    Raises:
        ValueError: if ``metric`` is missing, has no finite value in the window, or its rows have the wrong length.

    Example:
        >>> nan = float("nan")
        >>> h = {"act_grad_norm": {"steps": [1, 2, 3], "values": [[9.0, 9.0, 9.0], [1.0, nan, nan], [3.0, 2.0, nan]]}}
        >>> history_tensor(h, "act_grad_norm", num_layers=3, window=2)
        tensor([2., 2., nan], dtype=torch.float64)
    """
    return _gather(history, metric, num_layers, window)[0]


def _describe_steps(steps: list[int] | None, n: int) -> str:
    if steps is None:
        return "the last log" if n == 1 else f"the last {n} logs"
    if len(steps) == 1:
        return f"step {steps[0]}"
    return f"steps {steps[0]}-{steps[-1]}"


def _describe_windows(windows: Mapping[str, tuple[list[int] | None, int]]) -> str:
    """'logs at steps 100-300', or one phrase per metric when the metrics were logged at different steps."""
    described = {m: _describe_steps(steps, n) for m, (steps, n) in windows.items()}
    if len(set(described.values())) == 1:
        text = next(iter(described.values()))
        return f"logs at {text}" if text.startswith("step") else text
    return " and ".join(f"{m} at {d}" for m, d in described.items())


def _fmt(x: float) -> str:
    return "nan" if math.isnan(x) else f"{x:.3g}"


def _top_k(scores: Sequence[float] | Tensor, k: int) -> list[int]:
    """The ``k`` highest finite scores, highest first, ties broken by the lower index.

    Example:
        >>> _top_k([0.5, 0.9, 0.5, float("nan"), 0.1], 3)
        [1, 0, 2]
    """
    vals = [float(v) for v in scores]
    finite = [i for i, v in enumerate(vals) if math.isfinite(v)]
    return sorted(finite, key=lambda i: (-vals[i], i))[:k]
