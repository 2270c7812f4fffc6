"""When to inject: a trigger that fires once gradient suppression has lasted a few logging steps."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from lightning_inflect.functional.norms import gradient_drop
from lightning_inflect.names import ACT_GRAD_NORM
from lightning_inflect.validation import check_int, check_number

__all__ = ["GradientSuppressionTrigger"]


class GradientSuppressionTrigger:
    r"""Fires when some block suppresses the backward signal for ``patience`` consecutive logging steps.

    For one logging step with activation-gradient norms :math:`g_0 \dots g_{L-1}` (block outputs), the suppression
    at block ``l`` is the drop of the gradient crossing block ``l+1`` backwards,

    .. math::

        d_l = \log g_{l+1} - \log g_l ,

    the same quantity as the gradient part of SKI, but *not* min-max normalised, so a threshold has a meaning:
    ``threshold=log(2)`` (the default) asks for the gradient to halve. The trigger fires when
    :math:`\max_l d_l \ge` ``threshold`` on ``patience`` consecutive logs; non-finite rows reset the count.

    Args:
        threshold: drop in nats.
        patience: consecutive logging steps.

    Example:
        >>> t = GradientSuppressionTrigger(threshold=math.log(2), patience=2)
        >>> t.update([1.0, 4.0, 4.0]), t.update([1.0, 1.5, 1.6]), t.update([0.5, 2.0, 2.0]), t.update([0.4, 2.0, 2.0])
        (False, False, False, True)
        >>> t.reason
        'gradient drop >= 0.693 nats for 2 consecutive logs (last: 1.609 at block 0)'
    """

    requires = (ACT_GRAD_NORM,)

    def __init__(self, threshold: float = math.log(2), patience: int = 3) -> None:
        check_number("threshold", threshold)
        check_int("patience", patience, low=1)
        self.threshold = float(threshold)
        self.patience = patience
        self.streak = 0
        self.reason = ""

    def __repr__(self) -> str:
        return f"GradientSuppressionTrigger(threshold={self.threshold:.3g}, patience={self.patience})"

    @staticmethod
    def drops(act_grad_norms: Sequence[float]) -> list[float]:
        """:func:`~lightning_inflect.functional.gradient_drop` of one row: ``log g_{l+1} - log g_l`` for each block
        but the last (NaN where a norm is missing or negative; a zero norm drops the most)."""
        return gradient_drop(torch.tensor([float(g) for g in act_grad_norms], dtype=torch.float64)).tolist()

    def update(self, act_grad_norms: Sequence[float]) -> bool:
        """Feed one logging step's per-block norms; True once suppression has lasted ``patience`` logs."""
        drops = [d for d in self.drops(act_grad_norms)]
        finite = [(d, i) for i, d in enumerate(drops) if math.isfinite(d)]
        if not finite:
            self.streak = 0
            return False
        best, block = max(finite)
        self.streak = self.streak + 1 if best >= self.threshold else 0
        if self.streak >= self.patience:
            self.reason = (
                f"gradient drop >= {self.threshold:.3g} nats for {self.patience} consecutive logs "
                f"(last: {best:.3f} at block {block})"
            )
            return True
        return False

    def reset(self) -> None:
        self.streak = 0
        self.reason = ""
