r"""Inflection score (SKI, our reconstruction of Wang 2025): low attention entropy plus a drop of the backward signal.

.. math::

    \mathrm{SKI}_l = a \, \mathrm{minmax}(-H)_l + (1 - a) \, \mathrm{minmax}(d)_l, \qquad
    d_l = \log g_{l+1} - \log g_l \;(l < L - 1), \quad d_{L-1} = 0

with :math:`H_l` the attention entropy of block ``l`` and :math:`g_l = \lVert \partial L / \partial h_l \rVert` its
activation-gradient norm, both smoothed over the last logging steps. :math:`d_l > 0` when the gradient shrinks as it
crosses from block ``l + 1`` back into block ``l``. Inflection layers are the local maxima of the score, each with a
band of neighbours, or the top-k blocks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from lightning_inflect.functional.norms import gradient_drop
from lightning_inflect.names import ACT_GRAD_NORM, ATTN_ENTROPY
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
from lightning_inflect.validation import check_int, check_number

__all__ = ["SKI", "local_maxima_band", "minmax", "ski_scores"]


def _check_a(a: object) -> float:
    check_number("a", a, 0.0, 1.0)
    return float(a)  # type: ignore[arg-type]


def minmax(x: Tensor) -> Tensor:
    """Rescale the finite entries of ``x`` to [0, 1]; non-finite entries become NaN.

    A constant vector (up to rounding: a spread of at most 8 machine epsilons of its magnitude) maps to zeros, not NaN.

    Example:
        >>> minmax(torch.tensor([1.0, 3.0, 2.0]))
        tensor([0.0000, 1.0000, 0.5000])
        >>> minmax(torch.tensor([2.0, 2.0, float("nan")]))
        tensor([0., 0., nan])
    """
    x = torch.as_tensor(x)
    if not x.is_floating_point():
        x = x.to(torch.get_default_dtype())
    finite = torch.isfinite(x)
    out = torch.full_like(x, math.nan)
    if not finite.any():
        return out
    v = x[finite]
    lo, hi = v.min(), v.max()
    tol = 8 * torch.finfo(x.dtype).eps * torch.maximum(lo.abs(), hi.abs())
    out[finite] = torch.zeros_like(v) if hi - lo <= tol else (v - lo) / (hi - lo)
    return out


def _grad_drop(act_grad: Tensor) -> Tensor:
    """:func:`~lightning_inflect.functional.gradient_drop` for l < L - 1, and 0 for the last block (NaN when its
    norm is missing or negative)."""
    last = torch.where((act_grad[-1:] >= 0), 0.0, math.nan).to(act_grad.dtype)
    return torch.cat([gradient_drop(act_grad), last])


def ski_scores(entropy: Tensor, act_grad: Tensor, a: float = 0.5) -> Tensor:
    r"""Per-block inflection score :math:`a \, \mathrm{minmax}(-H) + (1 - a) \, \mathrm{minmax}(d)` (module docstring).

    A term with weight 0 is left out, so with ``a = 1`` the gradients are not needed (they may be all NaN), and with
    ``a = 0`` the entropies are not. A block where a needed input is NaN scores NaN.

    Args:
        entropy: ``(L,)`` attention entropy per block.
        act_grad: ``(L,)`` activation-gradient norm per block (non-negative).
        a: weight of the entropy term, in [0, 1].

    Returns:
        ``(L,)`` scores in [0, 1] (NaN where not computable), in the inputs' floating dtype (at least float32).

    Example:
        Block 1 has the lowest entropy, and the gradient shrinks tenfold from block 2 into block 1:

        >>> ski_scores(torch.tensor([2.0, 1.0, 2.0, 2.0]), torch.tensor([1.0, 0.1, 1.0, 1.0]))
        tensor([0.0000, 1.0000, 0.2500, 0.2500])
        >>> ski_scores(torch.tensor([2.0, 1.0, 2.0, 2.0]), torch.tensor([1.0, 0.1, 1.0, 1.0]), a=1.0)
        tensor([0., 1., 0., 0.])
    """
    a = _check_a(a)
    entropy, act_grad = torch.as_tensor(entropy), torch.as_tensor(act_grad)
    if entropy.ndim != 1 or entropy.shape != act_grad.shape or entropy.numel() == 0:
        raise ValueError(
            "Expected `entropy` and `act_grad` to be non-empty 1-D tensors of the same length (one value per block) "
            f"but got shapes {tuple(entropy.shape)} and {tuple(act_grad.shape)}."
        )
    dtype = torch.promote_types(torch.promote_types(entropy.dtype, act_grad.dtype), torch.float32)
    entropy, act_grad = entropy.to(dtype), act_grad.to(dtype)
    score = torch.zeros_like(entropy)
    if a > 0:
        score = score + a * minmax(-entropy)
    if a < 1:
        score = score + (1 - a) * minmax(_grad_drop(act_grad))
    return score


def _local_maxima(scores: Sequence[float] | Tensor) -> list[int]:
    """Blocks whose finite, positive score is >= each finite neighbour's and > at least one (NaN = no neighbour)."""
    s = [float(v) for v in scores]
    peaks = []
    for i, v in enumerate(s):
        if not math.isfinite(v) or v <= 0:
            continue
        nbrs = [s[j] for j in (i - 1, i + 1) if 0 <= j < len(s) and math.isfinite(s[j])]
        if nbrs and all(v >= n for n in nbrs) and any(v > n for n in nbrs):
            peaks.append(i)
    return peaks


def local_maxima_band(scores: Sequence[float] | Tensor, band: int = 1) -> list[int]:
    """Local maxima of ``scores``, each widened by ``band`` blocks on both sides (clipped to the range), sorted.

    A local maximum has a score > 0 that is >= both neighbours' and strictly greater than at least one; an edge block
    compares with its single neighbour, and a NaN neighbour counts as no neighbour. A flat vector has none.

    Args:
        scores: one score per block.
        band: how many neighbours on each side to add to every maximum (0 for the maxima alone).

    Example:
        >>> local_maxima_band([0.0, 0.9, 0.2, 0.1, 0.1, 0.3, 0.8, 0.1], band=1)
        [0, 1, 2, 5, 6, 7]
        >>> local_maxima_band([0.0, 0.9, 0.2, 0.1, 0.1, 0.3, 0.8, 0.1], band=0)
        [1, 6]
        >>> local_maxima_band([0.5, 0.5, 0.5])
        []
    """
    check_int("band", band, low=0)
    n = len(scores)
    return sorted({j for p in _local_maxima(scores) for j in range(max(0, p - band), min(n, p + band + 1))})


class SKI(Selector):
    """Inflection layers by the SKI score: low attention entropy plus a drop of the activation gradient (see module).

    Each metric is averaged over its last ``window`` logs (ignoring NaN) before scoring. Without ``top_k`` the
    selection is the local maxima of the score with ``+-band`` neighbours; with ``top_k``, the ``top_k`` highest
    scores (ties to the lower block). A flat score (every block alike) selects nothing, and says so.

    Args:
        a: weight of the entropy term in [0, 1]; 1 uses entropy only, 0 gradients only. A metric with weight 0 is not
            required.
        window: number of recent logging steps to average.
        band: neighbours added on each side of every local maximum.
        top_k: if given, take this many best blocks instead of the local maxima.

    Example:
        >>> h = {"attn_entropy": {"steps": [10], "values": [[2.0, 1.0, 2.0, 2.0]]},
        ...      "act_grad_norm": {"steps": [10], "values": [[1.0, 0.1, 1.0, 1.0]]}}
        >>> sel = SKI(band=0).select(h, num_layers=4)
        >>> sel.layers
        (1,)
        >>> sel.reason
        'SKI a=0.5 over logs at step 10: local maxima at blocks 1 (scores 1), band +-0 -> [1]'
    """

    requires: tuple[str, ...] = (ATTN_ENTROPY, ACT_GRAD_NORM)

    def __init__(self, a: float = 0.5, window: int = 3, band: int = 1, top_k: int | None = None) -> None:
        self.a = _check_a(a)
        check_int("window", window, low=1)
        check_int("band", band, low=0)
        if top_k is not None and (not _is_int(top_k) or top_k < 1):
            raise ValueError(
                f"Expected argument `top_k` to be None (local maxima) or a positive int but got {top_k!r}."
            )
        self.window, self.band, self.top_k = window, band, top_k
        self.requires = tuple(m for m, w in ((ATTN_ENTROPY, self.a), (ACT_GRAD_NORM, 1 - self.a)) if w > 0)

    def _params(self) -> dict[str, object]:
        return {"a": self.a, "window": self.window, "band": self.band, "top_k": self.top_k}

    def check_fits(self, num_layers: int) -> None:
        if self.top_k is not None:
            _check_k_fits(self, self.top_k, num_layers, name="top_k")

    def select(self, history: History, num_layers: int) -> Selection:
        """Score every block and pick the inflection layers; see the class docstring."""
        check_int("num_layers", num_layers, low=1)
        if self.top_k is not None:
            _check_k_fits(self, self.top_k, num_layers, name="top_k")
        inputs: dict[str, Tensor] = {}
        windows: dict[str, tuple[list[int] | None, int]] = {}
        for metric in (ATTN_ENTROPY, ACT_GRAD_NORM):
            if metric in self.requires:
                values, steps, n = _gather(history, metric, num_layers, self.window, who=repr(self))
                inputs[metric], windows[metric] = values, (steps, n)
            else:
                inputs[metric] = torch.full((num_layers,), math.nan, dtype=torch.float64)
        scores = ski_scores(inputs[ATTN_ENTROPY], inputs[ACT_GRAD_NORM], self.a)
        out = tuple(scores.tolist())
        head = f"SKI a={self.a:g} over {_describe_windows(windows)}: "
        unscored = [i for i, s in enumerate(out) if math.isnan(s)]
        note = f" (blocks {unscored} not scored: a metric is NaN there)" if unscored else ""
        if len(unscored) == num_layers:
            return Selection((), out, head + f"no block has every metric it needs{note} -> selecting none")
        if not (minmax(scores).nan_to_num(0.0) > 0).any():
            return Selection(
                (),
                out,
                head + f"flat scores (every block scores {_fmt(scores.nanmean().item())}){note}: "
                "no block stands out -> selecting none",
            )
        if self.top_k is not None:
            ranked = _top_k(out, self.top_k)
            best = ", ".join(f"{i} ({_fmt(out[i])})" for i in ranked)
            layers = sorted(ranked)
            return Selection(tuple(layers), out, head + f"top-{self.top_k} by score: blocks {best}{note} -> {layers}")
        peaks = _local_maxima(out)
        layers = local_maxima_band(out, self.band)
        if not peaks:
            return Selection((), out, head + f"no local maximum among the scored blocks{note} -> selecting none")
        return Selection(
            tuple(layers),
            out,
            head + f"local maxima at blocks {', '.join(map(str, peaks))} "
            f"(scores {', '.join(_fmt(out[i]) for i in peaks)}), band +-{self.band}{note} -> {layers}",
        )
