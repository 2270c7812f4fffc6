"""The InjectionCallback's report: what it did, to the loggers and the info log."""

from __future__ import annotations

import lightning.pytorch as pl
from lightning.pytorch.utilities import rank_zero_info

from lightning_inflect.callbacks.loggers import log_metrics, log_text
from lightning_inflect.injection import InjectionRecord
from lightning_inflect.names import INFLECTION_SCORE, INJECTION, TRAINABLE_PARAMS, layer_key, run_key

__all__ = ["report_injection"]


def report_injection(trainer: pl.Trainer, record: InjectionRecord, prefix: str, lora_numel: int) -> None:
    """Log ``prefix/trainable_params`` and the selector's scores ``prefix/inflection_score/layer_LL`` (every logger,
    and ``trainer.callback_metrics``: :func:`~lightning_inflect.callbacks.loggers.log_metrics`; called on every
    rank, which all hold the same record), the injection text ``prefix/injection`` (rank 0, the loggers that take
    text: :func:`~lightning_inflect.callbacks.loggers.log_text`) and the info log."""
    metrics = {run_key(prefix, TRAINABLE_PARAMS): float(record.trainable_after)}
    if record.scores is not None:
        metrics.update({layer_key(prefix, INFLECTION_SCORE, i): float(s) for i, s in enumerate(record.scores)})
    log_metrics(trainer, metrics, record.step)
    text = record.describe(lora_numel)
    if trainer.is_global_zero:
        log_text(trainer.loggers, run_key(prefix, INJECTION), text, record.step)
    rank_zero_info(text.replace("**", ""))
