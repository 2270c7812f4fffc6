"""The grid's tables: ``results.json`` (every run and the summary), ``results.csv`` and ``results.md``."""

from __future__ import annotations

import csv
import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning_inflect.experiments.config import ExperimentConfig

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


def summary_rows(results: Sequence[dict[str, Any]], cfg: ExperimentConfig) -> list[dict[str, Any]]:
    """One row per regime and strategy (in ``cfg``'s order) with runs: mean +- std over seeds, blocks used."""
    rows = []
    for regime in cfg.regimes:
        for strategy in cfg.strategy_list():
            runs = [m for m in results if m["regime"] == regime and m["strategy"] == strategy]
            if not runs:
                continue
            acc, acc_sd = mean_std([m["test_acc"] for m in runs])
            dd, dd_sd = mean_std([m["test_acc_dedup"] for m in runs])
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


def results_markdown(
    results: Sequence[dict[str, Any]],
    rows: Sequence[dict[str, Any]],
    cfg: ExperimentConfig,
    wall_seconds: float | None,
    cells_total: int,
) -> str:
    """``results.md``: a partial-grid line when cells are missing, the table, and a line about data and time."""
    lines = [] if len(results) >= cells_total else [f"**Partial: {len(results)} of {cells_total} cells finished.**", ""]
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
) -> None:
    """``results.json`` (every run), ``results.csv`` and ``results.md`` (mean +- std per regime and strategy).

    ``cells_total`` is the grid's size: when fewer runs than that are given, the tables say they are partial
    (``results.json`` has ``"complete": false`` and ``results.md`` a line naming the finished and total cells).
    ``wall_seconds`` is None when the runs were collected from several processes: the tables then give the
    summed run time instead of a wall time.
    """
    cells_total = len(results) if cells_total is None else cells_total
    rows = summary_rows(results, cfg)
    summary = {
        "runs": results,
        "summary": rows,
        "wall_seconds": wall_seconds,
        "complete": len(results) >= cells_total,
        "cells_done": len(results),
        "cells_total": cells_total,
    }
    (out / "results.json").write_text(json.dumps(summary, indent=2))
    with open(out / "results.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["regime"])
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "layers": " ".join("/".join(map(str, t)) for t in row["layers"])})
    (out / "results.md").write_text(results_markdown(results, rows, cfg, wall_seconds, cells_total))
