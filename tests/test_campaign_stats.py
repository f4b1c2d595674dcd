"""Campaign measurement statistics: the published Wilson and Newcombe intervals, Welch against
SciPy on raw samples, coverage of every interval over seeded simulated campaigns, the sample
ratio mismatch check, the minimum detectable difference by hand, and the edge cases. No Spark.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import stats as sp

from segmentation.activation.stats import (
    SRM_ALPHA,
    Arm,
    Lift,
    compare,
    katz_ratio,
    minimum_detectable_difference,
    newcombe_difference,
    ratio_of_means,
    srm,
    welch_difference,
    wilson,
)

# Newcombe (1998), "Two-sided confidence intervals for the single proportion", Stat Med
# 17:857-872, Table I, method 3 (Wilson score interval without continuity correction).
NEWCOMBE_TABLE_I = [
    (81, 263, 0.2553, 0.3662),
    (15, 148, 0.0624, 0.1605),
    (0, 20, 0.0000, 0.1611),
    (1, 29, 0.0061, 0.1718),
]
# Newcombe (1998), "Interval estimation for the difference between independent proportions",
# Stat Med 17:873-890, Table II, method 10 (hybrid score, no continuity correction).
NEWCOMBE_TABLE_II = [
    (56, 70, 48, 80, 0.0524, 0.3339),
    (9, 10, 3, 10, 0.1705, 0.8090),
    (6, 7, 2, 7, 0.0582, 0.8062),
    (5, 56, 0, 29, -0.0381, 0.1926),
    (0, 10, 0, 20, -0.1611, 0.2775),
    (0, 10, 0, 10, -0.2775, 0.2775),
    (10, 10, 0, 20, 0.6791, 1.0000),
    (10, 10, 0, 10, 0.6075, 1.0000),
]
REPLICATIONS = 1000
# A 95% interval's coverage over 1,000 independent replications: 3 binomial standard errors.
COVERAGE_SLACK = 3 * math.sqrt(0.95 * 0.05 / REPLICATIONS)


def arm_from(converted: np.ndarray, revenue: np.ndarray) -> Arm:
    """An arm's sufficient statistics, as the Spark aggregation would produce them."""
    return Arm(
        n=int(converted.size),
        conversions=int(converted.sum()),
        revenue_sum=float(revenue.sum()),
        revenue_sum_squares=float((revenue * revenue).sum()),
    )


# ---------------------------------------------------------------------------- published values


@pytest.mark.parametrize(("x", "n", "lower", "upper"), NEWCOMBE_TABLE_I)
def test_wilson_matches_newcombe_table_i(x: int, n: int, lower: float, upper: float) -> None:
    low, high = wilson(x, n)
    assert round(low, 4) == pytest.approx(lower, abs=1e-12)
    assert round(high, 4) == pytest.approx(upper, abs=1e-12)


@pytest.mark.parametrize("confidence", [0.80, 0.90, 0.99])
def test_wilson_limits_solve_the_score_equation_at_any_confidence(confidence: float) -> None:
    """Wilson's limits are the roots of |x/n - p| = z sqrt(p (1 - p) / n)."""
    x, n = 17, 60
    z = sp.norm.ppf(0.5 + confidence / 2)
    for p in wilson(x, n, confidence):
        assert abs(x / n - p) == pytest.approx(z * math.sqrt(p * (1 - p) / n), rel=1e-10)
    low, high = wilson(x, n, confidence)
    assert low < x / n < high


@pytest.mark.parametrize(("x1", "n1", "x2", "n2", "lower", "upper"), NEWCOMBE_TABLE_II)
def test_newcombe_matches_table_ii_method_10(
    x1: int, n1: int, x2: int, n2: int, lower: float, upper: float
) -> None:
    low, high = newcombe_difference(x1, n1, x2, n2)
    assert round(low, 4) == pytest.approx(lower, abs=1e-12)
    assert round(high, 4) == pytest.approx(upper, abs=1e-12)


def test_newcombe_swapping_the_arms_mirrors_the_interval() -> None:
    low, high = newcombe_difference(56, 70, 48, 80)
    mirrored = newcombe_difference(48, 80, 56, 70)
    assert mirrored == pytest.approx((-high, -low), abs=1e-12)


@pytest.mark.parametrize("confidence", [0.90, 0.95, 0.99])
def test_welch_matches_scipy_on_raw_skewed_samples(confidence: float) -> None:
    """An independent implementation: SciPy's Welch test on the raw samples, while ours sees
    only means and variances (and, through ``compare``, only sums and sums of squares)."""
    rng = np.random.default_rng(7)
    a = (rng.random(37) < 0.4) * rng.lognormal(3.0, 1.0, 37)
    b = (rng.random(58) < 0.3) * rng.lognormal(3.2, 0.6, 58)
    expected = sp.ttest_ind(a, b, equal_var=False).confidence_interval(confidence)
    diff, low, high = welch_difference(
        a.mean(), a.var(ddof=1), a.size, b.mean(), b.var(ddof=1), b.size, confidence
    )
    assert diff == pytest.approx(a.mean() - b.mean(), rel=1e-12)
    assert (low, high) == pytest.approx((expected.low, expected.high), rel=1e-9)
    _, revenue = compare(arm_from(a > 0, a), arm_from(b > 0, b), confidence)
    assert (revenue.absolute_lower, revenue.absolute_upper) == pytest.approx(
        (expected.low, expected.high), rel=1e-9
    )


def test_katz_matches_the_log_interval_by_hand() -> None:
    """30/100 against 20/100: ratio 1.5, se of its log sqrt(1/30 - 1/100 + 1/20 - 1/100)."""
    se = math.sqrt(1 / 30 - 1 / 100 + 1 / 20 - 1 / 100)
    estimate, low, high = katz_ratio(30, 100, 20, 100)
    assert estimate == pytest.approx(0.5, rel=1e-12)
    assert low == pytest.approx(1.5 * math.exp(-1.959964 * se) - 1, abs=1e-6)
    assert high == pytest.approx(1.5 * math.exp(1.959964 * se) - 1, abs=1e-6)


def test_ratio_of_means_matches_the_delta_method_by_hand() -> None:
    """Means 12 and 10, variances 400 and 300, 500 and 800 customers."""
    se = math.sqrt(400 / (500 * 12**2) + 300 / (800 * 10**2))
    estimate, low, high = ratio_of_means(12.0, 400.0, 500, 10.0, 300.0, 800)
    assert estimate == pytest.approx(0.2, rel=1e-12)
    assert low == pytest.approx(1.2 * math.exp(-1.959964 * se) - 1, abs=1e-6)
    assert high == pytest.approx(1.2 * math.exp(1.959964 * se) - 1, abs=1e-6)


def test_srm_matches_a_hand_computed_chi_square() -> None:
    """10,000 customers planned 90/10 and observed 9,150/850: chi-square 150^2/9000 + 150^2/1000
    = 25 on 1 df, whose upper tail is erfc(sqrt(25 / 2))."""
    assert srm(9150, 850, 0.10) == pytest.approx(math.erfc(math.sqrt(25 / 2)), rel=1e-9)
    statistic = (4_210 - 4_000) ** 2 / 4_000 + (5_790 - 6_000) ** 2 / 6_000
    assert srm(5_790, 4_210, 0.40) == pytest.approx(math.erfc(math.sqrt(statistic / 2)), rel=1e-9)
    assert srm(9000, 1000, 0.10) == pytest.approx(1.0)


# ------------------------------------------------------------------------------------ coverage


def simulate(p_treatment: float, p_holdout: float, seed: int) -> list[tuple[Lift, Lift]]:
    """1,000 campaigns of 2,000 customers an arm; revenue per customer is conversion times a
    lognormal spend (skewed, mostly zeros)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(REPLICATIONS):
        arms = []
        for p, n in ((p_treatment, 2_000), (p_holdout, 1_900)):
            converted = rng.random(n) < p
            revenue = converted * rng.lognormal(math.log(40.0), 1.0, n)
            arms.append(arm_from(converted, revenue))
        out.append(compare(arms[0], arms[1]))
    return out


@pytest.fixture(scope="module")
def lifted() -> list[tuple[Lift, Lift]]:
    return simulate(0.13, 0.10, seed=20240601)


@pytest.fixture(scope="module")
def null() -> list[tuple[Lift, Lift]]:
    return simulate(0.10, 0.10, seed=20240602)


SPEND = 40.0 * math.exp(0.5)  # the lognormal's mean, exp(mu + sigma^2 / 2)


def coverage(lifts: list[Lift], truth: float, bounds: tuple[str, str]) -> float:
    low, high = bounds
    return float(np.mean([getattr(x, low) <= truth <= getattr(x, high) for x in lifts]))


@pytest.mark.parametrize(
    ("scenario", "metric", "bounds", "truth"),
    [
        ("lifted", 0, ("absolute_lower", "absolute_upper"), 0.03),
        ("null", 0, ("absolute_lower", "absolute_upper"), 0.0),
        ("lifted", 0, ("relative_lower", "relative_upper"), 0.3),
        ("null", 0, ("relative_lower", "relative_upper"), 0.0),
        ("lifted", 1, ("absolute_lower", "absolute_upper"), 0.03 * SPEND),
        ("null", 1, ("absolute_lower", "absolute_upper"), 0.0),
        ("lifted", 1, ("relative_lower", "relative_upper"), 0.3),
        ("null", 1, ("relative_lower", "relative_upper"), 0.0),
        ("lifted", 0, ("incremental_lower", "incremental_upper"), 0.03 * 2_000),
        ("lifted", 1, ("incremental_lower", "incremental_upper"), 0.03 * SPEND * 2_000),
    ],
)
def test_intervals_cover_the_truth_at_the_nominal_rate(
    request: pytest.FixtureRequest,
    scenario: str,
    metric: int,
    bounds: tuple[str, str],
    truth: float,
) -> None:
    runs = request.getfixturevalue(scenario)
    share = coverage([run[metric] for run in runs], truth, bounds)
    assert abs(share - 0.95) <= COVERAGE_SLACK, f"coverage {share:.3f}"


def test_the_lifted_segment_is_mostly_detected(lifted: list[tuple[Lift, Lift]]) -> None:
    """Power for +3 points on 10% with ~2,000 an arm is about 0.87: the intervals are not
    merely wide enough to cover everything."""
    detected = np.mean([conversion.absolute_lower > 0 for conversion, _ in lifted])
    assert 0.75 <= detected <= 0.95


# ----------------------------------------------------------------------------------------- SRM


def test_srm_flags_a_broken_split() -> None:
    """10,000 customers with a planned 10% holdout, but only 8.5% landed there."""
    assert srm(9_150, 850, 0.10) < SRM_ALPHA
    assert srm(850, 9_150, 0.10) < SRM_ALPHA  # the arms passed the wrong way round


def test_srm_rarely_flags_a_correct_split() -> None:
    flagged = 0
    for seed in range(500):
        holdout = int(np.random.default_rng(seed).binomial(10_000, 0.10))
        flagged += srm(10_000 - holdout, holdout, 0.10) < SRM_ALPHA
    assert flagged / 500 <= 0.01


# ----------------------------------------------------------------------- detectable difference


def test_minimum_detectable_difference_by_hand() -> None:
    expected = (1.959964 + 0.841621) * math.sqrt(0.1 * 0.9 * 2 / 1000)
    assert minimum_detectable_difference(0.1, 1000, 1000) == pytest.approx(expected, abs=1e-6)
    unequal = (2.575829 + 1.281552) * math.sqrt(0.2 * 0.8 * (1 / 500 + 1 / 4000))
    got = minimum_detectable_difference(0.2, 500, 4000, alpha=0.01, power=0.9)
    assert got == pytest.approx(unequal, abs=1e-6)


# ------------------------------------------------------------------------------------ edge cases


def test_empty_arms_give_nan_without_exceptions_or_warnings() -> None:
    empty, full = Arm(0, 0, 0.0, 0.0), Arm(100, 10, 500.0, 40_000.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert all(math.isnan(v) for v in wilson(0, 0))
        assert all(math.isnan(v) for v in newcombe_difference(5, 10, 0, 0))
        assert all(math.isnan(v) for v in katz_ratio(0, 0, 5, 10))
        assert all(math.isnan(v) for v in welch_difference(1.0, 1.0, 10, math.nan, 0.0, 0))
        assert all(math.isnan(v) for v in ratio_of_means(math.nan, 0.0, 0, 1.0, 1.0, 10))
        assert math.isnan(minimum_detectable_difference(0.1, 0, 1000))
        assert math.isnan(srm(0, 0, 0.1))
        assert math.isnan(empty.rate) and math.isnan(empty.revenue_mean)
        assert empty.revenue_var == 0.0
        for treated, held in ((empty, full), (full, empty), (empty, empty)):
            for lift in compare(treated, held):
                values = [v for k, v in vars(lift).items() if k != "metric"]
                assert math.isnan(lift.absolute) and math.isnan(lift.absolute_lower)
                # only the non-empty arm's own value is a number
                assert sum(not math.isnan(v) for v in values) == (treated.n > 0) + (held.n > 0)


def test_katz_with_no_treatment_conversions() -> None:
    """0/200 against 10/200: the estimate is -100%; the interval uses 0.5 on every cell."""
    estimate, low, high = katz_ratio(0, 200, 10, 200)
    assert estimate == -1.0
    ratio = (0.5 / 201) / (10.5 / 201)
    se = math.sqrt(1 / 0.5 - 1 / 201 + 1 / 10.5 - 1 / 201)
    assert low == pytest.approx(ratio * math.exp(-1.959964 * se) - 1, abs=1e-6)
    assert high == pytest.approx(ratio * math.exp(1.959964 * se) - 1, abs=1e-6)
    # a positive ratio, so above -100%; and 0/200 against 10/200 is a clear drop (so is Newcombe's)
    assert -1.0 < low < high < 0.0
    assert newcombe_difference(0, 200, 10, 200)[1] < 0.0


def test_katz_with_no_holdout_conversions_has_no_estimate_but_an_interval() -> None:
    estimate, low, high = katz_ratio(10, 200, 0, 200)
    assert math.isnan(estimate)
    assert math.isfinite(low) and math.isfinite(high) and 0.0 < low < high


def test_degenerate_revenue_gives_nan_intervals() -> None:
    """Nobody spent anything in either arm: no spread to build an interval from."""
    _, revenue = compare(Arm(50, 0, 0.0, 0.0), Arm(50, 0, 0.0, 0.0))
    assert revenue.absolute == 0.0
    assert math.isnan(revenue.absolute_lower) and math.isnan(revenue.relative)
    diff, low, high = welch_difference(3.0, 1.0, 1, 2.0, 1.0, 10)
    assert diff == 1.0 and math.isnan(low) and math.isnan(high)
    estimate, low, high = ratio_of_means(0.0, 1.0, 10, 2.0, 1.0, 10)
    assert estimate == -1.0 and math.isnan(low) and math.isnan(high)


def test_arm_variance_from_sums() -> None:
    rng = np.random.default_rng(3)
    revenue = rng.lognormal(2.0, 1.5, 400)
    arm = arm_from(revenue > 10, revenue)
    assert arm.revenue_var == pytest.approx(revenue.var(ddof=1), rel=1e-9)
    assert arm.rate == pytest.approx(np.mean(revenue > 10))
    constant = np.full(7, 12.34)  # S2 - S1^2 / n rounds to -4.5e-13 here
    assert arm_from(constant > 0, constant).revenue_var == 0.0
    assert Arm(1, 1, 5.0, 25.0).revenue_var == 0.0


def test_invalid_inputs_are_refused() -> None:
    with pytest.raises(ValueError):
        Arm(10, 11, 0.0, 0.0)
    with pytest.raises(ValueError):
        wilson(3, 10, confidence=1.0)
    with pytest.raises(ValueError):
        srm(900, 100, 0.0)
    with pytest.raises(ValueError):
        newcombe_difference(-1, 10, 2, 10)
