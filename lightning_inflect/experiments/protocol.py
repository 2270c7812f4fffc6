"""The tuned protocol's decisions, as pure functions of the runs' ``metrics.json`` records.

- :func:`choose_lr`: a strategy's learning rate, the best validation accuracy of its tuning runs (one per rate, on
  the tuning seed); the test set plays no part.
- :func:`comparisons`: each selective strategy against the references (``random-lora``, ``uniform-lora``,
  ``full``), paired by seed (:func:`~lightning_inflect.experiments.stats.paired_difference`).
- :func:`claim_verdicts`: one verdict per claim of the paper, in our operational terms (:data:`CLAIMS`), for each
  SKI variant (:data:`SKI_VARIANTS`).
- :func:`source_gap`: whether the UNDER source model is clearly under-trained (SST-2 dev accuracy below OVER's).

Run records are dicts with at least ``regime``, ``strategy``, ``seed`` and the accuracies (``val_acc``,
``val_acc_dedup``, ``test_acc``, ``test_acc_dedup``); tuning runs also have ``lr``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from lightning_inflect.experiments.stats import PairedDifference, Verdict, paired_difference, verdict

__all__ = [
    "CLAIMS",
    "HEADLINE",
    "METRICS",
    "REFERENCES",
    "SKI_VARIANTS",
    "Claim",
    "choose_lr",
    "claim_verdicts",
    "comparisons",
    "lr_choice",
    "per_seed",
    "source_gap",
]

Record = dict[str, Any]

HEADLINE = "test_acc_dedup"
"""The headline accuracy: the Rotten Tomatoes test sentences that SST-2 train does not hold."""
METRICS = (HEADLINE, "test_acc")
"""The accuracies compared, headline first."""
REFERENCES = ("random-lora", "uniform-lora", "full")
"""What every selective strategy is compared with: LoRA on random blocks, LoRA on every block, full fine-tuning."""
SKI_VARIANTS = ("inflection-lora", "inflection-band-lora")
"""SKI's two selections: the ``k`` best blocks, and the local maxima with a band (the paper's description)."""


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def choose_lr(accuracy_by_lr: dict[float, float | None]) -> float | None:
    """The rate with the highest validation accuracy, ties to the lower rate; None when no rate has an accuracy.

    Example:
        >>> choose_lr({1e-3: 0.70, 1e-4: 0.75, 3e-4: 0.75})
        0.0001
        >>> choose_lr({1e-4: float("nan")}) is None
        True
    """
    rated = [(lr, acc) for lr, acc in accuracy_by_lr.items() if _finite(acc)]
    if not rated:
        return None
    return min(rated, key=lambda item: (-float(item[1]), item[0]))[0]  # type: ignore[arg-type]


def lr_choice(tuning: Sequence[Record], regime: str, strategy: str, rates: Sequence[float], select_on: str) -> Record:
    """The choice of one strategy's rate in one regime from its tuning runs.

    Returns:
        ``regime``, ``strategy``, ``rates``, ``val`` (rate -> ``select_on`` accuracy, None while a run is
        missing), ``val_acc`` and ``val_acc_dedup`` (rate -> both accuracies), ``select_on``, ``tuning_seed`` and
        ``chosen_lr`` (None until every rate has run).

    Example:
        >>> runs = [{"regime": "over", "strategy": "full", "lr": 1e-5, "seed": 9, "val_acc": 0.8, "val_acc_dedup": 0.7},
        ...         {"regime": "over", "strategy": "full", "lr": 3e-5, "seed": 9, "val_acc": 0.9, "val_acc_dedup": 0.6}]
        >>> c = lr_choice(runs, "over", "full", [1e-5, 3e-5], "val_acc_dedup")
        >>> c["chosen_lr"], c["val"]
        (1e-05, {1e-05: 0.7, 3e-05: 0.6})
        >>> lr_choice(runs, "over", "full", [1e-5, 3e-5, 1e-4], "val_acc_dedup")["chosen_lr"] is None
        True
    """
    mine = {float(m["lr"]): m for m in tuning if m["regime"] == regime and m["strategy"] == strategy}
    val = {lr: (mine[lr].get(select_on) if lr in mine else None) for lr in rates}
    complete = all(lr in mine for lr in rates)
    return {
        "regime": regime,
        "strategy": strategy,
        "rates": list(rates),
        "val": val,
        "val_acc": {lr: mine[lr].get("val_acc") if lr in mine else None for lr in rates},
        "val_acc_dedup": {lr: mine[lr].get("val_acc_dedup") if lr in mine else None for lr in rates},
        "select_on": select_on,
        "tuning_seed": next((m["seed"] for m in mine.values()), None),
        "chosen_lr": choose_lr(val) if complete else None,
    }


def per_seed(runs: Iterable[Record], regime: str, strategy: str, metric: str) -> dict[int, float]:
    """seed -> ``metric`` of one regime and strategy's runs (runs without a finite value left out).

    Example:
        >>> per_seed([{"regime": "over", "strategy": "full", "seed": 1, "test_acc": 0.8}], "over", "full", "test_acc")
        {1: 0.8}
    """
    return {
        int(m["seed"]): float(m[metric])
        for m in runs
        if m["regime"] == regime and m["strategy"] == strategy and _finite(m.get(metric))
    }


def comparisons(
    runs: Sequence[Record],
    regimes: Sequence[str],
    strategies: Sequence[str],
    selective: Sequence[str],
    references: Sequence[str] = REFERENCES,
    metrics: Sequence[str] = METRICS,
    confidence: float = 0.95,
) -> list[Record]:
    """Every selective strategy against every reference, per regime and metric: the paired difference by seed.

    Rows are ``regime``, ``strategy``, ``reference``, ``metric`` and the fields of
    :class:`~lightning_inflect.experiments.stats.PairedDifference` (``mean``, ``low``, ``high``, ``sd``, ``n``,
    ``seeds``, ``confidence``, ``method``); only pairs where both strategies are in ``strategies``.
    """
    rows = []
    for metric in metrics:
        for regime in regimes:
            for strategy in (s for s in strategies if s in selective):
                for reference in (r for r in references if r != strategy and r in strategies):
                    d = paired_difference(
                        per_seed(runs, regime, strategy, metric), per_seed(runs, regime, reference, metric), confidence
                    )
                    rows.append({"regime": regime, "strategy": strategy, "reference": reference, "metric": metric,
                                 **_as_row(d)})  # fmt: skip
    return rows


def _as_row(d: PairedDifference) -> Record:
    return {"mean": d.mean, "low": d.low, "high": d.high, "sd": d.sd, "n": d.n, "seeds": list(d.seeds),
            "confidence": d.confidence, "method": d.method}  # fmt: skip


@dataclass(frozen=True)
class Claim:
    """A claim of the paper in our operational terms: in ``regime``, SKI LoRA minus each reference has the sign
    ``direction`` (+1 better, -1 worse), with a 95% interval that excludes zero."""

    name: str
    regime: str
    direction: Literal[1, -1]
    references: tuple[str, ...]
    meaning: str


CLAIMS = (
    Claim(
        "OVER benefits",
        "over",
        1,
        ("uniform-lora", "full"),
        "after the OVER source, inflection-layer LoRA beats LoRA on every block and full fine-tuning",
    ),
    Claim(
        "UNDER degrades",
        "under",
        -1,
        ("uniform-lora", "full"),
        "after the UNDER source, inflection-layer LoRA falls behind LoRA on every block and full fine-tuning",
    ),
    Claim(
        "inflection beats other placements",
        "over",
        1,
        ("random-lora", "cka-lora", "grad-lora"),
        "after the OVER source, inflection-layer LoRA beats LoRA on blocks chosen at random, by CKA importance and by"
        " gradient norm",
    ),
)
"""The paper's three claims as this study tests them (our definitions: the paper gives no operational form)."""


def claim_verdicts(
    runs: Sequence[Record],
    strategies: Sequence[str],
    claims: Sequence[Claim] = CLAIMS,
    variants: Sequence[str] = SKI_VARIANTS,
    metrics: Sequence[str] = METRICS,
    confidence: float = 0.95,
) -> list[Record]:
    """One verdict per claim, SKI variant and metric (:func:`~lightning_inflect.experiments.stats.verdict`).

    A reference missing from ``strategies`` is left out of the claim; a claim with none is ``"not tested"``.

    Example:
        >>> runs = [{"regime": "over", "strategy": s, "seed": i, "test_acc": acc + 0.001 * i}
        ...         for s, acc in (("inflection-lora", 0.80), ("uniform-lora", 0.75), ("full", 0.70)) for i in range(3)]
        >>> v = claim_verdicts(runs, ["full", "uniform-lora", "inflection-lora"], variants=["inflection-lora"],
        ...                    metrics=["test_acc"])
        >>> [r["verdict"] for r in v]  # OVER benefits; UNDER has no runs; no other placement ran
        ['supported', 'not tested', 'not tested']
    """
    rows = []
    for claim in claims:
        for variant in (v for v in variants if v in strategies):
            for metric in metrics:
                mine = per_seed(runs, claim.regime, variant, metric)
                diffs: list[tuple[str, PairedDifference]] = [
                    (ref, paired_difference(mine, per_seed(runs, claim.regime, ref, metric), confidence))
                    for ref in claim.references
                    if ref in strategies
                ]
                result: Verdict = verdict([d for _, d in diffs], claim.direction)
                rows.append(
                    {
                        "claim": claim.name,
                        "meaning": claim.meaning,
                        "regime": claim.regime,
                        "strategy": variant,
                        "metric": metric,
                        "verdict": result,
                        "differences": [{"reference": ref, **_as_row(d)} for ref, d in diffs],
                    }
                )
    return rows


def source_gap(sources: Sequence[Record], min_gap: float) -> Record | None:
    """The SST-2 dev accuracy of the OVER source minus the UNDER one's, and whether it reaches ``min_gap``.

    Example:
        >>> source_gap([{"regime": "under", "sst2_dev_acc": 0.70}, {"regime": "over", "sst2_dev_acc": 0.83}], 0.03)
        {'under': 0.7, 'over': 0.83, 'gap': 0.13, 'min_gap': 0.03, 'ok': True}
        >>> source_gap([{"regime": "under", "sst2_dev_acc": 0.885}], 0.03) is None
        True
    """
    acc = {s["regime"]: s.get("sst2_dev_acc") for s in sources}
    if not (_finite(acc.get("under")) and _finite(acc.get("over"))):
        return None
    gap = round(float(acc["over"]) - float(acc["under"]), 10)  # type: ignore[arg-type]
    return {"under": acc["under"], "over": acc["over"], "gap": gap, "min_gap": min_gap, "ok": gap >= min_gap}
