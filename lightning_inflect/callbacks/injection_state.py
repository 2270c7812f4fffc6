"""The InjectionCallback's report: what it did, to the loggers and the info log."""

from __future__ import annotations

import lightning.pytorch as pl
from lightning.pytorch.utilities import rank_zero_info

from lightning_inflect.callbacks.base import layer_key
from lightning_inflect.callbacks.loggers import log_text
from lightning_inflect.injection import InjectionRecord

__all__ = ["report_injection"]


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
