"""When to inject: exactly one of an optimizer step, the start of an epoch, or a fraction of the planned steps.

Pure Python, no Lightning: the callback feeds it the trainer's numbers, and it can be tested without a Trainer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from lightning_inflect.validation import check_int, check_number

__all__ = ["InjectionSchedule"]


@dataclass
class InjectionSchedule:
    """The planned injection step of one fit.

    Args:
        at_step: inject at this optimizer step (``trainer.global_step``).
        at_epoch: inject at the first optimizer step of this epoch.
        at_fraction: inject at this fraction, in (0, 1), of the planned optimizer steps.
        min_step: the earliest step a fraction may round to (1 when the selector needs the gradients of a step
            before the injection).

    Attributes:
        planned_step: the step to inject at, once known (``None`` before; ``at_epoch`` sets it when the epoch
            starts).

    Example:
        >>> s = InjectionSchedule(at_fraction=0.3)
        >>> s.plan(total_steps=100), s.due(step=29), s.due(step=30)
        (30, False, True)
        >>> s = InjectionSchedule(at_epoch=2)
        >>> s.plan(total_steps=90), s.on_epoch_start(epoch=1, global_step=30), s.on_epoch_start(2, 60)
        (None, None, 60)
    """

    at_step: int | None = None
    at_epoch: int | None = None
    at_fraction: float | None = None
    min_step: int = 0
    planned_step: int | None = None

    def __post_init__(self) -> None:
        when = {"at_step": self.at_step, "at_epoch": self.at_epoch, "at_fraction": self.at_fraction}
        given = [k for k, v in when.items() if v is not None]
        if len(given) != 1:
            raise ValueError(
                "Expected exactly one of `at_step`, `at_epoch`, `at_fraction` but got "
                f"{'none' if not given else ', '.join(f'{k}={when[k]!r}' for k in given)}. "
                "For example `at_fraction=0.3` injects after 30% of the planned optimizer steps."
            )
        check_int("at_step", self.at_step, low=0, optional=True)
        check_int("at_epoch", self.at_epoch, low=0, optional=True)
        if self.at_fraction is not None:
            check_number("at_fraction", self.at_fraction, 0.0, 1.0, open_low=True, open_high=True)

    def plan(self, total_steps: float) -> int | None:
        """Fix the step at fit start from the fit's planned number of optimizer steps (``inf`` when unbounded)."""
        if self.at_step is not None:
            self.planned_step = self.at_step
        elif self.at_fraction is not None:
            if not math.isfinite(total_steps):
                raise ValueError(
                    "`at_fraction` needs a known number of optimizer steps, but the Trainer's is unbounded: set "
                    "`max_steps` or `max_epochs`, or use `at_step=`."
                )
            self.planned_step = max(self.min_step, round(self.at_fraction * total_steps))
        return self.planned_step

    def on_epoch_start(self, epoch: int, global_step: int) -> int | None:
        """With ``at_epoch``: the first step of that epoch (or of the first later one, when resuming past it)."""
        if self.at_epoch is not None and self.planned_step is None and epoch >= self.at_epoch:
            self.planned_step = global_step
        return self.planned_step

    def due(self, step: int) -> bool:
        """Whether the injection is due at the start of optimizer step ``step``."""
        return self.planned_step is not None and step >= self.planned_step

    def postpone_to(self, step: int) -> None:
        """Move the injection to ``step`` (to collect one step's gradients first)."""
        self.planned_step = step

    def too_late(self, max_steps: int, max_epochs: int | None, total_steps: float) -> str | None:
        """Why no injection can happen in a fit with these limits, or None.

        Example:
            >>> InjectionSchedule(at_epoch=5).too_late(max_steps=-1, max_epochs=2, total_steps=20)
            'at the start of epoch 5, but training stops after max_epochs=2 (epochs 0 to 1). Lower `at_epoch`.'
        """
        step = self.planned_step
        if step is not None and max_steps > 0 and step >= max_steps:
            return (
                f"at optimizer step {step}, but training stops at max_steps={max_steps}. Lower `at_step`/`at_fraction`."
            )
        if self.at_epoch is not None and max_epochs is not None and 0 <= max_epochs <= self.at_epoch:
            return (
                f"at the start of epoch {self.at_epoch}, but training stops after max_epochs={max_epochs} "
                f"(epochs 0 to {max_epochs - 1}). Lower `at_epoch`."
            )
        if step is not None and math.isfinite(total_steps) and step >= total_steps:
            return (
                f"at optimizer step {step}, but this fit plans {int(total_steps)} optimizer steps. "
                "Lower `at_step`/`at_fraction`."
            )
        return None
