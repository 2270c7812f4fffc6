"""Paired differences, t intervals and verdicts against naive references (hand formulas, numeric integration)."""

import math
import random

import pytest

from lightning_inflect.experiments.protocol import choose_lr, claim_verdicts, comparisons, source_gap
from lightning_inflect.experiments.stats import PairedDifference, paired_difference, t_cdf, t_quantile, verdict

# Two-sided 95% critical values of Student's t (printed tables), by degrees of freedom.
T_TABLE = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 9: 2.262, 20: 2.086, 30: 2.042, 120: 1.980}


def _t_pdf(x: float, df: int) -> float:
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    return math.exp(log_c - (df + 1) / 2 * math.log1p(x * x / df))


def _t_cdf_by_simpson(t: float, df: int, intervals: int = 20000) -> float:
    """0.5 + the integral of the density from 0 to t (Simpson's rule): a reference that shares no code."""
    h = t / intervals
    total = _t_pdf(0, df) + _t_pdf(t, df)
    total += sum((4 if i % 2 else 2) * _t_pdf(i * h, df) for i in range(1, intervals))
    return 0.5 + total * h / 3


@pytest.mark.parametrize(("df", "critical"), sorted(T_TABLE.items()))
def test_t_quantile_matches_printed_tables(df, critical):
    assert t_quantile(0.975, df) == pytest.approx(critical, abs=5e-4)
    assert t_quantile(0.025, df) == pytest.approx(-critical, abs=5e-4)


@pytest.mark.parametrize("df", [1, 2, 4, 7, 30])
@pytest.mark.parametrize("t", [0.3, 1.0, 2.5, 6.0])
def test_t_cdf_matches_numeric_integration(t, df):
    assert t_cdf(t, df) == pytest.approx(_t_cdf_by_simpson(t, df), abs=1e-9)
    assert t_cdf(-t, df) == pytest.approx(1 - t_cdf(t, df), abs=1e-12)


def test_paired_difference_equals_the_hand_formula():
    rng = random.Random(0)
    a = {s: 0.8 + rng.gauss(0, 0.02) for s in range(5)}
    b = {s: a[s] - 0.01 + rng.gauss(0, 0.01) for s in range(5)}
    d = paired_difference(a, b)
    diffs = [a[s] - b[s] for s in range(5)]
    mean, sd = sum(diffs) / 5, math.sqrt(sum((x - sum(diffs) / 5) ** 2 for x in diffs) / 4)
    half = 2.7764451 * sd / math.sqrt(5)  # t(0.975, 4)
    assert (d.n, d.seeds, d.method) == (5, (0, 1, 2, 3, 4), "t")
    assert (d.mean, d.sd) == (pytest.approx(mean, abs=1e-15), pytest.approx(sd, rel=1e-12))
    assert (d.low, d.high) == (pytest.approx(mean - half, abs=1e-9), pytest.approx(mean + half, abs=1e-9))


def test_pairing_removes_what_the_seeds_share():
    """A seed effect common to both strategies (a lucky data order) changes neither the difference nor its interval."""
    a, b = {0: 0.80, 1: 0.82, 2: 0.79, 3: 0.81}, {0: 0.78, 1: 0.81, 2: 0.78, 3: 0.795}
    shift = {0: 0.05, 1: -0.04, 2: 0.02, 3: 0.0}
    plain = paired_difference(a, b)
    shifted = paired_difference({s: a[s] + shift[s] for s in a}, {s: b[s] + shift[s] for s in b})
    assert (shifted.mean, shifted.low, shifted.high) == pytest.approx((plain.mean, plain.low, plain.high), abs=1e-12)
    assert plain.excludes_zero  # unpaired, the seed-to-seed spread would swamp a 1-point difference


def test_seeds_missing_or_nan_on_one_side_are_left_out():
    d = paired_difference({0: 0.8, 1: 0.9, 2: math.nan, 3: 0.7}, {0: 0.7, 1: 0.7, 2: 0.5, 4: 0.1})
    assert (d.seeds, d.mean) == ((0, 1), pytest.approx(0.15))
    one = paired_difference({0: 0.8}, {0: 0.7})
    assert one.n == 1 and math.isnan(one.low) and math.isnan(one.high) and math.isnan(one.sd)
    none = paired_difference({}, {0: 0.7})
    assert none.n == 0 and math.isnan(none.mean)


def test_the_interval_covers_the_true_difference_95_percent_of_the_time():
    rng = random.Random(1)
    trials, covered = 3000, 0
    for _ in range(trials):
        a = {s: rng.gauss(0.01, 0.02) for s in range(5)}
        d = paired_difference(a, dict.fromkeys(range(5), 0.0))
        covered += d.low <= 0.01 <= d.high
    assert 0.935 < covered / trials < 0.965


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match="`confidence` to be in"):
        paired_difference({0: 1.0}, {0: 1.0}, confidence=95)
    with pytest.raises(ValueError, match="`p` to be in"):
        t_quantile(1.0, 3)
    with pytest.raises(ValueError, match="`df` to be a positive"):
        t_cdf(1.0, 0)
    with pytest.raises(ValueError, match="`direction` to be 1 or -1"):
        verdict([], 0)  # type: ignore[arg-type]


def _diff(low: float, high: float, n: int = 5) -> PairedDifference:
    return PairedDifference((low + high) / 2, low, high, 0.01, n, tuple(range(n)), 0.95)


@pytest.mark.parametrize(
    ("intervals", "direction", "expected"),
    [
        ([(0.01, 0.03)], 1, "supported"),
        ([(0.01, 0.03), (0.002, 0.01)], 1, "supported"),
        ([(0.01, 0.03), (-0.01, 0.01)], 1, "not shown"),
        ([(0.01, 0.03), (-0.03, -0.01)], 1, "contradicted"),
        ([(-0.03, -0.01)], -1, "supported"),
        ([(0.01, 0.03)], -1, "contradicted"),
        ([(-0.01, 0.01)], -1, "not shown"),
        ([], 1, "not tested"),
    ],
)
def test_verdicts(intervals, direction, expected):
    assert verdict([_diff(lo, hi) for lo, hi in intervals], direction) == expected
    assert verdict([*[_diff(lo, hi) for lo, hi in intervals], _diff(0.1, 0.2, n=1)], direction) == "not tested"


def test_choose_lr_takes_the_best_and_ties_to_the_lower_rate():
    assert choose_lr({1e-4: 0.71, 3e-4: 0.74, 1e-3: 0.70}) == 3e-4
    assert choose_lr({1e-3: 0.74, 1e-4: 0.74}) == 1e-4
    assert choose_lr({1e-3: 0.74, 1e-4: math.nan, 3e-4: None}) == 1e-3
    assert choose_lr({}) is None


def _runs(accs: dict[tuple[str, str], list[float]]) -> list[dict]:
    return [
        {"regime": r, "strategy": s, "seed": i, "test_acc": v, "test_acc_dedup": v - 0.05}
        for (r, s), values in accs.items()
        for i, v in enumerate(values)
    ]


def test_comparisons_and_verdicts_follow_the_runs():
    runs = _runs({
        ("over", "inflection-lora"): [0.82, 0.83, 0.81, 0.84, 0.82],
        ("over", "uniform-lora"): [0.80, 0.81, 0.79, 0.82, 0.80],  # 2 points below, every seed
        ("over", "full"): [0.78, 0.83, 0.76, 0.84, 0.80],  # as good on average, noisy
        ("over", "random-lora"): [0.82, 0.83, 0.81, 0.84, 0.82],  # equal
        ("under", "inflection-lora"): [0.70, 0.71, 0.69, 0.72, 0.70],
        ("under", "uniform-lora"): [0.72, 0.73, 0.71, 0.74, 0.72],
        ("under", "full"): [0.75, 0.76, 0.74, 0.77, 0.75],
    })  # fmt: skip
    strategies = ["full", "uniform-lora", "inflection-lora", "random-lora"]
    rows = comparisons(runs, ["under", "over"], strategies, ["inflection-lora", "random-lora"])
    pick = {(r["metric"], r["regime"], r["strategy"], r["reference"]): r for r in rows}
    over_uniform = pick[("test_acc", "over", "inflection-lora", "uniform-lora")]
    assert (over_uniform["mean"], over_uniform["low"], over_uniform["high"]) == pytest.approx((0.02, 0.02, 0.02))
    assert pick[("test_acc", "over", "inflection-lora", "random-lora")]["mean"] == pytest.approx(0.0)
    assert ("test_acc", "over", "random-lora", "random-lora") not in pick  # no strategy against itself
    assert len(rows) == 2 * 2 * (3 + 2)  # metrics x regimes x (SKI vs 3 references + random vs 2)
    verdicts = {(v["claim"], v["metric"]): v["verdict"] for v in claim_verdicts(runs, strategies)}
    assert verdicts[("OVER benefits", "test_acc")] == "not shown"  # beats uniform LoRA, not full fine-tuning
    assert verdicts[("UNDER degrades", "test_acc_dedup")] == "supported"
    assert verdicts[("inflection beats other placements", "test_acc")] == "not shown"


def test_source_gap_flags_a_source_that_is_not_under_trained():
    paper_h200 = [{"regime": "under", "sst2_dev_acc": 0.885}, {"regime": "over", "sst2_dev_acc": 0.890}]
    gap = source_gap(paper_h200, 0.03)
    assert gap is not None and not gap["ok"] and gap["gap"] == pytest.approx(0.005)
