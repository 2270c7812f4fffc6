"""Gradient norms grouped by transformer block.

.. math::

    \\lVert g_l \\rVert = \\sqrt{\\sum_{p \\in \\mathcal{P}_l} \\lVert \\nabla_p L \\rVert_2^2}

over the trainable parameters :math:`\\mathcal{P}_l` of block ``l``, and per example
:math:`\\lVert \\partial L / \\partial h_l \\rVert_F` over the (tokens x hidden) block output.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["gradient_drop", "grouped_grad_norms", "per_example_norm"]


def per_example_norm(t: Tensor) -> Tensor:
    """Frobenius norm of each example of a batch-first tensor, in float32 or wider.

    Example:
        >>> per_example_norm(torch.ones(2, 3, 4))
        tensor([3.4641, 3.4641])
    """
    return t.detach().flatten(1).to(torch.promote_types(t.dtype, torch.float32)).norm(dim=1)


def grouped_grad_norms(groups: Sequence[Sequence[Tensor]], device: torch.device | None = None) -> Tensor:
    """L2 norm of the concatenation of each group's tensors, computed on device.

    One ``_foreach_norm`` call over all tensors and one scatter-add; no host synchronisation (the group index is
    built once per layout and device and cached), so a caller can move all groups' norms to the host in one transfer.

    Args:
        groups: one sequence of gradient tensors per group (block); an empty group gives 0.
        device: where to put the result when every group is empty.

    Returns:
        ``(len(groups),)`` float32 tensor (float64 if any gradient is float64).

    Example:
        >>> grouped_grad_norms([[torch.tensor([3.0]), torch.tensor([4.0])], [], [torch.tensor([1.0, 0.0])]])
        tensor([5., 0., 1.])
    """
    flat = [g for grp in groups for g in grp]
    if not flat:
        return torch.zeros(len(groups), device=device)
    dtype = torch.float64 if any(g.dtype == torch.float64 for g in flat) else torch.float32
    norms = torch.stack([n.to(dtype) for n in torch._foreach_norm([g.detach() for g in flat])])
    out = torch.zeros(len(groups), dtype=dtype, device=norms.device)
    out.index_add_(0, _group_index(tuple(len(grp) for grp in groups), norms.device), norms.square())
    return out.sqrt()


@functools.lru_cache(maxsize=16)
def _group_index(sizes: tuple[int, ...], device: torch.device) -> Tensor:
    """Group id of each flattened tensor, built once per layout and device (no host-to-device copy per call)."""
    repeats = torch.tensor(sizes, device=device)
    return torch.repeat_interleave(torch.arange(len(sizes), device=device), repeats, output_size=sum(sizes))


def gradient_drop(norms: Tensor) -> Tensor:
    """How much the activation gradient shrinks crossing each block backwards: ``log g[l+1] - log g[l]``, in nats.

    The one definition used by the SKI selector and the suppression trigger. Over the last axis, ``(..., L)`` norms
    give ``(..., L - 1)`` drops (block ``l``'s drop for ``l < L - 1``). NaN where either norm is missing (NaN) or
    negative; a zero norm counts as the smallest positive float, so a gradient that vanished entirely drops the most.

    Example:
        >>> gradient_drop(torch.tensor([1.0, 2.0, 2.0, float("nan")]))
        tensor([0.6931, 0.0000,    nan])
        >>> bool(gradient_drop(torch.tensor([0.0, 1.0]))[0] > 80)
        True
    """
    g = torch.where(norms < 0, torch.full_like(norms, float("nan")), norms)
    log_g = g.clamp_min(torch.finfo(g.dtype).tiny).log()
    return log_g[..., 1:] - log_g[..., :-1]
