"""The study's data: SST-2 (source) and Rotten Tomatoes (target), subsampled and checked for overlap."""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from lightning_inflect.experiments.config import ExperimentConfig
from lightning_inflect.experiments.data import load_rotten_tomatoes, load_sst2

__all__ = ["StudyData", "dedup_against", "load_study_data", "normalise_text"]

Pairs = list[tuple[str, int]]


def normalise_text(text: str) -> str:
    """Lower-case and keep ``[a-z0-9]`` only, the key for overlap between SST-2 and Rotten Tomatoes.

    Example:
        >>> normalise_text("It 's a  GREAT film -- really !")
        'itsagreatfilmreally'
    """
    return re.sub(r"[^a-z0-9]", "", text.lower())


def dedup_against(pairs: Sequence[tuple[str, int]], reference: Sequence[tuple[str, int]]) -> Pairs:
    """``pairs`` whose normalised text does not occur in ``reference``.

    Example:
        >>> dedup_against([("A film .", 1), ("new one", 0)], [("a film", 1)])
        [('new one', 0)]
    """
    seen = {normalise_text(t) for t, _ in reference}
    return [(t, y) for t, y in pairs if normalise_text(t) not in seen]


def _subsample(pairs: Sequence[tuple[str, int]], size: int | None, seed: int) -> Pairs:
    """A seeded shuffle of ``pairs``, cut to ``size`` (None: all).

    Example:
        >>> _subsample([("a", 0), ("b", 1), ("c", 0)], 2, seed=0) == _subsample([("a", 0), ("b", 1), ("c", 0)], 2, 0)
        True
    """
    shuffled = list(pairs)
    random.Random(seed).shuffle(shuffled)
    return shuffled if size is None else shuffled[:size]


@dataclass
class StudyData:
    """The sentences of one study: source training, target training, target test and validation, and the parts of
    test and validation without overlap with the source training set.

    Attributes:
        counts: sizes, and how many sentences were removed or set apart as overlap with SST-2 train.
        target_val, target_val_dedup: the Rotten Tomatoes validation split (HF ``rotten_tomatoes``' own, disjoint
            from its train and test splits) and its sentences absent from SST-2 train: learning rates are chosen
            there, never on the test set.
    """

    source_train: Pairs
    target_train: Pairs
    target_test: Pairs
    target_test_dedup: Pairs
    counts: dict[str, int]
    target_val: Pairs = field(default_factory=list)
    target_val_dedup: Pairs = field(default_factory=list)


def load_study_data(cfg: ExperimentConfig) -> StudyData:
    """Load, subsample (seed 0, fixed for every run) and deduplicate the study's data; ``counts`` reports sizes."""
    sst_full = load_sst2(cfg.data_dir, "train")
    rt_test = _subsample(load_rotten_tomatoes(cfg.data_dir, "test"), cfg.target_test_size, 0)
    rt_val = _subsample(load_rotten_tomatoes(cfg.data_dir, "validation"), cfg.target_val_size, 0)
    source = _subsample(sst_full, cfg.source_train_size, 0)
    target_train = _subsample(load_rotten_tomatoes(cfg.data_dir, "train"), None, 0)
    removed_train = 0
    if cfg.dedup_target:
        kept = dedup_against(target_train, sst_full)
        removed_train = len(target_train) - len(kept)
        target_train = kept
    target_train = target_train if cfg.target_train_size is None else target_train[: cfg.target_train_size]
    test_dedup = dedup_against(rt_test, sst_full)
    val_dedup = dedup_against(rt_val, sst_full)
    counts = {
        "source_train": len(source),
        "target_train": len(target_train),
        "target_train_removed_as_overlap": removed_train,
        "target_test": len(rt_test),
        "target_test_dedup": len(test_dedup),
        "target_test_overlap": len(rt_test) - len(test_dedup),
        "target_val": len(rt_val),
        "target_val_dedup": len(val_dedup),
    }
    return StudyData(source, target_train, rt_test, test_dedup, counts, rt_val, val_dedup)
