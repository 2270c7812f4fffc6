"""The InjectionCallback's checkpoint glue and report: reading its saved state, and telling what it did."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.utilities import rank_zero_info

from lightning_inflect.architectures import check_layer_indices
from lightning_inflect.callbacks.base import layer_key
from lightning_inflect.callbacks.loggers import log_text
from lightning_inflect.injection import InjectionRecord
from lightning_inflect.validation import check_str_list

__all__ = ["corrupt_state", "read_record", "read_state", "report_injection", "saved_record"]


def corrupt_state(owner: str, trainer: pl.Trainer | None, what: str, detail: str) -> RuntimeError:
    """The error for a checkpoint state that cannot be read: it names the callback and the checkpoint."""
    ckpt = getattr(trainer, "ckpt_path", None) or "the checkpoint"
    return RuntimeError(
        f"{owner} could not read its {what} from {ckpt}: {detail}. The checkpoint's callback state is corrupt or was "
        "written by other code; resume from another checkpoint, or start without `ckpt_path`."
    )


def read_record(data: Any, num_layers: int | None, owner: str, trainer: pl.Trainer | None) -> InjectionRecord:
    """The saved :class:`InjectionRecord`, checked (against ``num_layers`` when known), or :func:`corrupt_state`."""
    try:
        record = InjectionRecord.from_dict(dict(data))
        check_layer_indices(list(record.layers), num_layers if num_layers is not None else 10**9)
        check_str_list("target_modules", record.target_modules, allow_empty=False)
        record.config()  # peft's own checks of the LoRA settings
        return record
    except (TypeError, ValueError, AttributeError, KeyError) as err:
        raise corrupt_state(owner, trainer, "injection record", f"{type(err).__name__}: {err}") from err


def read_state(
    state: Any, num_layers: int | None, owner: str, trainer: pl.Trainer | None
) -> tuple[InjectionRecord | None, int | None]:
    """``(record, planned_step)`` from the callback's ``state_dict``, or :func:`corrupt_state`."""
    if not isinstance(state, Mapping):
        raise corrupt_state(owner, trainer, "state", f"expected a dict but got {type(state).__name__}")
    data = state.get("record")
    record = read_record(data, num_layers, owner, trainer) if data else None
    planned = state.get("planned_step")
    if planned is not None and (isinstance(planned, bool) or not isinstance(planned, int) or planned < 0):
        raise corrupt_state(owner, trainer, "planned step", f"expected an int >= 0 or None but got {planned!r}")
    return record, planned


def saved_record(trainer: pl.Trainer | None, owner: str) -> Any:
    """The record the checkpoint being loaded holds for callback ``owner`` (its ``state_key``), if any.

    Lightning loads the weights before the callbacks' state: this reads the state early, from the loaded checkpoint.
    """
    loaded = getattr(getattr(trainer, "_checkpoint_connector", None), "_loaded_checkpoint", None) or {}
    state = (loaded.get("callbacks") or {}).get(owner)
    if state is not None and not isinstance(state, Mapping):
        raise corrupt_state(owner, trainer, "state", f"expected a dict but got {type(state).__name__}")
    return (state or {}).get("record")


def report_injection(trainer: pl.Trainer, record: InjectionRecord, prefix: str, lora_numel: int) -> None:
    """Log ``prefix/trainable_params`` and the selector's scores (every logger), the injection text ``prefix/injection``
    (rank 0, the loggers that take text: :func:`~lightning_inflect.callbacks.loggers.log_text`) and the info log."""
    metrics = {f"{prefix}/trainable_params": float(record.trainable_after)}
    if record.scores is not None:
        metrics.update({layer_key(prefix, "inflection_score", i): s for i, s in enumerate(record.scores)})
    for logger in trainer.loggers:
        logger.log_metrics(metrics, step=record.step)
    text = record.describe(lora_numel)
    if trainer.is_global_zero:
        log_text(trainer.loggers, f"{prefix}/injection", text, record.step)
    rank_zero_info(text.replace("**", ""))
