"""Activation gradients at block outputs, captured on the real training backward."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from lightning_inflect.functional.norms import per_example_norm

__all__ = ["ActivationGradCapture"]


class ActivationGradCapture:
    """Accumulates per-example Frobenius norms of ``dL/dh_l`` for chosen blocks while armed.

    ``arm()`` registers forward hooks on the blocks; each block's first forward with grad enabled in a micro-batch
    (so gradient-checkpointing recomputation is not counted twice) registers a tensor hook on its output. The
    tensor hook adds the per-example norms to an on-device sum: no host synchronisation until :meth:`read`.
    ``disarm()`` removes every hook; it is safe to call twice.

    Example:
        >>> blocks = nn.ModuleList([nn.Linear(3, 3), nn.Linear(3, 3)])
        >>> cap = ActivationGradCapture(blocks, [0, 1]); cap.arm()
        >>> x = torch.ones(2, 3)
        >>> blocks[1](blocks[0](x)).sum().backward(); cap.disarm()
        >>> norms, count = cap.read()
        >>> torch.allclose(norms[1], torch.tensor(3.0).sqrt()), count
        (True, 2)
    """

    def __init__(self, blocks: Sequence[nn.Module], layers: Sequence[int]) -> None:
        self.blocks = blocks
        self.layers = list(layers)
        self._handles: list[RemovableHandle] = []
        self._tensor_handles: list[Any] = []
        self._seen: set[int] = set()
        self._sums: dict[int, Tensor] = {}
        self._counts: dict[int, int] = {}
        self.seconds = 0.0

    @property
    def armed(self) -> bool:
        return bool(self._handles)

    def arm(self) -> None:
        if self.armed:
            return
        for layer in self.layers:
            self._handles.append(self.blocks[layer].register_forward_hook(self._forward_hook(layer)))

    def new_micro_batch(self) -> None:
        """Call before each micro-batch's forward so every block is hooked once per micro-batch."""
        self._seen.clear()

    def disarm(self) -> None:
        for h in self._handles:
            h.remove()
        for h in self._tensor_handles:
            h.remove()
        self._handles.clear()
        self._tensor_handles.clear()
        self._seen.clear()

    def reset(self) -> None:
        self._sums.clear()
        self._counts.clear()
        self.seconds = 0.0

    def read(self) -> tuple[dict[int, Tensor], int]:
        """Mean per-example norm per block (on device) and the number of examples seen."""
        count = max(self._counts.values(), default=0)
        return {layer: s / self._counts[layer] for layer, s in self._sums.items()}, count

    def _forward_hook(self, layer: int):
        def hook(_mod: nn.Module, _inp: Any, out: Any) -> None:
            h = out[0] if isinstance(out, (tuple, list)) else out
            if layer in self._seen or not isinstance(h, Tensor) or not torch.is_grad_enabled() or not h.requires_grad:
                return
            self._seen.add(layer)
            self._tensor_handles.append(h.register_hook(self._grad_hook(layer)))

        return hook

    def _grad_hook(self, layer: int):
        def hook(grad: Tensor) -> None:
            start = time.perf_counter()
            norms = per_example_norm(grad)
            self._sums[layer] = norms.sum() if layer not in self._sums else self._sums[layer] + norms.sum()
            self._counts[layer] = self._counts.get(layer, 0) + grad.shape[0]
            self.seconds += time.perf_counter() - start

        return hook
