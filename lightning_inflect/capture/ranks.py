"""Combining one logging step's values across data-parallel ranks, with one collective per monitor.

Each rank measures its own examples; the monitors log what one process would measure over the union of every
rank's examples with the same weights:

* sums and counts (attention entropy, activation-gradient norms) add up: :func:`sum_over_ranks`, one ``all_reduce``;
* squared parameter-gradient norms add up over shards: :func:`split_by_placement` gives each rank's share, exact for
  DDP (every rank holds the whole, synchronised gradient: each counts ``1 / world``) and for FSDP2 (a DTensor
  gradient's local shard counts once);
* pooled representations (CKA) are concatenated: :func:`cat_over_ranks`, one ``all_gather``, rank after rank.

The default process group is the data-parallel group: data parallelism only (DDP, FSDP2 with
``tensor_parallel_size=1``). No Lightning; with no process group (one process) every function is the identity.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import Tensor

from lightning_inflect.functional.norms import grouped_grad_norms

__all__ = ["cat_over_ranks", "grad_norm_shares", "split_by_placement", "sum_over_ranks", "world_size"]


def world_size() -> int:
    """The number of ranks of the default process group, 1 without one.

    Example:
        >>> world_size()
        1
    """
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def sum_over_ranks(values: Tensor) -> Tensor:
    """``values`` summed over the ranks (one ``all_reduce``, a new tensor); ``values`` itself with one rank.

    Example:
        >>> sum_over_ranks(torch.tensor([1.0, 2.0]))
        tensor([1., 2.])
    """
    if world_size() == 1:
        return values
    out = values.detach().clone()
    dist.all_reduce(out)
    return out


def cat_over_ranks(values: Tensor, sizes: Sequence[int], dim: int = 0) -> Tensor:
    """Every rank's ``values`` concatenated along ``dim``, rank 0 first (one ``all_gather``).

    Ranks may hold different sizes along ``dim`` (``sizes[r]`` for rank ``r``, known beforehand, for instance the
    sizes of the probe batches): each is padded to the largest for the collective and cut back after.

    Example:
        >>> cat_over_ranks(torch.ones(2, 3), sizes=[2]).shape
        torch.Size([2, 3])
    """
    if world_size() == 1:
        return values
    dim = dim % values.dim()
    largest = max(sizes)
    pad = list(values.shape)
    pad[dim] = largest - values.shape[dim]
    padded = torch.cat([values, values.new_zeros(pad)], dim) if pad[dim] else values.contiguous()
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    return torch.cat([p.narrow(dim, 0, n) for p, n in zip(parts, sizes)], dim)


def split_by_placement(grads: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
    """Split gradients into ``(sharded, replicated)`` local tensors, for squared norms that add up over ranks.

    A DTensor gradient with a ``Shard`` placement (FSDP2) contributes its local shard; every other gradient is held
    whole by every rank (DDP synchronises it), so its squared norm is to be divided by :func:`world_size` before the
    sum over ranks.

    Example:
        >>> sharded, replicated = split_by_placement([torch.ones(2)])
        >>> len(sharded), len(replicated)
        (0, 1)
    """
    sharded: list[Tensor] = []
    replicated: list[Tensor] = []
    for g in grads:
        local = getattr(g, "to_local", None)
        if local is not None and any(p.is_shard() for p in g.placements):  # type: ignore[attr-defined]
            sharded.append(local())
        elif local is not None:
            replicated.append(local())
        else:
            replicated.append(g)
    return sharded, replicated


def grad_norm_shares(groups: Sequence[Sequence[Tensor]], device: torch.device | None = None) -> Tensor:
    """This rank's share of each group's squared gradient norm: :func:`sum_over_ranks` of it is the squared norm of
    the full, synchronised gradient (shards count once, whole gradients ``1 / world`` each, see
    :func:`split_by_placement`). With one process it is the squared norm itself. No collective, no host sync.

    Example:
        >>> grad_norm_shares([[torch.tensor([3.0]), torch.tensor([4.0])], []])
        tensor([25.,  0.])
    """
    split = [split_by_placement(g) for g in groups]
    squares = grouped_grad_norms([s for s, _ in split], device=device).float().square()
    return squares + grouped_grad_norms([r for _, r in split], device=device).float().square() / world_size()
