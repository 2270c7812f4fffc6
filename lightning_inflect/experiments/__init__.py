"""The SST-2 -> Rotten Tomatoes study: data loading, the offline MiniLM, a training module, the strategy registry.

The study, its ``lightning-inflect`` command and its HTML report come with an extra: ``pip install
"lightning-inflect[study]"`` (jsonargparse, matplotlib). Reading the data, the MiniLM and the training module need
only the core install. Modules: ``data`` / ``loaders`` / ``minilm`` / ``module`` (the pieces), ``strategies`` (the
registry), ``config`` (settings and presets), ``study_data``, ``models``, ``source``, ``diagnosis``, ``transfer``,
``grid`` and ``results`` (the harness), ``stats``, ``protocol`` and ``results_tuned`` (the tuned protocol's rate
choice, paired differences and verdicts), ``demo``, ``report``, ``quiet`` (quiet output of the commands).

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
from lightning_inflect.experiments.strategies import STRATEGIES, Strategy, get_strategy, register_strategy

if TYPE_CHECKING:
    from lightning_inflect.experiments.module import SequenceClassificationModule

__all__ = [
    "DATA_DIR_ENV_VAR",
    "HUB",
    "HUB_DATASETS",
    "STRATEGIES",
    "PadCollator",
    "SequenceClassificationModule",
    "Strategy",
    "TextClassificationDataset",
    "get_strategy",
    "is_hub",
    "load_from_hub",
    "load_minilm",
    "load_rotten_tomatoes",
    "load_sst2",
    "make_dataloader",
    "minilm_path",
    "read_tsv",
    "register_strategy",
    "resolve_data_dir",
]


def __getattr__(name: str) -> Any:
    if name == "SequenceClassificationModule":
        from lightning_inflect.experiments.module import SequenceClassificationModule

        return SequenceClassificationModule
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
