"""The grid: regimes x strategies x seeds, resumable, with tables rewritten after every finished run.

Layout of a grid folder: ``source/REGIME/`` per source model (``model/`` and ``metrics.json`` with its SST-2 dev
accuracy), ``REGIME/STRATEGY/seedN/`` per evaluation run, ``grid_config.json``, and the tables ``results.json``,
``results.csv`` and ``results.md``. With ``lr_grids`` (the tuned protocol), also ``REGIME/STRATEGY/tune/lrLR/seedS/``
per tuning run (one per rate, on ``tuning_seed``; validation only) and ``runs.csv`` / ``comparisons.csv``.

A run is finished when its folder holds ``metrics.json`` (written last, atomically); a re-run skips finished runs
and starts unfinished ones again from a clean folder, so a grid killed at any point resumes where it stopped.
Several grid processes can share a folder (one per seed, say): each run and source model is locked while it trains
(``flock``, released by the operating system if a process dies), and the others take other runs meanwhile.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # Windows: no lock between grid processes
    fcntl = None  # type: ignore[assignment]

from lightning_inflect.experiments import source, transfer
from lightning_inflect.experiments.config import PROTOCOL_FIELDS, ExperimentConfig, config_json, write_json
from lightning_inflect.experiments.protocol import lr_choice
from lightning_inflect.experiments.results import write_results
from lightning_inflect.experiments.study_data import StudyData, load_study_data

__all__ = ["cell_dir", "check_same_protocol", "collect", "finished_cell", "run_grid", "tune_dir"]

log = logging.getLogger(__name__)

Cell = tuple[str, str, int]  # regime, strategy, seed


def cell_dir(out: Path, regime: str, strategy: str, seed: int) -> Path:
    """An evaluation run's folder.

    Example:
        >>> cell_dir(Path("runs/grid"), "over", "full", 2).as_posix()
        'runs/grid/over/full/seed2'
    """
    return Path(out) / regime / strategy / f"seed{seed}"


def tune_dir(out: Path, regime: str, strategy: str, lr: float, seed: int) -> Path:
    """A tuning run's folder: one per learning rate, on the tuning seed.

    Example:
        >>> tune_dir(Path("runs/grid"), "over", "full", 3e-5, 100).as_posix()
        'runs/grid/over/full/tune/lr3e-05/seed100'
    """
    return Path(out) / regime / strategy / "tune" / f"lr{lr:g}" / f"seed{seed}"


def _finished(run_dir: Path, regime: str) -> dict[str, Any] | None:
    done = run_dir / "metrics.json"
    return {**json.loads(done.read_text()), "regime": regime} if done.is_file() else None


def finished_cell(out: Path, regime: str, strategy: str, seed: int) -> dict[str, Any] | None:
    """A cell's ``metrics.json`` with its regime added, or None while the cell is not finished."""
    return _finished(cell_dir(out, regime, strategy, seed), regime)


def _cells(cfg: ExperimentConfig) -> list[Cell]:
    if cfg.tuned:  # seed by seed, so that a partial grid holds every cell's first seeds
        return [(r, s, seed) for seed in cfg.seeds for r in cfg.regimes for s in cfg.strategy_list()]
    return [(r, s, seed) for r in cfg.regimes for s in cfg.strategy_list() for seed in cfg.seeds]


def _tuning(cfg: ExperimentConfig) -> list[tuple[str, str, float]]:
    if not cfg.tuned:
        return []
    return [(r, s, lr) for r in cfg.regimes for s in cfg.strategy_list() for lr in cfg.lr_grid(s)]


def _sources(out: Path, cfg: ExperimentConfig) -> list[dict[str, Any]]:
    found = [source.source_dir(out, r) / "metrics.json" for r in cfg.regimes]
    return [{**json.loads(p.read_text()), "regime": p.parent.name} for p in found if p.is_file()]


def collect(cfg: ExperimentConfig, out: Path) -> dict[str, list[dict[str, Any]]]:
    """The finished runs of the grid ``cfg`` in ``out``: ``runs`` (evaluation), ``tuning`` and ``sources``."""
    out = Path(out)
    return {
        "runs": [m for cell in _cells(cfg) if (m := finished_cell(out, *cell)) is not None],
        "tuning": [
            m for r, s, lr in _tuning(cfg) if (m := _finished(tune_dir(out, r, s, lr, cfg.tuning_seed), r)) is not None
        ],
        "sources": _sources(out, cfg),
    }


def check_same_protocol(cfg: ExperimentConfig, out: Path) -> None:
    """Refuse to resume in a folder whose ``grid_config.json`` has other run settings (:data:`PROTOCOL_FIELDS`).

    Settings the saved file does not have (an older version's) are not compared.

    Raises:
        ValueError: naming the settings that differ, with both values.
    """
    saved_file = Path(out) / "grid_config.json"
    if not saved_file.is_file():
        return
    saved = json.loads(saved_file.read_text())
    now = json.loads(json.dumps(config_json(cfg, out)))
    differ = [
        f"`{k}` ({saved[k]!r} there, {now[k]!r} now)" for k in PROTOCOL_FIELDS if k in saved and saved[k] != now[k]
    ]
    if differ:
        raise ValueError(
            f"Expected the grid folder {str(out)!r} to hold runs of the same settings but {', '.join(differ)} differ."
            " Hint: pass another `out` for these settings, or the settings that folder was run with (its"
            " grid_config.json)."
        )


class _Progress:
    """A bar over the runs and a log line per run (nothing when off)."""

    def __init__(self, total: int, enabled: bool) -> None:
        from tqdm.auto import tqdm

        self.total, self.enabled, self.start, self.i = total, enabled, time.perf_counter(), 0
        self.bar = tqdm(total=total, desc="grid", unit="run") if enabled else None

    def done(self, what: str, metrics: dict[str, Any]) -> None:
        self.i += 1
        if self.bar is None:
            return
        acc = metrics.get("test_acc")
        score = f"acc {acc:.3f}" if acc is not None else f"val {metrics.get('val_acc_dedup', float('nan')):.3f}"
        self.bar.set_postfix_str(f"{what}: {score}")
        self.bar.update()
        log.info("[%d/%d] %s: %s, %.0f s elapsed", self.i, self.total, what, score, time.perf_counter() - self.start)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _fresh(run_dir: Path) -> Path:
    """An unfinished run's folder, emptied of what a killed earlier attempt left (logs, weights)."""
    if run_dir.exists() and not (run_dir / "metrics.json").is_file():
        shutil.rmtree(run_dir)
    return run_dir


def run_grid(
    cfg: ExperimentConfig, out_dir: str | Path, progress: bool = True, collect_only: bool = False
) -> list[dict[str, Any]]:
    """Regimes x strategies x seeds; finished runs (with ``metrics.json``) are skipped, so a re-run resumes.

    Without ``cfg.lr_grids`` every strategy trains at ``cfg.lr``. With it (the tuned protocol), both source models
    train first, then every strategy once per rate of its grid on ``cfg.tuning_seed`` (validation only), then the
    evaluation seeds, seed by seed, each strategy at the rate its tuning runs chose.

    Args:
        cfg: the study's settings (``strategies=None``: every registered strategy).
        out_dir: the grid folder (see the module); a folder run with other settings is refused.
        progress: a progress bar over the runs and a log line per run.
        collect_only: train nothing; only rebuild the tables from the runs already finished (for runs made by
            several processes or machines into one folder). The tables say how many runs are missing.

    Returns:
        The finished evaluation runs' metrics.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    check_same_protocol(cfg, out)
    if collect_only:
        return _collect_only(cfg, out)
    write_json(out / "grid_config.json", config_json(cfg, out))
    data = load_study_data(cfg)
    start = time.perf_counter()
    bar = _Progress(len(_tuning(cfg)) + len(_cells(cfg)), progress)

    def train(regime: str, strategy: str, seed: int, run_dir: Path, lr: float | None, role: transfer.Role) -> Any:
        def fit() -> dict[str, Any]:
            model = _source(cfg, regime, out, data, progress)
            rate = lr if role == "tune" else _chosen_lr(cfg, out, regime, strategy)
            metrics = transfer.run_transfer(cfg, strategy, seed, model, _fresh(run_dir), data, lr=rate, role=role)
            _write(cfg, out, time.perf_counter() - start)  # after every new run: a killed grid leaves its tables
            return {**metrics, "regime": regime}

        return fit

    try:
        if cfg.tuned:
            for regime in cfg.regimes:  # both first: the tuning runs of every regime follow
                _source(cfg, regime, out, data, progress)
            tuning = [
                (r, s, cfg.tuning_seed, tune_dir(out, r, s, lr, cfg.tuning_seed), lr) for r, s, lr in _tuning(cfg)
            ]
            _run_all([(f"{r} {s} lr {lr:g} (tuning)", d, r, train(r, s, seed, d, lr, "tune"))
                      for r, s, seed, d, lr in tuning], bar)  # fmt: skip
        cells = [(r, s, seed, cell_dir(out, r, s, seed)) for r, s, seed in _cells(cfg)]
        _run_all([(f"{r} {s} seed {seed}", d, r, train(r, s, seed, d, None, "eval")) for r, s, seed, d in cells], bar)
        _write(cfg, out, time.perf_counter() - start)
    finally:
        bar.close()
    return collect(cfg, out)["runs"]


Job = tuple[str, Path, str, Callable[[], dict[str, Any]]]  # label, run folder, regime, training


def _run_all(jobs: list[Job], bar: _Progress) -> None:
    """Each job's run once, whichever process gets to it: runs another live process holds are put off, then waited
    for (and trained here if that process died before finishing them)."""
    put_off = [job for job in jobs if not _run_one(job, bar, wait=False)]
    for job in put_off:
        _run_one(job, bar, wait=True)


def _run_one(job: Job, bar: _Progress, wait: bool) -> bool:
    label, run_dir, regime, fit = job
    with _locked(run_dir, wait) as mine:
        if not mine:
            return False
        done = _finished(run_dir, regime)
        bar.done(label, done if done is not None else fit())
    return True


@contextmanager
def _locked(run_dir: Path, wait: bool) -> Iterator[bool]:
    """Hold the run's lock (``.NAME.lock`` beside its folder) while it trains, so that grid processes sharing a
    folder never train one run twice; yields False when another process holds it and ``wait`` is False. The lock is
    the operating system's (``flock``): a killed process leaves none behind. Without ``fcntl`` (Windows): no lock."""
    if fcntl is None:
        yield True
        return
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(run_dir.parent / f".{run_dir.name}.lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _source(cfg: ExperimentConfig, regime: str, out: Path, data: StudyData, progress: bool) -> Path:
    """The regime's source model, trained once even when several grid processes share the folder."""
    with _locked(source.source_dir(out, regime), wait=True):
        return source.train_source(cfg, regime, out, data, progress=progress)  # a bar: OVER is long


def _chosen_lr(cfg: ExperimentConfig, out: Path, regime: str, strategy: str) -> float | None:
    """The tuned rate of a strategy (None without ``lr_grids``: the run takes ``cfg.lr``)."""
    if not cfg.tuned:
        return None
    choice = lr_choice(collect(cfg, out)["tuning"], regime, strategy, cfg.lr_grid(strategy), cfg.select_on)
    if choice["chosen_lr"] is None:
        raise RuntimeError(
            f"Expected every tuning run of {strategy!r} ({regime}) to be finished before its evaluation runs, but"
            f" the validation accuracies are {choice['val']}. Hint: run the grid without `--regimes`/`--strategies`"
            " subsets that skip tuning, or remove the unfinished tuning folders."
        )
    return float(choice["chosen_lr"])


def _write(cfg: ExperimentConfig, out: Path, wall_seconds: float | None) -> dict[str, list[dict[str, Any]]]:
    found = collect(cfg, out)
    write_results(
        found["runs"], out, cfg, wall_seconds=wall_seconds, cells_total=len(_cells(cfg)),
        tuning=found["tuning"], tuning_total=len(_tuning(cfg)), sources=found["sources"],
    )  # fmt: skip
    return found


def _collect_only(cfg: ExperimentConfig, out: Path) -> list[dict[str, Any]]:
    found = collect(cfg, out)
    if not found["runs"] and not found["tuning"]:
        raise FileNotFoundError(
            f"No finished cell (REGIME/STRATEGY/seedN/metrics.json) under {str(out)!r} for regimes "
            f"{cfg.regimes}, strategies {cfg.strategy_list()} and seeds {cfg.seeds}: run the grid without "
            "`collect_only` first, or point `out` at a grid folder."
        )
    _write(cfg, out, None)
    return found["runs"]
