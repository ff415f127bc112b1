"""The confidence interval of the recognised fraction: Clopper-Pearson (exact binomial), pure Python.

Why Clopper-Pearson and not Wilson: a compliance reader takes the upper bound as "at most this fraction of
our data can be reconstructed". Clopper-Pearson guarantees at least the nominal coverage for every true rate
and sample count (it is conservative); Wilson is narrower and right on average but under-covers at some rates,
most at the small counts and rates near 0 a privacy audit lives at. With 0 of n recognised the upper bound is
1 - (alpha/2)^(1/n) (about 3.7/n at 95%), never 0: no scan proves that nothing leaks.
"""

from __future__ import annotations

import math
from typing import Callable

CONFIDENCE = 0.95


def _log_pmf(k: int, n: int, p: float) -> float:
    return (math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
            + k * math.log(p) + (n - k) * math.log1p(-p))


def binom_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p)."""
    if k < 0:
        return 0.0
    if k >= n or p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    return min(1.0, math.fsum(math.exp(_log_pmf(i, n, p)) for i in range(k + 1)))


def _solve(f: Callable[[float], float], target: float) -> float:
    """The p in [0, 1] where the decreasing f(p) equals target (bisection to 1e-12)."""
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if f(mid) > target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def clopper_pearson(k: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The two-sided exact interval of a binomial proportion with ``k`` successes in ``n`` trials."""
    if n <= 0:
        return 0.0, 1.0
    if not 0 <= k <= n:
        raise ValueError(f"k={k} outside 0..n={n}")
    alpha = 1.0 - confidence
    # P(X >= k; lower) = alpha/2 and P(X <= k; upper) = alpha/2 (the cdf falls as p grows)
    lower = 0.0 if k == 0 else _solve(lambda p: binom_cdf(k - 1, n, p), 1.0 - alpha / 2)
    upper = 1.0 if k == n else _solve(lambda p: binom_cdf(k, n, p), alpha / 2)
    return lower, upper
