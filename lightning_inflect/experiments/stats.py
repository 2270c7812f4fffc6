"""Paired differences between two strategies over seeds, with a Student t confidence interval, and verdicts.

Two strategies run with the same seeds share the data order, the new head's initialisation and the selector's seed,
so their accuracies are compared seed by seed: the difference ``d_i = acc_A(seed i) - acc_B(seed i)``, its mean
and a t interval over the ``n`` seeds both have finished:

.. math::

    \\bar d \\pm t_{(1 + c)/2,\\, n - 1} \\; s_d / \\sqrt{n}

with ``s_d`` the sample standard deviation of the differences and ``c`` the confidence (0.95). Pure Python (no
scipy): the t quantile comes from the regularised incomplete beta function.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = ["PairedDifference", "Verdict", "paired_difference", "t_cdf", "t_quantile", "verdict"]

Verdict = Literal["supported", "contradicted", "not shown", "not tested"]


def _betacf(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, eps = 1e-300, 1e-15
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        for num in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            break
    return h


def _betai(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function ``I_x(a, b)``."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """The cumulative distribution function of Student's t with ``df`` degrees of freedom.

    Example:
        >>> t_cdf(0.0, 4)
        0.5
        >>> round(t_cdf(2.776445105, 4), 6)
        0.975
    """
    if not df > 0:
        raise ValueError(f"Expected argument `df` to be a positive number but got {df!r}.")
    tail = 0.5 * _betai(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (bisection on :func:`t_cdf`).

    Example:
        >>> round(t_quantile(0.975, 4), 4), round(t_quantile(0.975, 1), 3), round(t_quantile(0.025, 9), 4)
        (2.7764, 12.706, -2.2622)
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"Expected argument `p` to be in (0, 1) but got {p!r}.")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        lo, hi = hi, 2.0 * hi
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


@dataclass(frozen=True)
class PairedDifference:
    """The mean of the per-seed differences A - B and its confidence interval.

    Attributes:
        mean: mean difference (NaN without a common seed).
        low, high: the interval's ends (NaN with fewer than 2 common seeds).
        sd: sample standard deviation of the differences (NaN with fewer than 2).
        n: the number of seeds both have.
        seeds: those seeds, sorted.
        confidence: the interval's confidence level.
        method: how the interval is computed (``"t"``: Student t over the seeds).
    """

    mean: float
    low: float
    high: float
    sd: float
    n: int
    seeds: tuple[int, ...]
    confidence: float
    method: str = "t"

    @property
    def excludes_zero(self) -> bool:
        """Whether the interval lies entirely above or entirely below zero."""
        return self.low > 0 or self.high < 0


def paired_difference(a: Mapping[int, float], b: Mapping[int, float], confidence: float = 0.95) -> PairedDifference:
    """The per-seed difference ``a[seed] - b[seed]`` over the seeds both have (NaN values left out), with a t interval.

    Args:
        a, b: seed -> accuracy of the two strategies.
        confidence: the interval's confidence level, in (0, 1).

    Example:
        >>> d = paired_difference({0: 0.80, 1: 0.82, 2: 0.81, 7: 0.9}, {0: 0.78, 1: 0.79, 2: 0.80})
        >>> d.n, d.seeds, round(d.mean, 6), round(d.sd, 6)
        (3, (0, 1, 2), 0.02, 0.01)
        >>> round(d.low, 5), round(d.high, 5)  # 0.02 -+ t(0.975, 2) * 0.01 / sqrt(3), t = 4.3027
        (-0.00484, 0.04484)
        >>> d.excludes_zero
        False
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"Expected argument `confidence` to be in (0, 1) but got {confidence!r}.")
    seeds = tuple(sorted(s for s in a if s in b and not math.isnan(a[s]) and not math.isnan(b[s])))
    diffs = [a[s] - b[s] for s in seeds]
    n = len(diffs)
    mean = statistics.fmean(diffs) if diffs else math.nan
    if n < 2:
        return PairedDifference(mean, math.nan, math.nan, math.nan, n, seeds, confidence)
    sd = statistics.stdev(diffs)
    half = t_quantile(0.5 + confidence / 2.0, n - 1) * sd / math.sqrt(n)
    return PairedDifference(mean, mean - half, mean + half, sd, n, seeds, confidence)


def verdict(differences: Sequence[PairedDifference], direction: Literal[1, -1]) -> Verdict:
    """One verdict for a claim that every difference has the sign ``direction`` (+1: A better, -1: A worse).

    ``"supported"``: every interval lies on the claimed side of zero; ``"contradicted"``: at least one lies on the
    other side; ``"not shown"``: otherwise (an interval holds zero); ``"not tested"``: no difference, or one with
    fewer than 2 seeds.

    Example:
        >>> up = PairedDifference(0.02, 0.01, 0.03, 0.01, 5, (0, 1, 2, 3, 4), 0.95)
        >>> flat = PairedDifference(0.0, -0.01, 0.01, 0.01, 5, (0, 1, 2, 3, 4), 0.95)
        >>> verdict([up], 1), verdict([up, flat], 1), verdict([up], -1), verdict([], 1)
        ('supported', 'not shown', 'contradicted', 'not tested')
    """
    if direction not in (1, -1):
        raise ValueError(f"Expected argument `direction` to be 1 or -1 but got {direction!r}.")
    if not differences or any(d.n < 2 for d in differences):
        return "not tested"
    if any((d.high < 0) if direction == 1 else (d.low > 0) for d in differences):
        return "contradicted"
    if all((d.low > 0) if direction == 1 else (d.high < 0) for d in differences):
        return "supported"
    return "not shown"
