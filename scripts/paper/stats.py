"""Student-t statistics without scipy: the regularized incomplete beta, the t
CDF and quantile, paired differences with their 95 % interval and p-value,
the prediction interval for one new run, and the binary entropy of a mask.

References: the incomplete beta by the modified Lentz continued fraction
(Press et al., Numerical Recipes, 3rd ed., Sec. 6.4); the t distribution's
CDF as I_{df/(df+t^2)}(df/2, 1/2) (Abramowitz & Stegun 26.7.1); the
prediction interval mean ± t(0.975, n-1) s sqrt(1 + 1/n) (e.g. Hahn &
Meeker, Statistical Intervals, 1991, Sec. 4.6).
"""

from __future__ import annotations

import math

import numpy as np


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularized incomplete beta (modified Lentz)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 1000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            return h
    raise ArithmeticError("incomplete beta: continued fraction did not converge")


def incomplete_beta(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b)."""
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"x must be in [0, 1], got {x}")
    if x in (0.0, 1.0):
        return x
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                     + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom."""
    tail = 0.5 * incomplete_beta(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_quantile(q: float, df: float) -> float:
    """The q quantile of Student's t (bisection on `t_cdf`, to 1e-10)."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"q must be in (0, 1), got {q}")
    if q < 0.5:
        return -t_quantile(1.0 - q, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < q:
        hi *= 2.0
    while hi - lo > 1e-10 * max(1.0, hi):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if t_cdf(mid, df) < q else (lo, mid)
    return 0.5 * (lo + hi)


def paired_stats(a, b) -> dict:
    """Paired comparison of ``a`` and ``b`` (one value each per seed, same
    order): the differences d = a - b, their mean, sample std (ddof 1), the
    95 % Student-t interval mean ± t(0.975, n-1) s / sqrt(n), the two-sided
    p-value of the paired t-test (H0: mean difference 0), and how many
    differences have the sign of the mean. n = 1 gives the difference alone."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    d = a - b
    n = len(d)
    mean = float(d.mean())
    out = {"diffs": d.tolist(), "n": n, "mean": mean, "sd": math.nan, "low": math.nan,
           "high": math.nan, "p": math.nan,
           "same_sign": int(np.sum(np.sign(d) == np.sign(mean))) if mean != 0 else 0}
    if n < 2:
        return out
    sd = float(d.std(ddof=1))
    half = t_quantile(0.975, n - 1) * sd / math.sqrt(n)
    out.update(sd=sd, low=mean - half, high=mean + half)
    if sd > 0:
        t = mean / (sd / math.sqrt(n))
        out["p"] = 2.0 * (1.0 - t_cdf(abs(t), n - 1))
    else:
        out["p"] = 0.0 if mean != 0 else 1.0
    return out


def prediction_interval(values) -> tuple[float, float, float]:
    """(mean, low, high): the 95 % interval for one new run, mean ± t(0.975,
    n-1) s sqrt(1 + 1/n), against which a single run (the paper's) is judged."""
    v = np.asarray(values, dtype=float)
    n = len(v)
    if n < 2:
        raise ValueError("a prediction interval needs at least two values")
    mean, sd = float(v.mean()), float(v.std(ddof=1))
    half = t_quantile(0.975, n - 1) * sd * math.sqrt(1.0 + 1.0 / n)
    return mean, mean - half, mean + half


def binary_entropy(p: float) -> float:
    """H(p) in bits: the entropy bound, bits per weight, of a mask that keeps
    each weight with probability p."""
    if p in (0.0, 1.0):
        return 0.0
    return -(p * math.log2(p) + (1.0 - p) * math.log2(1.0 - p))
