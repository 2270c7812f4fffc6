"""The experiment harness: real-data loading (SST-2, Rotten Tomatoes), the offline MiniLM, a training module.

:class:`SequenceClassificationModule` is imported on first access, so that reading data does not import Lightning.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lightning_inflect.experiments.data import (
    DATA_DIR_ENV_VAR,
    HUB,
    HUB_DATASETS,
    is_hub,
    load_from_hub,
    load_rotten_tomatoes,
    load_sst2,
    read_tsv,
    resolve_data_dir,
)
from lightning_inflect.experiments.loaders import PadCollator, TextClassificationDataset, make_dataloader
from lightning_inflect.experiments.minilm import load_minilm, minilm_path

if TYPE_CHECKING:
    from lightning_inflect.experiments.module import SequenceClassificationModule

__all__ = [
    "DATA_DIR_ENV_VAR",
    "HUB",
    "HUB_DATASETS",
    "PadCollator",
    "SequenceClassificationModule",
    "TextClassificationDataset",
    "is_hub",
    "load_from_hub",
    "load_minilm",
    "load_rotten_tomatoes",
    "load_sst2",
    "make_dataloader",
    "minilm_path",
    "read_tsv",
    "resolve_data_dir",
]


def __getattr__(name: str) -> Any:
    if name == "SequenceClassificationModule":
        from lightning_inflect.experiments.module import SequenceClassificationModule

        return SequenceClassificationModule
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
