"""Activation gradients at block outputs, captured on the real training backward."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from lightning_inflect.capture.eager import EagerStance
from lightning_inflect.functional.norms import per_example_norm

__all__ = ["ActivationGradCapture", "mean_norms"]


class ActivationGradCapture:
    """Accumulates per-example Frobenius norms of ``dL/dh_l`` for chosen blocks while armed.

    ``arm()`` registers forward hooks on the blocks; each block's first forward with grad enabled in a micro-batch
    (so gradient-checkpointing recomputation is not counted twice) registers a tensor hook on its output. The
    tensor hook adds the per-example norms to one on-device vector (one row per block) and counts the examples on
    the host (a shape, not a value): no host synchronisation until the caller moves :meth:`read`'s sums.
    ``disarm()`` removes every hook; it is safe to call twice.

    While armed, ``torch.compile`` is held off (:class:`~lightning_inflect.capture.eager.EagerStance`): the armed
    step runs eagerly, so dynamo never traces these hooks into the compiled code of the other steps.

    Example:
        >>> blocks = nn.ModuleList([nn.Linear(3, 3), nn.Linear(3, 3)])
        >>> cap = ActivationGradCapture(blocks, [0, 1]); cap.arm()
        >>> x = torch.ones(2, 3)
        >>> blocks[1](blocks[0](x)).sum().backward(); cap.disarm()
        >>> sums, counts = cap.read()
        >>> means = mean_norms(sums.tolist(), counts)
        >>> round(means[1], 5) == round(3 ** 0.5, 5), counts
        (True, [2, 2])
    """

    def __init__(self, blocks: Sequence[nn.Module] | nn.ModuleList, layers: Sequence[int]) -> None:
        self.blocks = blocks
        self.layers = list(layers)
        self._row = {layer: i for i, layer in enumerate(self.layers)}
        self._handles: list[RemovableHandle] = []
        self._tensor_handles: list[Any] = []
        self._seen: set[int] = set()
        self._sums: Tensor | None = None
        self._counts = [0] * len(self.layers)
        self.seconds = 0.0
        self._stance = EagerStance()

    @property
    def armed(self) -> bool:
        return bool(self._handles)

    def arm(self) -> None:
        if self.armed:
            return
        self._stance.hold()
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
        self._stance.release()

    def reset(self) -> None:
        self._sums = None
        self._counts = [0] * len(self.layers)
        self.seconds = 0.0

    def read(self) -> tuple[Tensor | None, list[int]]:
        """``(sums, counts)``: per-block sums of per-example norms, ``(len(layers),)`` on the device (None when no
        gradient arrived), and the number of examples each sum holds (0 for blocks no gradient reached)."""
        return self._sums, list(self._counts)

    def _forward_hook(self, layer: int):
        def hook(_mod: nn.Module, _inp: Any, out: Any) -> None:
            h = out[0] if isinstance(out, (tuple, list)) else out
            if layer in self._seen or not isinstance(h, Tensor) or not torch.is_grad_enabled() or not h.requires_grad:
                return
            self._seen.add(layer)
            self._tensor_handles.append(h.register_hook(self._grad_hook(layer)))

        return hook

    def _grad_hook(self, layer: int):
        row = self._row[layer]

        def hook(grad: Tensor) -> None:
            start = time.perf_counter()
            total = per_example_norm(grad).sum()
            if self._sums is None:
                self._sums = torch.zeros(len(self.layers), dtype=total.dtype, device=total.device)
            self._sums[row] += total.to(self._sums.dtype)
            self._counts[row] += grad.shape[0]
            self.seconds += time.perf_counter() - start

        return hook


def mean_norms(sums: Sequence[float], counts: Sequence[int]) -> list[float]:
    """Host-side means of :meth:`ActivationGradCapture.read`'s sums; NaN where no gradient arrived.

    Example:
        >>> mean_norms([6.0, 0.0], [3, 0])
        [2.0, nan]
    """
    return [s / c if c else math.nan for s, c in zip(sums, counts)]
