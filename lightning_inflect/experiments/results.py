"""The grid's tables: ``results.json`` (every run and the summary), ``results.csv`` and ``results.md``.

Under the tuned protocol (``lr_grids`` set) they also hold the tuning runs, the rate chosen per strategy, the source
models' SST-2 dev accuracy, the blocks chosen per seed, the paired differences and the verdicts
(:mod:`lightning_inflect.experiments.results_tuned`), and ``runs.csv`` / ``comparisons.csv`` are written too.
"""

from __future__ import annotations

import csv
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning_inflect.experiments.config import ExperimentConfig, write_json

__all__ = ["mean_std", "results_markdown", "summary_rows", "write_results"]


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation of the non-NaN values (0 for one value, NaN for none).

    Example:
        >>> mean_std([0.5, 0.7, float("nan")])
        (0.6, 0.14142135623730948)
        >>> mean_std([0.5])
        (0.5, 0.0)
    """
    kept = [v for v in values if not math.isnan(v)]
    if not kept:
        return math.nan, math.nan
    return statistics.fmean(kept), (statistics.stdev(kept) if len(kept) > 1 else 0.0)


def _num(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


def summary_rows(results: Sequence[dict[str, Any]], cfg: ExperimentConfig) -> list[dict[str, Any]]:
    """One row per regime and strategy (in ``cfg``'s order) with runs: mean +- std over seeds (test, and validation
    where the runs measured it), the learning rate, blocks used."""
    rows = []
    for regime in cfg.regimes:
        for strategy in cfg.strategy_list():
            runs = [m for m in results if m["regime"] == regime and m["strategy"] == strategy]
            if not runs:
                continue
            acc, acc_sd = mean_std([m["test_acc"] for m in runs])
            dd, dd_sd = mean_std([m["test_acc_dedup"] for m in runs])
            va, va_sd = mean_std([_num(m.get("val_acc")) for m in runs])
            vd, vd_sd = mean_std([_num(m.get("val_acc_dedup")) for m in runs])
            rates = sorted({m["lr"] for m in runs if m.get("lr") is not None})
            rows.append(
                {
                    "regime": regime,
                    "strategy": strategy,
                    "lr": rates[0] if len(rates) == 1 else (rates or None),
                    "seeds": len(runs),
                    "test_acc_mean": acc,
                    "test_acc_std": acc_sd,
                    "test_acc_dedup_mean": dd,
                    "test_acc_dedup_std": dd_sd,
                    "val_acc_mean": va,
                    "val_acc_std": va_sd,
                    "val_acc_dedup_mean": vd,
                    "val_acc_dedup_std": vd_sd,
                    "trainable_params": statistics.median(m["trainable_params"] for m in runs),
                    "train_seconds_mean": statistics.fmean(m["train_seconds"] for m in runs),
                    "layers": sorted({tuple(m["layers"]) for m in runs if m.get("layers") is not None}),
                }
            )
    return rows


def _data_line(results: Sequence[dict[str, Any]], cfg: ExperimentConfig, wall_seconds: float | None) -> str:
    counts = results[0]["counts"] if results else {}
    time_note = (
        f"Wall time {wall_seconds / 60:.1f} min."
        if wall_seconds is not None
        else f"Summed run time {sum(m['train_seconds'] for m in results) / 60:.1f} min (collected cells)."
    )
    return (
        f"Data: {counts.get('source_train')} SST-2 training sentences, {counts.get('target_train')} RT training "
        f"sentences ({counts.get('target_train_removed_as_overlap', 0)} removed as overlap), RT test "
        f"{counts.get('target_test')} sentences of which {counts.get('target_test_overlap')} occur in SST-2 train "
        f"(the dedup column uses the other {counts.get('target_test_dedup')}). Mean +- std over seeds "
        f"{cfg.seeds}. {time_note}"
    )


def _partial_line(done: int, total: int, tuning_done: int, tuning_total: int) -> list[str]:
    """The first line of a partial ``results.md`` (nothing when every run is finished).

    Example:
        >>> _partial_line(3, 4, 0, 0)
        ['**Partial: 3 of 4 cells finished.**', '']
        >>> _partial_line(4, 4, 2, 6)[0][:70]
        '**Partial: tuning 2 of 6 runs and evaluation 4 of 4 runs finished. Not'
    """
    if done >= total and tuning_done >= tuning_total:
        return []
    if not tuning_total:
        return [f"**Partial: {done} of {total} cells finished.**", ""]
    return [
        f"**Partial: tuning {tuning_done} of {tuning_total} runs and evaluation {done} of {total} runs finished. Not"
        " the final result: every table and verdict below covers the finished runs only.**",
        "",
    ]


def results_markdown(
    results: Sequence[dict[str, Any]],
    rows: Sequence[dict[str, Any]],
    cfg: ExperimentConfig,
    wall_seconds: float | None,
    cells_total: int,
) -> str:
    """``results.md``: a partial-grid line when cells are missing, the table, and a line about data and time."""
    lines = _partial_line(len(results), cells_total, 0, 0)
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
    return "\n".join([*lines, "", _data_line(results, cfg, wall_seconds)]) + "\n"


def write_results(
    results: list[dict[str, Any]],
    out: Path,
    cfg: ExperimentConfig,
    wall_seconds: float | None,
    cells_total: int | None = None,
    *,
    tuning: list[dict[str, Any]] | None = None,
    tuning_total: int = 0,
    sources: list[dict[str, Any]] | None = None,
) -> None:
    """``results.json`` (every run), ``results.csv`` and ``results.md`` (mean +- std per regime and strategy).

    ``cells_total`` is the grid's size: when fewer runs than that are given, the tables say they are partial
    (``results.json`` has ``"complete": false`` and ``results.md`` a line naming the finished and total cells).
    ``wall_seconds`` is None when the runs were collected from several processes: the tables then give the
    summed run time instead of a wall time. Under the tuned protocol (``cfg.lr_grids``), ``tuning`` holds the
    finished tuning runs of ``tuning_total`` and ``sources`` the source models' ``metrics.json``: the tables then
    hold the sections of :mod:`~lightning_inflect.experiments.results_tuned`.
    """
    from lightning_inflect.experiments.results_tuned import tuned_markdown, tuned_summary, write_tuned_csv

    cells_total = len(results) if cells_total is None else cells_total
    tuning = tuning or []
    rows = summary_rows(results, cfg)
    complete = len(results) >= cells_total and len(tuning) >= tuning_total
    summary: dict[str, Any] = {
        "runs": results,
        "summary": rows,
        "wall_seconds": wall_seconds,
        "run_seconds": sum(m.get("train_seconds", 0.0) for m in [*results, *tuning])
        + sum(s.get("seconds", 0.0) for s in sources or []),
        "complete": complete,
        "cells_done": len(results),
        "cells_total": cells_total,
        "sources": sources or [],
    }
    extra = tuned_summary(results, tuning, sources or [], cfg) if cfg.tuned else None
    if extra is not None:
        summary.update(tuning=tuning, tuning_done=len(tuning), tuning_total=tuning_total, **extra)
    write_json(out / "results.json", summary)
    with open(out / "results.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["regime"])
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "layers": " ".join("/".join(map(str, t)) for t in row["layers"])})
    if extra is None:
        (out / "results.md").write_text(results_markdown(results, rows, cfg, wall_seconds, cells_total))
        return
    write_tuned_csv(out, results, tuning, extra)
    counts = (results or tuning or [{}])[0].get("counts", {})
    lines = [
        *_partial_line(len(results), cells_total, len(tuning), tuning_total),
        *tuned_markdown(rows, extra, cfg, counts, partial=not complete),
        _data_line(results, cfg, wall_seconds),
    ]
    (out / "results.md").write_text("\n".join(lines) + "\n")
