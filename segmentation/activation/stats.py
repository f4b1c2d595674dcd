"""The statistics of campaign measurement: a treated group against its holdout, per segment.

Everything here works on sufficient statistics (counts, sums, sums of squares), because the
caller aggregates in Spark and hands the driver one row per segment and arm; nothing here
imports pyspark. Every interval is two-sided at ``confidence`` (0.95 by default).

* **Conversion rate**: Wilson's score interval for each arm (E. B. Wilson, "Probable
  inference, the law of succession, and statistical inference", JASA 22:209-212, 1927; method 3
  of R. G. Newcombe, "Two-sided confidence intervals for the single proportion: comparison of
  seven methods", Stat Med 17:857-872, 1998) and, for the difference, Newcombe's hybrid score
  interval built on them (method 10 of R. G. Newcombe, "Interval estimation for the difference
  between independent proportions: comparison of eleven methods", Stat Med 17:873-890, 1998).
  The relative lift ``p1 / p2 - 1`` takes the Katz log interval (D. Katz, J. Baptista,
  S. P. Azen & M. C. Pike, "Obtaining confidence intervals for the risk ratio in cohort
  studies", Biometrics 34:469-474, 1978).
* **Revenue per customer** (zeros included): Welch's t interval for the difference of means
  with the Welch-Satterthwaite degrees of freedom (B. L. Welch, "The generalization of
  'Student's' problem when several different population variances are involved", Biometrika
  34:28-35, 1947; F. E. Satterthwaite, Biometrics Bulletin 2:110-114, 1946), and a
  delta-method interval on the log of the ratio of means for the relative lift (A. Deng,
  U. Knoblich & J. Lu, "Applying the delta method in metric analytics", KDD 2018).
* **Sample ratio mismatch**: a chi-square goodness-of-fit test of the observed split against
  the planned one, flagged below ``SRM_ALPHA`` = 0.0005 (A. Fabijan et al., "Diagnosing sample
  ratio mismatch in online controlled experiments", KDD 2019).
* **Minimum detectable difference**: the normal-approximation power formula for two
  proportions (e.g. J. L. Fleiss, B. Levin & M. C. Paik, "Statistical Methods for Rates and
  Proportions", 3rd ed., 2003, ch. 4), with the control's variance in both arms.

An arm with no customers (or, for an interval that needs a variance, fewer than two) gives NaN,
never an exception; counts that cannot be (negative, more conversions than customers) and a
confidence outside (0, 1) raise ``ValueError``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import stats

SRM_ALPHA = 0.0005
NAN = float("nan")


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie strictly between 0 and 1, not {confidence}")


def _z(confidence: float) -> float:
    """The standard normal quantile for a two-sided interval at ``confidence``."""
    _check_confidence(confidence)
    return float(stats.norm.ppf(0.5 + confidence / 2.0))


def _check_counts(successes: int, n: int) -> None:
    if n < 0 or successes < 0 or successes > n:
        raise ValueError(f"need 0 <= successes <= n, got {successes} of {n}")


def wilson(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson's (1927) score interval for a single proportion, without continuity correction:
    method 3 of Newcombe (1998, Stat Med 17:857), whose Table I gives e.g. 81/263 -> 0.2553 to
    0.3662. The limits are the two roots of ``|x/n - p| = z sqrt(p(1 - p)/n)``. The lower limit
    is exactly 0 when ``successes`` is 0, the upper exactly 1 when it is ``n``. ``n`` == 0 gives
    ``(nan, nan)``."""
    z = _z(confidence)
    _check_counts(successes, n)
    if n == 0:
        return NAN, NAN
    p = successes / n
    z2 = z * z
    denominator = 1.0 + z2 / n
    centre = (p + z2 / (2.0 * n)) / denominator
    half = z * math.sqrt(p * (1.0 - p) / n + z2 / (4.0 * n * n)) / denominator
    lower = 0.0 if successes == 0 else max(0.0, centre - half)
    upper = 1.0 if successes == n else min(1.0, centre + half)
    return lower, upper


def newcombe_difference(
    x1: int, n1: int, x2: int, n2: int, confidence: float = 0.95
) -> tuple[float, float]:
    """Newcombe's hybrid score interval for ``p1 - p2`` (method 10 of Newcombe 1998, "Interval
    estimation for the difference between independent proportions", Stat Med 17:873-890): with
    ``(l_i, u_i)`` the Wilson limits of arm ``i`` and ``d = p1 - p2``,

        lower = d - sqrt((p1 - l1)^2 + (u2 - p2)^2),  upper = d + sqrt((u1 - p1)^2 + (p2 - l2)^2).

    It stays within [-1, 1], has no zero-width intervals and is defined for 0/n and n/n (Table
    II of the paper: 56/70 - 48/80 -> 0.0524 to 0.3339). NaN when either arm is empty."""
    l1, u1 = wilson(x1, n1, confidence)
    l2, u2 = wilson(x2, n2, confidence)
    if n1 == 0 or n2 == 0:
        return NAN, NAN
    p1, p2 = x1 / n1, x2 / n2
    d = p1 - p2
    lower = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    upper = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return lower, upper


def katz_ratio(
    x1: int, n1: int, x2: int, n2: int, confidence: float = 0.95
) -> tuple[float, float, float]:
    """Relative lift ``p1 / p2 - 1`` with the Katz et al. (1978) log interval, as
    ``(estimate, lower, upper)``, all three as lifts (ratio - 1):

        log(p1 / p2) +/- z sqrt(1/x1 - 1/n1 + 1/x2 - 1/n2).

    When either arm has no conversions the variance is infinite, so for the *interval only* 0.5
    is added to all four cells of the 2x2 table (x -> x + 0.5, n -> n + 1; Haldane 1956, "The
    estimation and significance of the logarithm of a ratio of frequencies", Ann Hum Genet
    20:309). The estimate keeps the raw counts: with ``x1`` == 0 it is -1 (the corrected
    interval then lies above it), with ``x2`` == 0 it is NaN. NaN throughout for an empty arm."""
    z = _z(confidence)
    _check_counts(x1, n1)
    _check_counts(x2, n2)
    if n1 == 0 or n2 == 0:
        return NAN, NAN, NAN
    estimate = (x1 / n1) / (x2 / n2) - 1.0 if x2 > 0 else NAN
    a, m1, b, m2 = float(x1), float(n1), float(x2), float(n2)
    if x1 == 0 or x2 == 0:
        a, m1, b, m2 = a + 0.5, m1 + 1.0, b + 0.5, m2 + 1.0
    log_ratio = math.log((a / m1) / (b / m2))
    se = math.sqrt(max(0.0, 1.0 / a - 1.0 / m1 + 1.0 / b - 1.0 / m2))
    lower = math.exp(log_ratio - z * se) - 1.0
    upper = math.exp(log_ratio + z * se) - 1.0
    return estimate, lower, upper


def _check_sizes(n1: int, n2: int) -> None:
    if n1 < 0 or n2 < 0:
        raise ValueError(f"sample sizes must not be negative, got {n1} and {n2}")


def welch_difference(
    mean1: float,
    var1: float,
    n1: int,
    mean2: float,
    var2: float,
    n2: int,
    confidence: float = 0.95,
) -> tuple[float, float, float]:
    """Difference of means ``mean1 - mean2`` with Welch's (1947) t interval, from sufficient
    statistics (``var`` is the sample variance, ddof=1), as ``(diff, lower, upper)``:

        diff +/- t_{df} sqrt(v1/n1 + v2/n2),
        df = (v1/n1 + v2/n2)^2 / ((v1/n1)^2 / (n1 - 1) + (v2/n2)^2 / (n2 - 1))

    (Welch-Satterthwaite). The difference is NaN for an empty arm; the interval is NaN when an
    arm has fewer than two customers or both variances are 0 (no spread to estimate from)."""
    _check_confidence(confidence)
    _check_sizes(n1, n2)
    if n1 == 0 or n2 == 0:
        return NAN, NAN, NAN
    diff = mean1 - mean2
    if n1 < 2 or n2 < 2:
        return diff, NAN, NAN
    s1, s2 = max(0.0, var1) / n1, max(0.0, var2) / n2
    se2 = s1 + s2
    if se2 <= 0.0:
        return diff, NAN, NAN
    df = se2 * se2 / (s1 * s1 / (n1 - 1) + s2 * s2 / (n2 - 1))
    half = float(stats.t.ppf(0.5 + confidence / 2.0, df)) * math.sqrt(se2)
    return diff, diff - half, diff + half


def ratio_of_means(
    mean1: float,
    var1: float,
    n1: int,
    mean2: float,
    var2: float,
    n2: int,
    confidence: float = 0.95,
) -> tuple[float, float, float]:
    """Relative lift ``mean1 / mean2 - 1`` with a delta-method interval on the log ratio, as
    ``(estimate, lower, upper)``: the two arms are independent, and by the delta method
    ``Var(log mean_i) ~ var_i / (n_i mean_i^2)`` (Deng, Knoblich & Lu 2018), so

        log(mean1 / mean2) +/- z sqrt(v1 / (n1 m1^2) + v2 / (n2 m2^2)),

    exponentiated back and less 1 (a normal quantile: the arms are large in practice). The
    estimate is NaN when ``mean2`` <= 0 or an arm is empty; the interval is NaN when either
    mean is <= 0 (no logarithm), an arm has fewer than two customers or both variances are 0."""
    z = _z(confidence)
    _check_sizes(n1, n2)
    if n1 == 0 or n2 == 0 or mean2 <= 0.0:
        return NAN, NAN, NAN
    estimate = mean1 / mean2 - 1.0
    if mean1 <= 0.0 or n1 < 2 or n2 < 2:
        return estimate, NAN, NAN
    se2 = max(0.0, var1) / (n1 * mean1 * mean1) + max(0.0, var2) / (n2 * mean2 * mean2)
    if se2 <= 0.0:
        return estimate, NAN, NAN
    log_ratio = math.log(mean1 / mean2)
    half = z * math.sqrt(se2)
    return estimate, math.exp(log_ratio - half) - 1.0, math.exp(log_ratio + half) - 1.0


def srm(n_treatment: int, n_holdout: int, holdout_share: float) -> float:
    """Sample-ratio-mismatch p-value: Pearson's chi-square goodness-of-fit test, 1 degree of
    freedom, of the observed ``(treatment, holdout)`` counts against the planned split
    ``(1 - holdout_share, holdout_share)`` (Fabijan et al. 2019, KDD). A p-value below
    ``SRM_ALPHA`` (their recommended 0.0005) means the assignment is broken and the lift should
    not be trusted. NaN when there are no customers at all."""
    if not 0.0 < holdout_share < 1.0:
        raise ValueError(f"holdout_share must lie strictly between 0 and 1, not {holdout_share}")
    _check_sizes(n_treatment, n_holdout)
    total = n_treatment + n_holdout
    if total == 0:
        return NAN
    expected = [total * (1.0 - holdout_share), total * holdout_share]
    result = stats.chisquare([n_treatment, n_holdout], f_exp=expected)
    return float(result.pvalue)


def minimum_detectable_difference(
    p_control: float, n1: int, n2: int, *, alpha: float = 0.05, power: float = 0.8
) -> float:
    """The smallest absolute difference in conversion rate a two-sided test at ``alpha``
    detects with probability ``power``, by the normal approximation with the control's
    variance in both arms (Fleiss, Levin & Paik 2003, ch. 4):

        (z_{1 - alpha/2} + z_{power}) sqrt(p (1 - p) (1/n1 + 1/n2)).

    NaN when either arm is empty."""
    if not 0.0 <= p_control <= 1.0:
        raise ValueError(f"p_control must lie in [0, 1], not {p_control}")
    if not 0.0 < power < 1.0:
        raise ValueError(f"power must lie strictly between 0 and 1, not {power}")
    z_alpha = _z(1.0 - alpha)
    _check_sizes(n1, n2)
    if n1 == 0 or n2 == 0:
        return NAN
    z_power = float(stats.norm.ppf(power))
    return (z_alpha + z_power) * math.sqrt(p_control * (1.0 - p_control) * (1.0 / n1 + 1.0 / n2))


@dataclass(frozen=True)
class Arm:
    """One arm of one segment, as Spark aggregates it: customers, customers who converted, and
    the sum and sum of squares of revenue per customer (zeros included)."""

    n: int
    conversions: int
    revenue_sum: float
    revenue_sum_squares: float

    def __post_init__(self) -> None:
        _check_counts(self.conversions, self.n)
        if self.revenue_sum_squares < 0:
            raise ValueError(f"a sum of squares cannot be negative: {self.revenue_sum_squares}")

    @property
    def rate(self) -> float:
        """The conversion rate (NaN for an empty arm)."""
        return self.conversions / self.n if self.n > 0 else NAN

    @property
    def revenue_mean(self) -> float:
        """Revenue per customer (NaN for an empty arm)."""
        return self.revenue_sum / self.n if self.n > 0 else NAN

    @property
    def revenue_var(self) -> float:
        """The sample variance of revenue per customer (ddof=1), 0 below two customers; from
        the sums as ``(S2 - S1^2 / n) / (n - 1)``, floored at 0 against rounding."""
        if self.n < 2:
            return 0.0
        centred = self.revenue_sum_squares - self.revenue_sum * self.revenue_sum / self.n
        return max(0.0, centred / (self.n - 1))


@dataclass(frozen=True)
class Lift:
    """The treatment's effect on one metric (``conversion`` or ``revenue_per_customer``): both
    arms' values, the absolute difference (treatment - holdout), the relative lift
    (treatment / holdout - 1) and the incremental total among the treated (the absolute
    difference times the treated customers: extra conversions or extra revenue), each with its
    interval at the confidence ``compare`` was called with."""

    metric: str
    treatment: float
    holdout: float
    absolute: float
    absolute_lower: float
    absolute_upper: float
    relative: float
    relative_lower: float
    relative_upper: float
    incremental: float
    incremental_lower: float
    incremental_upper: float


def compare(treatment: Arm, holdout: Arm, confidence: float = 0.95) -> tuple[Lift, Lift]:
    """The conversion lift (Newcombe's difference, Katz's ratio) and the revenue-per-customer
    lift (Welch's difference, the delta-method ratio of means) of ``treatment`` over
    ``holdout``."""
    n = treatment.n
    diff = treatment.rate - holdout.rate if n > 0 and holdout.n > 0 else NAN
    low, high = newcombe_difference(
        treatment.conversions, n, holdout.conversions, holdout.n, confidence
    )
    rel = katz_ratio(treatment.conversions, n, holdout.conversions, holdout.n, confidence)
    conversion = Lift(
        "conversion", treatment.rate, holdout.rate, diff, low, high, *rel,
        diff * n, low * n, high * n,
    )  # fmt: skip
    sufficient = (
        treatment.revenue_mean, treatment.revenue_var, n,
        holdout.revenue_mean, holdout.revenue_var, holdout.n,
    )  # fmt: skip
    absolute = welch_difference(*sufficient, confidence=confidence)
    relative = ratio_of_means(*sufficient, confidence=confidence)
    revenue = Lift(
        "revenue_per_customer", treatment.revenue_mean, holdout.revenue_mean, *absolute,
        *relative, absolute[0] * n, absolute[1] * n, absolute[2] * n,
    )  # fmt: skip
    return conversion, revenue
