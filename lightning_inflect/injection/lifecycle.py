"""The injection's lifecycle as one small state machine: its phases, the transitions between them and their checks.

Pure Python over peft and torch, no training framework: the Lightning callback (and any other trainer's glue) tells it
what happened (the fit's length, a step that is due, a selection, the end of the fit, a checkpoint's state) and it
says what to do and does the model side of it. Everything a resume must get right lives here, tested without a
Trainer: a saved state is checked whole before anything changes, and an injection keeps every adapter that was
active.

Phases::

    waiting --(selector needs one step's gradients)--> probing --> injected --> exported
       |                                                  |
       +------------------------------> injected          +--> skipped
       +--(nothing selected, on_empty="skip")--> skipped

A resume enters at the saved phase: ``waiting``/``probing`` keep the planned step, ``skipped`` stays without an
injection, ``injected`` re-applies the record to the model (``exported`` resumes as ``injected``: the export is
redone at the end of the new fit).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

from torch import nn

from lightning_inflect.architectures import check_layer_indices
from lightning_inflect.injection.lora import InjectionRecord, activate_lora, active_adapters, inject_lora
from lightning_inflect.injection.schedule import InjectionSchedule
from lightning_inflect.validation import check_str_list, checkpoint_state_error

__all__ = ["InjectionLifecycle", "Phase"]


class Phase(str, enum.Enum):
    """Where an injection stands in one fit."""

    WAITING = "waiting"  # before the planned step (not yet known until the fit's length is)
    PROBING = "probing"  # the selector needs the gradients of this step: inject at the next one
    INJECTED = "injected"
    SKIPPED = "skipped"  # nothing was selected (on_empty="skip"): no injection in this run
    EXPORTED = "exported"  # the adapters are saved (the end of the fit)


_NEXT: dict[Phase, set[Phase]] = {
    Phase.WAITING: {Phase.PROBING, Phase.INJECTED, Phase.SKIPPED},
    Phase.PROBING: {Phase.PROBING, Phase.INJECTED, Phase.SKIPPED},
    Phase.INJECTED: {Phase.EXPORTED},
    Phase.SKIPPED: set(),
    Phase.EXPORTED: {Phase.EXPORTED},  # a later fit of the same callback exports again
}

_STATE_KEYS = {"phase", "record", "planned_step"}


class InjectionLifecycle:
    """The phases of one injection, the transitions between them, and the state a checkpoint keeps of it.

    Args:
        schedule: when to inject (its ``planned_step`` is the lifecycle's).
        owner: the callback, for errors: its class and ``state_key``.

    Example:
        >>> life = InjectionLifecycle(InjectionSchedule(at_step=3), owner="InjectionCallback")
        >>> life.phase, life.plan(total_steps=10), life.due(2), life.due(3)
        (<Phase.WAITING: 'waiting'>, 3, False, True)
        >>> life.skip("no block selected"); life.phase, life.due(5), life.state_dict()["phase"]
        (<Phase.SKIPPED: 'skipped'>, False, 'skipped')
        >>> life.exported()
        Traceback (most recent call last):
        ...
        RuntimeError: InjectionCallback: the injection cannot go from 'skipped' to 'exported'.
    """

    def __init__(self, schedule: InjectionSchedule, owner: str = "InjectionCallback") -> None:
        self.schedule = schedule
        self.owner = owner
        self.phase = Phase.WAITING
        self.record: InjectionRecord | None = None
        self.reason = ""  # why the injection was skipped

    # --------------------------------------------------------------------------------------------- questions
    @property
    def planned_step(self) -> int | None:
        return self.schedule.planned_step

    @property
    def pending(self) -> bool:
        """Whether the injection is still to happen (waiting or probing)."""
        return self.phase in (Phase.WAITING, Phase.PROBING)

    @property
    def injected(self) -> bool:
        return self.phase in (Phase.INJECTED, Phase.EXPORTED)

    def due(self, step: int) -> bool:
        """Whether the injection is due at the start of optimizer step ``step``."""
        return self.pending and self.schedule.due(step)

    # ------------------------------------------------------------------------------------------- transitions
    def _move(self, to: Phase) -> None:
        if to not in _NEXT[self.phase]:
            raise RuntimeError(f"{self.owner}: the injection cannot go from {self.phase.value!r} to {to.value!r}.")
        self.phase = to

    def plan(self, total_steps: float) -> int | None:
        """Fix the planned step from the fit's planned number of optimizer steps (a pending injection only)."""
        return self.schedule.plan(total_steps) if self.phase is Phase.WAITING else self.planned_step

    def on_epoch_start(self, epoch: int, global_step: int) -> None:
        if self.phase is Phase.WAITING:
            self.schedule.on_epoch_start(epoch, global_step)

    def postpone(self, step: int) -> None:
        """Collect the gradients of this step first and inject at ``step``."""
        self._move(Phase.PROBING)
        self.schedule.postpone_to(step)

    def inject(self, model: nn.Module, record: InjectionRecord, dormant: bool = False) -> list[nn.Parameter]:
        """Attach ``record``'s adapter to ``model`` (wake it, when it was attached ``dormant`` for sharding) and enter
        ``injected``. Every adapter that was active stays active, in every module (a user's LoRA layers and the
        ``modules_to_save`` wrappers of their task head), and ours is active where it was attached.

        Returns:
            The adapter's parameters that now train.

        Raises:
            RuntimeError: when the phase is not pending, or when peft left another set of adapters active.
        """
        if not self.pending:
            raise RuntimeError(f"{self.owner}: the injection cannot go from {self.phase.value!r} to 'injected'.")
        lora = self._apply(model, record, dormant)
        self._move(Phase.INJECTED)
        self.record = record
        self.schedule.planned_step = None
        return lora

    def _apply(self, model: nn.Module, record: InjectionRecord, dormant: bool) -> list[nn.Parameter]:
        before = active_adapters(model)
        lora = activate_lora(model, record) if dormant else inject_lora(model, record)
        after = active_adapters(model)
        chosen = set(record.target_modules)
        expected = {
            name: [
                *[a for a in before.get(name, []) if a != record.adapter_name],
                *[record.adapter_name] * (name in chosen),
            ]
            for name in after
        }
        wrong = {name: (expected[name], after[name]) for name in after if sorted(after[name]) != sorted(expected[name])}
        if wrong:
            raise RuntimeError(
                f"{self.owner}: after attaching adapter {record.adapter_name!r}, peft left other adapters active than "
                f"before (module: (expected, active)): {wrong}. This is a bug of lightning-inflect with this peft "
                "version: please report it."
            )
        return lora

    def skip(self, reason: str) -> None:
        """Nothing was selected: no injection in this run."""
        self._move(Phase.SKIPPED)
        self.reason = reason
        self.schedule.planned_step = None

    def exported(self) -> None:
        """The adapters are saved."""
        self._move(Phase.EXPORTED)

    # ------------------------------------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """Plain, small state for a checkpoint."""
        return {
            "phase": self.phase.value,
            "record": self.record.to_dict() if self.record is not None else None,
            "planned_step": self.planned_step,
        }

    def read_state(
        self, state: Any, num_layers: int | None, checkpoint: Any = None
    ) -> tuple[Phase, InjectionRecord | None, int | None]:
        """``(phase, record, planned_step)`` of a saved :meth:`state_dict`, checked whole (also the states of
        versions up to 0.3, without ``phase``), before anything is changed.

        Raises:
            CheckpointStateError: naming ``checkpoint``, the owner and what was expected, for a state of the wrong
                type, with missing or unknown entries, a phase that is none of :class:`Phase`, a record that is not
                one (blocks beyond ``num_layers``, LoRA settings peft refuses), a phase that contradicts the record.
        """

        def bad(what: str, expected: str, got: Any) -> Exception:
            return checkpoint_state_error(checkpoint, self.owner, what, expected, got)

        if not isinstance(state, Mapping):
            raise bad("state", "a dict with the keys 'phase', 'record', 'planned_step'", state)
        unknown = sorted(set(map(str, state)) - _STATE_KEYS)
        if unknown or "record" not in state:
            raise bad("state", "a dict with the keys 'phase', 'record', 'planned_step'", dict(state))
        data = state.get("record")
        record = None
        if data is not None:
            if not isinstance(data, Mapping):
                raise bad("record", "None or a dict of an InjectionRecord", data)
            try:
                record = InjectionRecord.from_dict(dict(data))
                check_layer_indices(list(record.layers), num_layers if num_layers is not None else 10**9)
                check_str_list("target_modules", record.target_modules, allow_empty=False)
                record.config()  # peft's own checks of the LoRA settings
            except (TypeError, ValueError, AttributeError, KeyError) as err:
                raise bad("record", f"an InjectionRecord ({type(err).__name__}: {err})", dict(data)) from err
        default = Phase.INJECTED.value if record is not None else Phase.WAITING.value
        try:
            phase = Phase(state.get("phase", default))
        except ValueError as err:
            raise bad("phase", f"one of {[p.value for p in Phase]}", state.get("phase")) from err
        if (record is not None) != (phase in (Phase.INJECTED, Phase.EXPORTED)):
            raise bad("phase", "'injected' or 'exported' exactly when a record is saved", phase.value)
        planned = state.get("planned_step")
        if planned is not None and (isinstance(planned, bool) or not isinstance(planned, int) or planned < 0):
            raise bad("planned_step", "None or an int >= 0", planned)
        return phase, record, planned

    def restore(
        self,
        state: Any,
        model: nn.Module | None,
        num_layers: int | None,
        checkpoint: Any = None,
        dormant: bool = False,
    ) -> list[nn.Parameter]:
        """Enter the phase of a saved :meth:`state_dict`; an injected one is re-applied to ``model`` (``None``: the
        model has it already). The whole state is checked first (:meth:`read_state`): a damaged one raises
        before the model or the lifecycle change. Restoring the state this lifecycle is in already changes nothing.

        Returns:
            The adapter's trainable parameters when the injection was re-applied, else ``[]``.
        """
        phase, record, planned = self.read_state(state, num_layers, checkpoint)
        saved = Phase.INJECTED if phase is Phase.EXPORTED else phase
        if self.phase is not Phase.WAITING or self.record is not None:  # entered already (before the weights loaded)
            same = (record.to_dict() if record else None) == (self.record.to_dict() if self.record else None)
            now = Phase.INJECTED if self.phase is Phase.EXPORTED else self.phase
            if same and saved is now:
                return []
            raise checkpoint_state_error(
                checkpoint, self.owner, "state", f"the state this run entered already ({self.state_dict()})", state
            )
        if record is not None and model is None:
            raise RuntimeError(
                f"{self.owner}: the checkpoint's injection must be applied to the model before its weights load, but "
                "the weights were loaded without it. Resume through `trainer.fit(..., ckpt_path=...)`."
            )
        lora = self._apply(model, record, dormant) if record is not None and model is not None else []
        self.record = record
        self.phase = saved
        self.schedule.planned_step = planned if self.pending else None
        return lora
