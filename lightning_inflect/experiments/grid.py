"""The grid: regimes x strategies x seeds, resumable, with tables rewritten after every finished cell.

Layout of a grid folder: ``source/REGIME/model`` per source model, ``REGIME/STRATEGY/seedN/`` per cell (a transfer
run folder), ``grid_config.json``, and the tables ``results.json``, ``results.csv`` and ``results.md``.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from lightning_inflect.experiments import source, transfer
from lightning_inflect.experiments.config import ExperimentConfig, config_json
from lightning_inflect.experiments.results import write_results
from lightning_inflect.experiments.study_data import load_study_data

__all__ = ["cell_dir", "finished_cell", "run_grid"]

log = logging.getLogger(__name__)

Cell = tuple[str, str, int]  # regime, strategy, seed


def cell_dir(out: Path, regime: str, strategy: str, seed: int) -> Path:
    """A cell's run folder.

    Example:
        >>> cell_dir(Path("runs/grid"), "over", "full", 2).as_posix()
        'runs/grid/over/full/seed2'
    """
    return Path(out) / regime / strategy / f"seed{seed}"


def finished_cell(out: Path, regime: str, strategy: str, seed: int) -> dict[str, Any] | None:
    """A cell's ``metrics.json`` with its regime added, or None while the cell is not finished."""
    done = cell_dir(out, regime, strategy, seed) / "metrics.json"
    return {**json.loads(done.read_text()), "regime": regime} if done.is_file() else None


def _cells(cfg: ExperimentConfig) -> list[Cell]:
    return [(r, s, seed) for r in cfg.regimes for s in cfg.strategy_list() for seed in cfg.seeds]


def _collect(cfg: ExperimentConfig, out: Path) -> list[dict[str, Any]]:
    cells = _cells(cfg)
    results = [m for cell in cells if (m := finished_cell(out, *cell)) is not None]
    if not results:
        raise FileNotFoundError(
            f"No finished cell (REGIME/STRATEGY/seedN/metrics.json) under {str(out)!r} for regimes "
            f"{cfg.regimes}, strategies {cfg.strategy_list()} and seeds {cfg.seeds}: run the grid without "
            "`collect_only` first, or point `out` at a grid folder."
        )
    write_results(results, out, cfg, wall_seconds=None, cells_total=len(cells))
    return results


class _Progress:
    """A bar over the cells and a log line per cell (nothing when off)."""

    def __init__(self, total: int, enabled: bool) -> None:
        from tqdm.auto import tqdm

        self.total, self.enabled, self.start = total, enabled, time.perf_counter()
        self.bar = tqdm(total=total, desc="grid", unit="run") if enabled else None

    def done(self, i: int, cell: Cell, metrics: dict[str, Any]) -> None:
        if self.bar is None:
            return
        regime, strategy, seed = cell
        self.bar.set_postfix_str(f"{regime} {strategy} seed {seed}: acc {metrics['test_acc']:.3f}")
        self.bar.update()
        log.info(
            "[%d/%d] %s %s seed %d: test acc %.4f (dedup %.4f), %s trainable, %.0f s elapsed",
            i, self.total, regime, strategy, seed, metrics["test_acc"], metrics["test_acc_dedup"],
            f"{metrics['trainable_params']:,}", time.perf_counter() - self.start,
        )  # fmt: skip

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_grid(
    cfg: ExperimentConfig, out_dir: str | Path, progress: bool = True, collect_only: bool = False
) -> list[dict[str, Any]]:
    """Regimes x strategies x seeds; finished cells (with ``metrics.json``) are skipped, so a re-run resumes.

    Args:
        cfg: the study's settings (``strategies=None``: every registered strategy).
        out_dir: the grid folder: ``REGIME/STRATEGY/seedN/`` per cell, ``source/REGIME/model`` per source model.
        progress: a progress bar over the cells and a log line per cell.
        collect_only: train nothing; only rebuild the tables from the cells already finished (for cells run by
            several processes or machines into one folder). The tables say how many cells are missing.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if collect_only:
        return _collect(cfg, out)
    (out / "grid_config.json").write_text(json.dumps(config_json(cfg, out), indent=2))
    data = load_study_data(cfg)
    cells = _cells(cfg)
    results: list[dict[str, Any]] = []
    start = time.perf_counter()
    bar = _Progress(len(cells), progress)
    try:
        for i, (regime, strategy, seed) in enumerate(cells, 1):
            metrics = finished_cell(out, regime, strategy, seed)
            if metrics is None:
                source_model = source.train_source(cfg, regime, out, data, progress=progress)  # a bar: OVER is long
                run_dir = cell_dir(out, regime, strategy, seed)
                metrics = {**transfer.run_transfer(cfg, strategy, seed, source_model, run_dir, data), "regime": regime}
            results.append(metrics)
            bar.done(i, (regime, strategy, seed), metrics)
            if i < len(cells):  # a partial table after every cell: an interrupted grid still leaves one to read
                write_results(results, out, cfg, wall_seconds=time.perf_counter() - start, cells_total=len(cells))
    finally:
        bar.close()
    write_results(results, out, cfg, wall_seconds=time.perf_counter() - start, cells_total=len(cells))
    return results
