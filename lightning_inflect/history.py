"""MetricHistory: one metric's per-block values over logging steps, the one history type of the package.

The monitors keep one per metric in ``.history``; the selectors and the trigger read them. Pure Python and torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

__all__ = ["MetricHistory"]


@dataclass
class MetricHistory:
    """Per-block values of one metric, one row per logging step.

    Args:
        blocks: the block index of each column (a monitor's ``layers``).
        steps: the optimizer step of each row.
        rows: one list of floats per row, one value per block (NaN where a block was not measured).

    Example:
        >>> h = MetricHistory(blocks=(0, 2))
        >>> h.append(10, [1.0, 2.0]); h.append(20, [3.0, float("nan")])
        >>> h.steps, h.last().tolist(), h.window(2).shape
        ([10, 20], [3.0, nan], torch.Size([2, 2]))
        >>> h.over(num_layers=3).rows[-1]
        [3.0, nan, nan]
    """

    blocks: tuple[int, ...]
    steps: list[int] = field(default_factory=list)
    rows: list[list[float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.blocks = tuple(int(b) for b in self.blocks)
        if len(self.steps) != len(self.rows) or any(len(r) != len(self.blocks) for r in self.rows):
            raise ValueError(
                f"Expected one row of {len(self.blocks)} values (one per block) per step but got {len(self.steps)} "
                f"steps and rows of lengths {[len(r) for r in self.rows]}."
            )

    def __len__(self) -> int:
        return len(self.steps)

    def append(self, step: int, values: Sequence[float]) -> None:
        """Add the row of ``step``; one value per block."""
        if len(values) != len(self.blocks):
            raise ValueError(f"Expected {len(self.blocks)} values (one per block) but got {len(values)}.")
        self.steps.append(int(step))
        self.rows.append([float(v) for v in values])

    @property
    def values(self) -> Tensor:
        """``(rows, blocks)`` float64 tensor of every row."""
        return torch.tensor(self.rows, dtype=torch.float64).reshape(len(self.rows), len(self.blocks))

    def full(self) -> Tensor:
        """Every row, as :attr:`values`."""
        return self.values

    def window(self, n: int) -> Tensor:
        """The last ``n`` rows (fewer if there are fewer), ``(n, blocks)``."""
        return self.values[-n:] if n > 0 else self.values[:0]

    def last(self) -> Tensor:
        """The last row, ``(blocks,)``.

        Raises:
            ValueError: when nothing was logged yet.
        """
        if not self.rows:
            raise ValueError("The history is empty: nothing was logged yet.")
        return self.values[-1]

    def over(self, num_layers: int) -> MetricHistory:
        """The same rows spread over all ``num_layers`` blocks, NaN where a block is not in :attr:`blocks`."""
        columns = {b: i for i, b in enumerate(self.blocks)}
        rows = [[row[columns[b]] if b in columns else math.nan for b in range(num_layers)] for row in self.rows]
        return MetricHistory(tuple(range(num_layers)), list(self.steps), rows)

    def state(self) -> dict[str, Any]:
        """Plain data for a checkpoint."""
        return {"blocks": list(self.blocks), "steps": list(self.steps), "values": [list(r) for r in self.rows]}

    @classmethod
    def from_state(cls, state: Mapping[str, Any], blocks: Sequence[int] | None = None) -> MetricHistory:
        """Read :meth:`state` back (``blocks`` fills in for states of version 0.1, which did not store them)."""
        cols = state.get("blocks", blocks)
        if cols is None:
            raise ValueError("Expected the history state to name its `blocks` but it does not.")
        return cls(tuple(cols), [int(s) for s in state.get("steps", [])], [list(r) for r in state.get("values", [])])
