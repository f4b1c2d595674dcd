"""Customer value: the published CDNOW numbers through the product's own job, the stable
hypergeometric series against arbitrary precision, the BTYD summary and backtest counted by
hand, and each kind of bad input named."""

from __future__ import annotations

import datetime as dt
import math
import zipfile
from pathlib import Path

import mpmath
import numpy as np
import pandas as pd
import polars as pl
import pytest
from scipy import special

from segmentation.config import ValueConfig
from segmentation.errors import InputError
from segmentation.value import backtest, btyd, fitting, scoring, summary
from segmentation.value.hypergeometric import hyp2f1
from tests.conftest import ROOT, local_config

WHEEL = ROOT / ".venv" / "wheels" / "Lifetimes-0.11.3-py3-none-any.whl"
# Fader, Hardie & Lee (2005), table in section 4: CDNOW sample, weeks, calibration 1997-09-30.
PUBLISHED_BG_NBD = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
PUBLISHED_BG_NBD_SE = {"r": 0.013, "alpha": 0.378, "a": 0.186, "b": 0.705}
PUBLISHED_LL = -9582.4
# Fader & Hardie (2013), "The Gamma-Gamma model of monetary value", on the same sample.
PUBLISHED_GAMMA_GAMMA = {"p": 6.25, "q": 3.74, "gamma": 15.44}


def cdnow_csv(folder: Path) -> str:
    """The CDNOW sample's raw transactions (customer, yyyyMMdd date, CDs, dollars) as the CSV a
    user would export, from the lifetimes wheel ``make setup`` downloads."""
    assert WHEEL.exists(), f"{WHEEL} is missing: run `make setup` (it downloads the wheel)"
    with zipfile.ZipFile(WHEEL) as wheel:
        text = wheel.read("lifetimes/datasets/CDNOW_sample.txt").decode()
    rows = [line.split() for line in text.splitlines() if line.strip()]
    path = folder / "cdnow.csv"
    path.write_text("customer,date,cds,dollars\n" + "".join(
        f"{r[0]},{r[2]},{r[3]},{r[4]}\n" for r in rows))  # fmt: skip
    return str(path)


@pytest.fixture(scope="module")
def cdnow(spark, tmp_path_factory):
    """The value job run once on CDNOW as of the end of the calibration period."""
    import mlflow

    from segmentation.workflows import value

    base = tmp_path_factory.mktemp("cdnow")
    cfg = local_config(
        base, f"input.events.path={cdnow_csv(base)}", "input.events.format=csv",
        'input.events.options={"header": "true"}', "input.events.columns.customer_id=customer",
        "input.events.columns.event_time=date", "input.events.columns.amount=dollars",
        *[f"input.events.columns.{c}=null" for c in
          ("event_type", "category", "channel", "device", "quantity", "discount", "event_id")],
        "input.events.timestamp_format=yyyyMMdd", "features.as_of=1997-09-30",
        "value.time_unit=week", "value.horizon_periods=39",
        # A backtest inside the 39 calibration weeks: 26 weeks to calibrate, 13 to judge.
        "value.holdout_periods=13", "value.min_calibration_periods=13",
    )  # fmt: skip
    result = value.run(spark, cfg)
    yield cfg, result
    mlflow.set_tracking_uri(None)


@pytest.mark.slow
def test_cdnow_fit_reproduces_the_published_parameters(cdnow):
    _, result = cdnow
    fitted = result.fitted
    for name, published in PUBLISHED_BG_NBD.items():
        assert fitted.counts[name] == pytest.approx(published, rel=0.01), name
        se = fitted.counts.std_errors[name]
        assert se == pytest.approx(PUBLISHED_BG_NBD_SE[name], rel=0.05), f"se of {name}"
    assert fitted.counts.log_likelihood == pytest.approx(PUBLISHED_LL, abs=0.05)
    for name, published in PUBLISHED_GAMMA_GAMMA.items():
        assert fitted.spend[name] == pytest.approx(published, rel=0.01), name
    assert fitted.customers == 2357 and fitted.repeat_buyers == 946
    assert fitted.counts.converged and fitted.spend.converged
    # FHL 2005: a customer with x = 2, t_x = 30.43, T = 38.86 is expected to make 1.226
    # purchases in the next 39 weeks.
    assert btyd.expected_purchases(
        "bg_nbd", fitted.counts.estimates, 39, 2, 30.43, 38.86
    ) == pytest.approx(1.226, abs=5e-4)


@pytest.mark.slow
def test_cdnow_scores_every_customer_readable_by_delta_rs_and_the_registered_model(cdnow):
    import mlflow

    from segmentation.storage import tables

    cfg, result = cdnow
    path = tables.path(cfg.storage, tables.CUSTOMER_VALUE)
    rows = pl.read_delta(path).to_pandas()
    assert len(rows) == 2357 and rows["customer_id"].is_unique
    assert rows[["p_alive", "expected_purchases", "clv"]].notna().all().all()
    assert ((rows["p_alive"] > 0) & (rows["p_alive"] <= 1)).all()
    # Customer 00004 bought on 1997-01-01, 01-18 and 08-02 before 1997-09-30: x = 2,
    # t_x = 213 days, T = 272 days (FHL's example customer: 30.43 and 38.86 weeks), and a mean
    # repeat purchase of (29.73 + 14.96) / 2.
    row = rows.set_index("customer_id").loc["00004"]
    assert row["x"] == 2
    assert row["t_x"] == pytest.approx(213 / 7, rel=1e-12)
    assert row["T"] == pytest.approx(272 / 7, rel=1e-12)
    assert row["repeat_value"] == pytest.approx((29.73 + 14.96) / 2, rel=1e-12)
    assert row["expected_purchases"] == pytest.approx(
        btyd.expected_purchases("bg_nbd", result.fitted.counts.estimates, 39, 2, 213 / 7, 272 / 7)
    )
    model = mlflow.pyfunc.load_model(f"models:/{cfg.value.model_name}@{cfg.tracking.alias}")
    predicted = model.predict(rows[["x", "t_x", "T", "repeat_value"]])
    for column in ("p_alive", "expected_purchases", "expected_order_value", "clv"):
        np.testing.assert_allclose(predicted[column], rows[column], rtol=1e-12, err_msg=column)
    params = pl.read_delta(tables.path(cfg.storage, tables.VALUE_PARAMETERS)).to_pandas()
    ll = params[(params.model == "bg_nbd") & (params.parameter == "log_likelihood")]
    assert ll["estimate"].iloc[0] == pytest.approx(PUBLISHED_LL, abs=0.05)
    assert result.table_versions == {"value_model_parameters": 0, "customer_value": 0}


def _reference_expectation(model, fit, t, x, t_x, big_t):
    """FHL 2005 eq. 10 (and lifetimes' MBG/NBD form) in 50-digit arithmetic, as published."""
    mpmath.mp.dps = 50
    r, alpha, a, b = (mpmath.mpf(fit[k]) for k in ("r", "alpha", "a", "b"))
    x, t_x, big_t, t = (mpmath.mpf(v) for v in (x, t_x, big_t, t))
    z = t / (alpha + big_t + t)
    if model == "bg_nbd":
        h = mpmath.hyp2f1(r + x, b + x, a + b + x - 1, z)
        first = (a + b + x - 1) / (a - 1)
        odds = (a / (b + x - 1)) * ((alpha + big_t) / (alpha + t_x)) ** (r + x) if x > 0 else 0
    else:
        h = mpmath.hyp2f1(r + x, b + x + 1, a + b + x, z)
        first = (a + b + x) / (a - 1)
        odds = (a / (b + x)) * ((alpha + big_t) / (alpha + t_x)) ** (r + x)
    return first * (1 - h * ((alpha + big_t) / (alpha + big_t + t)) ** (r + x)) / (1 + odds)


@pytest.mark.parametrize("model", ["bg_nbd", "mbg_nbd"])
def test_expected_purchases_match_arbitrary_precision_where_scipy_overflows(model):
    rng = np.random.default_rng(11)
    cases = [(3000.0, 38.0, 39.0, 13.0)]  # z = 0.25 with alpha ~ 0: scipy's hyp2f1 is inf
    for _ in range(40):
        big_t = float(rng.uniform(0.5, 150))
        x = float(rng.choice([0, 1, 3, 20, 400, 5000]))
        t_x = 0.0 if x == 0 else float(rng.uniform(0, big_t))
        cases.append((x, t_x, big_t, float(rng.choice([4, 52, 520, 5200]))))
    for x, t_x, big_t, t in cases:
        fit = {"r": float(rng.uniform(0.1, 3)), "alpha": float(rng.uniform(0.01, 20)),
               "a": float(rng.uniform(0.2, 4)), "b": float(rng.uniform(0.5, 8))}  # fmt: skip
        if abs(fit["a"] - 1) < 0.05:
            continue
        got = btyd.expected_purchases(model, fit, t, x, t_x, big_t)
        want = float(_reference_expectation(model, fit, t, x, t_x, big_t))
        assert got == pytest.approx(want, rel=1e-9, abs=1e-300), (x, t_x, big_t, t, fit)
    # The direct series scipy evaluates overflows for these histories (the reason for Euler's
    # transformation): hyp2f1(r + x, b + x; a + b + x - 1; 0.25) at x = 3000.
    assert math.isinf(special.hyp2f1(0.24 + 3000, 2.4 + 3000, 0.8 + 2.4 + 3000 - 1, 0.25))


def test_hyp2f1_series_with_z_near_one_matches_mpmath_or_says_it_cannot():
    a, b, c = np.array([0.7, 2.2, -0.3]), np.array([-0.2, 0.5, 1.7]), np.array([0.9, 3.5, 4000.0])
    z = np.array([0.999, 0.9995, 0.99])
    got = hyp2f1(a, b, c, z)
    for i in range(3):
        assert got[i] == pytest.approx(float(mpmath.hyp2f1(a[i], b[i], c[i], z[i])), rel=1e-12)
    # Beyond MAX_TERMS (z within ~1e-4 of 1: a horizon 10,000 times the customer's age) the
    # sum is NaN, which scoring flags, never a truncated number.
    assert math.isnan(hyp2f1(2.2, 0.5, 3.5, 0.99999))


EVENTS_SCHEMA = "customer_id string, event_time timestamp, amount double, event_type string"


def _days(spark, rows):
    events = spark.createDataFrame(
        [(c, dt.datetime.fromisoformat(t), a, e) for c, t, a, e in rows], EVENTS_SCHEMA
    )
    return summary.purchase_days(events, time_zone="UTC")


def test_summary_counts_purchase_days_and_the_repeat_value_by_hand(spark):
    rows = [
        ("a", "1997-01-01 09:00:00", 10.0, "order"),
        ("a", "1997-01-01 18:00:00", 5.0, "order"),  # same day: one transaction of 15
        ("a", "1997-01-18 10:00:00", 30.0, "order"),
        ("a", "1997-02-01 10:00:00", 12.0, "return"),  # after the first day: net only
        ("a", "1997-08-02 10:00:00", 20.0, "order"),
        ("a", "1997-10-01 10:00:00", 99.0, "order"),  # after as_of
        ("b", "1997-03-01 10:00:00", 40.0, "order"),
        ("c", "1997-03-01 10:00:00", 7.0, "visit"),  # no purchase: no row
        ("d", "1997-05-01 10:00:00", 8.0, "order"),
        ("d", "1997-06-01 10:00:00", 3.0, "order"),
        ("d", "1997-06-02 10:00:00", 9.0, "return"),  # net repeat spend 3 - 9 < 0
    ]
    days = _days(spark, rows)
    as_of = dt.date(1997, 9, 30)
    gross = {r.customer_id: r for r in summary.summarise(days, as_of=as_of, unit="week")
             .collect()}  # fmt: skip
    assert sorted(gross) == ["a", "b", "d"]
    a = gross["a"]
    assert (a.x, a.t_x, a["T"]) == (2, pytest.approx(213 / 7), pytest.approx(272 / 7))
    assert a.repeat_value == pytest.approx((30.0 + 20.0) / 2) and a.flag is None
    assert gross["b"].x == 0 and gross["b"].repeat_value is None and gross["b"].t_x == 0
    net = {r.customer_id: r for r in summary.summarise(days, as_of=as_of, unit="day", net=True)
           .collect()}  # fmt: skip
    assert net["a"].repeat_value == pytest.approx((30.0 + 20.0 - 12.0) / 2)
    assert net["a"].t_x == 213 and net["a"]["T"] == 272
    assert net["d"].repeat_value == pytest.approx(3.0 - 9.0)
    assert net["d"].flag == summary.NON_POSITIVE_SPEND


def test_backtest_actual_holdout_counts_equal_a_hand_count(spark):
    start = dt.date(2024, 1, 1)
    rng = np.random.default_rng(5)
    rows, holdout_days = [], {}
    end, as_of = dt.date(2024, 12, 31), dt.date(2025, 3, 31)  # a 90-day holdout
    for i in range(300):
        cid = f"c{i:03d}"
        first = start + dt.timedelta(days=int(rng.integers(0, 60)))
        picked = {first} | {first + dt.timedelta(days=int(d))
                            for d in rng.integers(1, 450, rng.integers(0, 12))}  # fmt: skip
        for day in sorted(picked):
            rows.append((cid, f"{day} 12:00:00", 10.0, "order"))
            rows.append((cid, f"{day} 13:00:00", 1.0, "order"))  # a second order, same day
        holdout_days[cid] = sum(1 for d in picked if end < d <= as_of)
    days = _days(spark, rows).cache()
    vc = ValueConfig(time_unit="day", holdout_periods=90, min_calibration_periods=180)
    checked = backtest.run(days, vc, as_of=as_of)
    days.unpersist()
    assert checked.skipped is None and checked.calibration_end == end
    assert checked.customers == 300
    assert checked.actual == sum(holdout_days.values())
    by_x = {r["x"]: r for r in checked.by_frequency}
    assert sum(r["customers"] for r in by_x.values()) == 300
    assert checked.predicted > 0 and checked.tracking[-1]["actual"] > 0


def _summary_frame(spark, x, values, seed=0):
    """A summary frame with heterogeneous histories: T uniform in (10, 52) weeks, x as given,
    t_x uniform in (0, T) for repeat buyers."""
    rng = np.random.default_rng(seed)
    rows = []
    for i, (xi, vi) in enumerate(zip(x, values, strict=True)):
        big_t = float(rng.uniform(10, 52))
        t_x = float(rng.uniform(0, big_t)) if xi else 0.0
        rows.append((f"c{i}", int(xi), t_x, big_t, None if vi is None else float(vi), None))
    return spark.createDataFrame(
        rows, "customer_id string, x long, t_x double, T double, repeat_value double, "
        "flag string"
    )  # fmt: skip


def test_too_few_customers_and_no_repeat_buyers_are_named(spark):
    vc = ValueConfig(min_customers=50, min_repeat_buyers=10)
    with pytest.raises(InputError, match=r"only 20 customer\(s\).*value.min_customers"):
        fitting.fit(_summary_frame(spark, [1] * 20, [5.0] * 20), vc)
    one_timers = _summary_frame(spark, [0] * 200, [None] * 200)
    with pytest.raises(InputError, match=r"0 repeat buyer\(s\).*value.min_repeat_buyers"):
        fitting.fit(one_timers, vc)


def simulate_bg_nbd(n, params, seed):
    """Histories from the BG/NBD process itself (FHL 2005, section 2): rate ~ Gamma(r, alpha),
    dropout ~ Beta(a, b); purchases follow a Poisson process while alive, and after every
    repeat purchase the customer leaves with probability p (not after the first: that is
    MBG/NBD); observed for T weeks after the first purchase."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        lam = rng.gamma(params["r"], 1 / params["alpha"])
        p = rng.beta(params["a"], params["b"])
        big_t = float(rng.uniform(10, 52))
        t, x, t_x = 0.0, 0, 0.0
        while True:
            t += rng.exponential(1 / lam)
            if t > big_t:
                break
            x, t_x = x + 1, t
            if rng.random() < p:
                break
        out.append((x, t_x, big_t))
    return out


def test_simulated_bg_nbd_histories_give_back_their_parameters():
    truth = {"r": 0.8, "alpha": 6.0, "a": 1.5, "b": 4.0}
    rows = np.array(simulate_bg_nbd(8000, truth, seed=1))
    fit = btyd.fit_counts("bg_nbd", rows[:, 0], rows[:, 1], rows[:, 2], np.ones(len(rows)))
    assert fit.converged
    for name, value in truth.items():
        # within 3 standard errors of the truth (the errors come from the fit's Hessian)
        assert abs(fit[name] - value) <= 3 * fit.std_errors[name], (name, fit[name])


def simulate_gamma_gamma(x, params, seed):
    """Mean repeat values from the Gamma-Gamma process (Fader & Hardie 2013): per customer
    nu ~ Gamma(q, gamma), each of the x transactions ~ Gamma(p, nu) (rates)."""
    rng = np.random.default_rng(seed)
    out = []
    for xi in x:
        nu = rng.gamma(params["q"], 1 / params["gamma"])
        out.append(float(rng.gamma(params["p"], 1 / nu, xi).mean()) if xi else None)
    return out


def test_simulated_gamma_gamma_spend_gives_back_its_parameters():
    truth = {"p": 4.0, "q": 3.0, "gamma": 20.0}
    x = np.random.default_rng(4).integers(1, 8, 6000)
    fit = btyd.fit_spend(x, np.array(simulate_gamma_gamma(x, truth, seed=5)))
    assert fit.converged
    for name, value in truth.items():
        assert abs(fit[name] - value) <= 3 * fit.std_errors[name], (name, fit[name])


def test_spend_without_a_finite_mean_is_refused(spark):
    rows = simulate_bg_nbd(800, {"r": 0.8, "alpha": 6.0, "a": 1.5, "b": 4.0}, seed=2)
    # q = 0.7: each customer's mean spend has no finite mean across customers.
    values = simulate_gamma_gamma([r[0] for r in rows], {"p": 4.0, "q": 0.7, "gamma": 20.0}, 6)
    frame = spark.createDataFrame(
        [(f"c{i}", x, t_x, big_t, v, None) for i, ((x, t_x, big_t), v) in
         enumerate(zip(rows, values, strict=True))],
        "customer_id string, x long, t_x double, T double, repeat_value double, flag string",
    )  # fmt: skip
    with pytest.raises(InputError, match=r"q = .* <= 1.*infinite"):
        fitting.fit(frame, ValueConfig(min_customers=50))


def test_a_fit_that_did_not_converge_is_an_error_naming_the_model():
    fit = btyd.Fit("bg_nbd", {"r": 1.0}, {"r": math.nan}, -1.0, False, "ABNORMAL", 10)
    with pytest.raises(InputError, match=r"bg_nbd fit did not converge \(ABNORMAL"):
        fitting._check_converged(fit, ValueConfig())


def test_spark_scoring_equals_the_registered_predict(spark):
    vm = scoring.ValueModel("mbg_nbd", PUBLISHED_BG_NBD, PUBLISHED_GAMMA_GAMMA, "week", 26.0,
                            0.25, 0.08)  # fmt: skip
    frame = pd.DataFrame({"customer_id": ["a", "b", "c", "d"], "x": [0, 1, 12, 3],
                          "t_x": [0.0, 3.5, 30.0, 10.0], "T": [5.0, 20.0, 31.0, 40.0],
                          "repeat_value": [None, 12.0, 30.0, -4.0],
                          "flag": [None, None, None, summary.NON_POSITIVE_SPEND]})  # fmt: skip
    scored = scoring.score(spark.createDataFrame(frame), vm).orderBy("customer_id").toPandas()
    want = scoring.predict(vm, frame)
    for column in want.columns:
        np.testing.assert_allclose(scored[column], want[column], rtol=1e-12, err_msg=column)
    # A non-positive repeat spend is valued at the population mean, and keeps its flag.
    assert scored.loc[3, "expected_order_value"] == pytest.approx(vm.population_order_value)
    assert scored.loc[3, "flag"] == summary.NON_POSITIVE_SPEND
    # MBG/NBD lets a customer leave right after the first purchase: P(alive) < 1 at x = 0.
    assert 0 < scored.loc[0, "p_alive"] < 1


@pytest.mark.slow
def test_cdnow_value_report_renders_in_chromium_with_the_backtest(cdnow, tmp_path):
    from tests.conftest import browser_render

    _, result = cdnow
    checked = result.backtest
    assert checked.skipped is None and checked.calibration_end == dt.date(1997, 7, 1)
    assert checked.customers == 2357  # every customer's first purchase was before July
    assert checked.predicted == pytest.approx(checked.actual, rel=0.25)
    shot = browser_render(Path(result.paths["report"]), tmp_path / "value.png",
                          rows=("#parameters", "#calibration"))  # fmt: skip
    assert shot["errors"] == []
    assert shot["images"] == {"value_calibration_holdout", "value_tracking"}
    assert shot["rows"]["#parameters"] == 4 + 3 + 2  # estimates and both log-likelihoods
    assert shot["rows"]["#calibration"] == len(checked.by_frequency) == 8
