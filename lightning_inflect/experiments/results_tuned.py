"""The tables of the tuned protocol (a learning rate per strategy chosen on validation): ``results.md`` sections,
``runs.csv`` (every tuning and evaluation run) and ``comparisons.csv`` (the paired differences).

Everything here is computed from the runs' records by :mod:`lightning_inflect.experiments.protocol`; nothing trains.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning_inflect.experiments.config import ExperimentConfig
from lightning_inflect.experiments.protocol import (
    CLAIMS,
    HEADLINE,
    REFERENCES,
    claim_verdicts,
    comparisons,
    lr_choice,
    source_gap,
)
from lightning_inflect.experiments.strategies import STRATEGIES

__all__ = ["format_difference", "selective_strategies", "tuned_markdown", "tuned_summary", "write_tuned_csv"]

Record = dict[str, Any]
_METRIC_NAMES = {"test_acc_dedup": "test sentences SST-2 never saw (headline)", "test_acc": "whole test set"}


def _pct(value: Any, digits: int = 2) -> str:
    return "n/a" if not isinstance(value, (int, float)) or math.isnan(value) else f"{100 * value:.{digits}f}"


def format_difference(row: Record) -> str:
    """A paired difference in percentage points with its interval and the number of seeds.

    Example:
        >>> format_difference({"mean": 0.0123, "low": -0.004, "high": 0.0286, "n": 5})
        '+1.23 [-0.40, +2.86] (n=5)'
        >>> format_difference({"mean": 0.01, "low": float("nan"), "high": float("nan"), "n": 1})
        '+1.00 (n=1, no interval)'
        >>> format_difference({"mean": float("nan"), "low": float("nan"), "high": float("nan"), "n": 0})
        'n/a'
    """
    if row["n"] == 0:
        return "n/a"
    if row["n"] < 2:
        return f"{100 * row['mean']:+.2f} (n={row['n']}, no interval)"
    return f"{100 * row['mean']:+.2f} [{100 * row['low']:+.2f}, {100 * row['high']:+.2f}] (n={row['n']})"


def selective_strategies(strategies: Sequence[str]) -> list[str]:
    """The strategies of ``strategies`` whose blocks a selector chooses (unregistered ones left out)."""
    return [s for s in strategies if s in STRATEGIES and STRATEGIES[s].selective]


def tuned_summary(
    runs: Sequence[Record], tuning: Sequence[Record], sources: Sequence[Record], cfg: ExperimentConfig
) -> Record:
    """What ``results.json`` adds under the tuned protocol: rate choices, source gap, comparisons, verdicts, blocks."""
    strategies = cfg.strategy_list()
    choices = [lr_choice(tuning, r, s, cfg.lr_grid(s), cfg.select_on) for r in cfg.regimes for s in strategies]
    blocks = [
        {"regime": m["regime"], "strategy": m["strategy"], "seed": m["seed"], "role": m.get("role", "eval"),
         "lr": m.get("lr"), "layers": m.get("layers"), "reason": m.get("reason")}
        for m in [*tuning, *runs] if m["strategy"] in selective_strategies(strategies)
    ]  # fmt: skip
    return {
        "protocol": "tuned",
        "lr_choice": choices,
        "sources": list(sources),
        "source_gap": source_gap(sources, cfg.min_source_gap),
        "comparisons": comparisons(runs, cfg.regimes, strategies, selective_strategies(strategies)),
        "verdicts": claim_verdicts(runs, strategies),
        "blocks": blocks,
    }


def _sources_md(extra: Record) -> list[str]:
    lines = ["### Source models (SST-2)", "", "| regime | budget | steps | epochs | SST-2 dev acc (%) |",
             "| --- | --- | ---: | ---: | ---: |"]  # fmt: skip
    for s in extra["sources"]:
        lines.append(
            f"| {s['regime'].upper()} | {s.get('budget', 'epochs')} | {s.get('steps')} | {s.get('epochs')} | "
            f"{_pct(s.get('sst2_dev_acc'), 1)} |"
        )
    gap = extra["source_gap"]
    if gap is None:
        lines += ["", "The gap between the source models is not known yet (a source model is missing)."]
    else:
        points, asked = f"{100 * gap['gap']:.1f}", f"{100 * gap['min_gap']:.0f}"
        lines.append("")
        lines.append(
            f"OVER is {points} points above UNDER on SST-2 dev (at least {asked} asked): the UNDER source is"
            " under-trained."
            if gap["ok"]
            else f"**Flag: OVER is only {points} points above UNDER on SST-2 dev (at least {asked} asked): the UNDER"
            " source is not clearly under-trained.**"
        )
    return [*lines, ""]


def _choices_md(extra: Record, cfg: ExperimentConfig, counts: Record) -> list[str]:
    n = counts.get("target_val_dedup" if cfg.select_on == "val_acc_dedup" else "target_val")
    which = (
        f"the {n} validation sentences absent from SST-2 train"
        if cfg.select_on == "val_acc_dedup"
        else f"all {n} validation sentences"
    )
    noise = (
        f" On {n} sentences one standard error of an accuracy near 70% is {100 * math.sqrt(0.21 / n):.1f} points:"
        " between rates whose accuracies are closer than that, the choice is partly chance."
        if isinstance(n, int) and n > 0
        else ""
    )
    lines = [
        "### Learning rates chosen on validation",
        "",
        f"Each strategy trained once per rate on seed {cfg.tuning_seed} (not an evaluation seed); the rate with the"
        f" best Rotten Tomatoes validation accuracy on {which} was kept (ties to the lower rate). The test set is not"
        f" evaluated in these runs.{noise}",
        "",
        "| regime | strategy | validation acc per rate, % (no overlap / all) | chosen rate |",
        "| --- | --- | --- | ---: |",
    ]
    for c in extra["lr_choice"]:
        per_rate = "; ".join(
            f"{lr:g}: {_pct(c['val_acc_dedup'][lr], 1)} / {_pct(c['val_acc'][lr], 1)}"
            if c["val_acc"][lr] is not None
            else f"{lr:g}: not run"
            for lr in c["rates"]
        )
        chosen = f"{c['chosen_lr']:g}" if c["chosen_lr"] is not None else "not yet"
        lines.append(f"| {c['regime'].upper()} | {c['strategy']} | {per_rate} | {chosen} |")
    return [*lines, ""]


def _results_md(rows: Sequence[Record]) -> list[str]:
    lines = [
        "### Results (accuracy %, mean +- std over the evaluation seeds)",
        "",
        "| regime | strategy | rate | seeds | val acc (no overlap) | test acc (no SST-2 overlap) | test acc (whole test"
        " set) | trainable params | train s |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['regime'].upper()} | {r['strategy']} | {r['lr']} | {r['seeds']} | "
            f"{_pct(r['val_acc_dedup_mean'])} +- {_pct(r['val_acc_dedup_std'])} | "
            f"{_pct(r['test_acc_dedup_mean'])} +- {_pct(r['test_acc_dedup_std'])} | "
            f"{_pct(r['test_acc_mean'])} +- {_pct(r['test_acc_std'])} | {int(r['trainable_params']):,} | "
            f"{r['train_seconds_mean']:.0f} |"
        )
    return [*lines, ""]


def _blocks_md(extra: Record, cfg: ExperimentConfig) -> list[str]:
    seeds = [cfg.tuning_seed, *cfg.seeds]
    lines = [
        "### Blocks chosen per seed",
        "",
        f"The blocks each selective strategy trained; seed {cfg.tuning_seed} is the tuning seed (its diagnosis, at a"
        " zero learning rate, is the same at every rate).",
        "",
        "| regime | strategy | " + " | ".join(f"seed {s}" for s in seeds) + " |",
        "| --- | --- | " + " | ".join("---" for _ in seeds) + " |",
    ]
    for regime in cfg.regimes:
        for strategy in selective_strategies(cfg.strategy_list()):
            by_seed = {
                b["seed"]: b["layers"] for b in extra["blocks"] if (b["regime"], b["strategy"]) == (regime, strategy)
            }
            cells = [",".join(map(str, by_seed[s])) if by_seed.get(s) is not None else "-" for s in seeds]
            lines.append(f"| {regime.upper()} | {strategy} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _comparisons_md(extra: Record, cfg: ExperimentConfig) -> list[str]:
    refs = [r for r in REFERENCES if r in cfg.strategy_list()]
    lines = [
        "### Paired differences (percentage points, strategy minus reference)",
        "",
        "Paired by seed (both strategies share the data order, the head's initialisation and the selector's seed):"
        " the mean of the per-seed differences and its 95% Student t interval over the seeds both finished (n - 1"
        " degrees of freedom). One interval per comparison, not corrected for the number of comparisons.",
        "",
    ]
    for metric, title in _METRIC_NAMES.items():
        header = "| regime | strategy | " + " | ".join(f"vs {r}" for r in refs) + " |"
        lines += [
            f"#### {title[0].upper()}{title[1:]}",
            "",
            header,
            "| --- | --- | " + " | ".join("---" for _ in refs) + " |",
        ]
        for regime in cfg.regimes:
            for strategy in selective_strategies(cfg.strategy_list()):
                rows = {c["reference"]: c for c in extra["comparisons"]
                        if (c["regime"], c["strategy"], c["metric"]) == (regime, strategy, metric)}  # fmt: skip
                cells = [format_difference(rows[r]) if r in rows else "-" for r in refs]
                lines.append(f"| {regime.upper()} | {strategy} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def _verdicts_md(extra: Record, partial: bool) -> list[str]:
    lines = [
        "### Verdicts" + (" (partial: from the finished runs only)" if partial else ""),
        "",
        "A claim is *supported* when every interval lies on its side of zero, *contradicted* when one lies on the"
        " other side, *not shown* otherwise (an interval holds zero), *not tested* when a strategy has fewer than 2"
        " seeds.",
        "",
    ]
    lines += [f"- **{c.name}**: {c.meaning}." for c in CLAIMS]
    lines += ["", "| claim | SKI variant | headline (no SST-2 overlap) | whole test set | differences, headline |",
              "| --- | --- | --- | --- | --- |"]  # fmt: skip
    by_key = {(v["claim"], v["strategy"], v["metric"]): v for v in extra["verdicts"]}
    for (claim, strategy, metric), v in by_key.items():
        if metric != HEADLINE:
            continue
        whole = by_key.get((claim, strategy, "test_acc"), {}).get("verdict", "-")
        diffs = "; ".join(f"vs {d['reference']} {format_difference(d)}" for d in v["differences"]) or "-"
        lines.append(f"| {claim} | {strategy} | {v['verdict']} | {whole} | {diffs} |")
    return [*lines, ""]


def tuned_markdown(
    rows: Sequence[Record], extra: Record, cfg: ExperimentConfig, counts: Record, partial: bool
) -> list[str]:
    """The ``results.md`` sections of the tuned protocol (sources, rates, results, blocks, differences, verdicts)."""
    return [
        *_sources_md(extra),
        *_choices_md(extra, cfg, counts),
        *_results_md(rows),
        *_blocks_md(extra, cfg),
        *_comparisons_md(extra, cfg),
        *_verdicts_md(extra, partial),
    ]


_RUN_FIELDS = ("regime", "strategy", "role", "seed", "lr", "val_acc", "val_acc_dedup", "test_acc", "test_acc_dedup",
               "layers", "trainable_params", "train_seconds")  # fmt: skip
_COMPARISON_FIELDS = ("metric", "regime", "strategy", "reference", "n", "mean", "low", "high", "sd", "seeds",
                      "confidence", "method")  # fmt: skip


def write_tuned_csv(out: Path, runs: Sequence[Record], tuning: Sequence[Record], extra: Record) -> None:
    """``runs.csv`` (every tuning and evaluation run) and ``comparisons.csv`` (every paired difference)."""
    with open(out / "runs.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(_RUN_FIELDS), extrasaction="ignore")
        writer.writeheader()
        for m in [*tuning, *runs]:
            layers = m.get("layers")
            writer.writerow({**m, "role": m.get("role", "eval"),
                             "layers": "/".join(map(str, layers)) if layers is not None else ""})  # fmt: skip
    with open(out / "comparisons.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(_COMPARISON_FIELDS), extrasaction="ignore")
        writer.writeheader()
        for c in extra["comparisons"]:
            writer.writerow({**c, "seeds": " ".join(map(str, c["seeds"]))})
