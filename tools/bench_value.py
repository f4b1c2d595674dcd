"""The customer-value stages at benchmark sizes (``make bench``): the BTYD summary, the fits, the
backtest and the scoring, and the scoring's two ways of summing the hypergeometric series.

The library scores the expected purchases with an Arrow-vectorised pandas UDF
(``value.scoring``); the alternative measured here is the same series as a Spark built-in
higher-order function, ``aggregate`` over ``sequence(1, N)``. A built-in cannot stop a row's sum
early, so every row runs the number of terms the slowest row needs (``terms_needed``, found with
the numpy series itself, whose proven tail bound decides when to stop).

``fit_at_scale`` times the BG/NBD fit on a million simulated customers (the fit's cost grows
with the number of distinct ``(x, t_x, T)`` rows, not with the customers).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from pyspark.sql import Column, SparkSession
from pyspark.sql import functions as F

from segmentation.config import AppConfig
from segmentation.inputs import quality
from segmentation.value import backtest, btyd, fitting, scoring, summary
from segmentation.value.hypergeometric import tail_ratio_bound


def terms_needed(vm: scoring.ValueModel, x: np.ndarray, t_x: np.ndarray, big_t: np.ndarray) -> int:
    """The most terms any customer's series needs over the horizon's monthly steps."""
    r, alpha, a, b = (vm.counts[k] for k in btyd.COUNT_PARAMETERS)
    upper = a + b - 1 - r if vm.model == "bg_nbd" else a + b - r
    shift = 0.0 if vm.model == "bg_nbd" else 1.0
    c = a + b + x - 1 + shift
    worst = 0
    for t, _ in vm.steps():
        z = t / (alpha + big_t + t)
        term, total, k = np.ones_like(z), np.ones_like(z), 0
        active = np.ones_like(z, dtype=bool)
        while active.any() and k < 200_000:
            term = term * (upper + k) * (a - 1 + k) / ((c + k) * (k + 1)) * z
            total = total + term
            bound = tail_ratio_bound(np.full_like(z, upper), np.full_like(z, a - 1), c, z, k + 1)
            with np.errstate(divide="ignore", invalid="ignore"):
                rest = np.abs(term) * bound / (1 - bound)
            active &= ~((bound < 1) & (rest <= 1e-15 * np.abs(total)))
            k += 1
        worst = max(worst, k)
    return worst


def _series(upper: float, lower: float, c: Column, z: Column, terms: int) -> Column:
    """``2F1(upper, lower; c; z)`` as a built-in: ``terms`` terms for every row."""
    start = F.struct(F.lit(1.0).alias("t"), F.lit(1.0).alias("s"))

    def step(acc: Column, k: Column) -> Column:
        kd = k.cast("double") - 1
        t = acc["t"] * (F.lit(upper) + kd) * (F.lit(lower) + kd) / ((c + kd) * (kd + 1)) * z
        return F.struct(t.alias("t"), (acc["s"] + t).alias("s"))

    return F.aggregate(F.sequence(F.lit(1), F.lit(terms)), start, step, lambda acc: acc["s"])


def builtin_expected(vm: scoring.ValueModel, terms: int) -> Column:
    """The discounted expected purchases over the horizon with built-ins only."""
    r, alpha, a, b = (vm.counts[k] for k in btyd.COUNT_PARAMETERS)
    upper = a + b - 1 - r if vm.model == "bg_nbd" else a + b - r
    shift = 0.0 if vm.model == "bg_nbd" else 1.0
    x, big_t = F.col("x").cast("double"), F.col("T")
    c = F.lit(a + b - 1 + shift) + x
    p_alive = scoring._p_alive(vm)
    previous, discounted = F.lit(0.0), F.lit(0.0)
    for t, years in vm.steps():
        z = F.lit(t) / (F.lit(alpha + t) + big_t)
        tail = F.pow(1 - z, F.lit(a - 1)) * _series(upper, a - 1, c, z, terms)
        expected = c / F.lit(a - 1) * (1 - tail) * p_alive
        discounted = discounted + (expected - previous) / F.lit((1 + vm.discount_rate) ** years)
        previous = expected
    return discounted


def run(
    spark: SparkSession, cfg: AppConfig, measured: Any, stages: list, *, builtin: bool = True
) -> dict[str, Any]:
    """The value stages on the benchmark's events; ``measured`` is the benchmark's timer;
    ``builtin``: also time the built-in series the library does not use (and compare)."""
    vc, as_of = cfg.value, cfg.features.as_of
    out: dict[str, Any] = {}
    with measured(stages, "value: BTYD summary") as st:
        events = quality.clean_events(spark, cfg)
        days = summary.purchase_days(events.clean, time_zone=cfg.input.events.time_zone).cache()
        snap = summary.summarise(days, as_of=as_of, unit=vc.time_unit).cache()
        n = snap.count()
        st.detail = f"{n:,} customers with a purchase (read, checked, one row per purchase day)"
    with measured(stages, "value: fit (BG/NBD + Gamma-Gamma)") as st:
        fitted = fitting.fit(snap, vc, customers=n)
        st.detail = (f"{fitted.counts.observations:,} customers, "
                     f"{fitted.repeat_buyers:,} repeat buyers")  # fmt: skip
    with measured(stages, "value: backtest") as st:
        checked = backtest.run(days, vc, as_of=as_of)
        st.detail = checked.skipped or f"{checked.customers:,} customers in the calibration"
    with measured(stages, "value: scoring (Arrow UDF)") as st:
        scored = scoring.score(snap, fitted.model).cache()
        scored.count()
        st.detail = f"{n:,} customers, 12 monthly steps of the series each"
    if builtin:
        out["value_builtin_max_abs_diff"] = _builtin(snap, scored, fitted.model, vc.margin,
                                                     measured, stages, n)  # fmt: skip
    for df in (scored, snap, days):
        df.unpersist()
    events.staged.unpersist()
    return out


def _builtin(snap: Any, scored: Any, vm: scoring.ValueModel, margin: float, measured: Any,
             stages: list, n: int) -> float:  # fmt: skip
    """Times the built-in series and returns its largest difference from the library's."""
    sample = snap.select("x", "t_x", "T").sample(fraction=min(1.0, 200_000 / n), seed=1)
    rows = sample.collect()
    terms = terms_needed(
        vm, *(np.array([r[c] for r in rows], dtype=np.float64) for c in ("x", "t_x", "T"))
    )
    with measured(stages, "value: scoring (built-in series, not used)") as st:
        alt = snap.select("customer_id", builtin_expected(vm, terms).alias("d")).cache()
        alt.count()
        st.detail = f"aggregate over sequence(1, {terms}) per step and row"
    check = scored.select("customer_id", "clv", "expected_order_value").join(alt, "customer_id")
    worst = check.select(F.max(F.abs(F.col("clv") / (F.lit(margin) * F.col(
        "expected_order_value")) - F.col("d")))).first()  # fmt: skip
    alt.unpersist()
    return float(worst[0] or 0.0) if worst is not None else 0.0


def fit_at_scale(customers: int = 1_000_000, seed: int = 7) -> tuple[float, int]:
    """Seconds to fit BG/NBD on ``customers`` simulated weekly histories (grouped by
    ``(x, t_x, T)`` in whole days, as the summary makes them), and the grouped rows."""
    rng = np.random.default_rng(seed)
    lam = rng.gamma(0.8, 1 / 6.0, customers)
    p = rng.beta(1.5, 4.0, customers)
    big_t = rng.integers(1, 157, customers) * 7 / 7.0  # whole weeks of a three-year history
    x = np.zeros(customers)
    t_x = np.zeros(customers)
    t = np.zeros(customers)
    alive = np.ones(customers, dtype=bool)
    while alive.any():
        t = t + rng.exponential(1 / lam)
        buy = alive & (t <= big_t)
        x[buy] += 1
        t_x[buy] = np.round(t[buy] * 7) / 7  # days, in weeks
        alive = buy & (rng.random(customers) >= p)
    keys, weights = np.unique(np.stack([x, t_x, big_t]), axis=1, return_counts=True)
    started = time.perf_counter()
    btyd.fit_counts("bg_nbd", keys[0], keys[1], keys[2], weights)
    return time.perf_counter() - started, keys.shape[1]


VALUE_START, VALUE_END = "<!-- value:start -->", "<!-- value:end -->"
FIT_LINE = "BG/NBD fit on 1,000,000 simulated customers"


def render_size(events: int, stages: list[Any], out: dict[str, Any], produced: str) -> str:
    """One size's block of the customer-value section: its stages and how it was produced."""
    lines = [f"### {events:,} events", "", produced, "", "| stage | s | peak MiB | detail |",
             "|---|---:|---:|---|"]  # fmt: skip
    lines += [f"| {s.name} | {s.seconds:.1f} | {s.peak_rss_mb:,.0f} | {s.detail} |"
              for s in stages]  # fmt: skip
    if "value_builtin_max_abs_diff" in out:
        lines += ["", "Largest difference between the Arrow UDF's and the built-in series' CLV "
                  f"per unit margin: {out['value_builtin_max_abs_diff']:.2e}."]  # fmt: skip
    else:
        lines += ["", "The built-in series was not timed at this size (`--builtin-up-to`): "
                  "it is two orders of magnitude slower than the Arrow UDF at 10M."]  # fmt: skip
    return "\n".join(lines)


def _blocks(section: str) -> tuple[list[str], dict[str, str], str]:
    """The section's head, its per-size blocks (keyed by their header line) and its tail."""
    head: list[str] = []
    blocks: dict[str, str] = {}
    tail = ""
    current = None
    for line in section.splitlines():
        if line.startswith(FIT_LINE):
            tail, current = line, None
        elif line.startswith("### "):
            current = line
            blocks[current] = line
        elif current is not None:
            blocks[current] += "\n" + line
        elif not tail:
            head.append(line)
    return head, {k: v.rstrip() for k, v in blocks.items()}, tail


def merge(section: str, sized: dict[int, str], fit: tuple[float, int] | None, machine: str) -> str:
    """``section`` (the text between the markers) with the sizes of this run replaced or added
    (the other sizes' blocks, notes included, are kept) and the fit line replaced."""
    _, blocks, tail = _blocks(section)
    for events, block in sized.items():
        blocks[f"### {events:,} events"] = block

    def size(header: str) -> int:
        return int(header.split()[1].replace(",", ""))

    lines = ["## Customer value stages", "", f"Machine: {machine}.", ""]
    for header in sorted(blocks, key=size):
        lines += [blocks[header], ""]
    if fit is not None:
        seconds, grouped = fit
        tail = (f"{FIT_LINE} ({grouped:,} distinct (x, t_x, T) rows, weighted): "
                f"{seconds:.1f} s on the driver.")  # fmt: skip
    lines.append(tail)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m tools.bench_value --sizes 1M``: the value stages on the benchmark's sample
    (generated when absent) and the fit at 1M customers, merged into BENCHMARKS.md (the
    blocks of sizes not run are kept)."""
    import argparse
    import datetime as dt
    from pathlib import Path

    from segmentation.config import load_config
    from segmentation.runtime.session import build_session
    from segmentation.storage import delta_tables
    from segmentation.workflows import generate
    from tools import bench, benchmark

    parser = argparse.ArgumentParser(description="customer value benchmark")
    parser.add_argument("--sizes", default="1M")
    parser.add_argument("--workdir", default="/tmp/segmentation-bench")
    parser.add_argument("--driver-memory", default="8g")
    parser.add_argument(
        "--builtin-up-to", default="10M", help="largest size at which the unused series is timed"
    )
    parser.add_argument("--no-fit-at-scale", action="store_true")
    parser.add_argument("--out", default=str(bench.ROOT / "BENCHMARKS.md"))
    args = parser.parse_args(argv)
    base = load_config(bench.ROOT / "conf" / "local.yaml")
    spark_conf = {**base.spark.conf, "spark.driver.memory": args.driver_memory}
    base = base.model_copy(update={"spark": base.spark.model_copy(update={"conf": spark_conf})})
    spark = build_session(base, job="benchmark-value")
    sized: dict[int, str] = {}
    try:
        for events in (bench.parse_size(s) for s in args.sizes.split(",")):
            cfg = benchmark.bench_config(base, events, Path(args.workdir))
            spark.conf.set("spark.sql.shuffle.partitions", str(cfg.spark.shuffle_partitions))
            if not delta_tables.exists(spark, cfg.events_path()):
                generate.run(spark, cfg)
            stages: list[Any] = []
            builtin = events <= bench.parse_size(args.builtin_up_to)
            out = run(spark, cfg, benchmark.measured, stages, builtin=builtin)
            produced = (
                f"Produced by `python -m tools.bench_value --sizes {args.sizes}` "
                f"({dt.date.today().isoformat()}, driver memory {args.driver_memory})."
            )
            sized[events] = render_size(events, stages, out, produced)
            print(sized[events], flush=True)
    finally:
        spark.stop()
    fit = None if args.no_fit_at_scale else fit_at_scale()
    out_path = Path(args.out)
    doc = out_path.read_text(encoding="utf-8")
    if VALUE_START not in doc:
        doc = f"{doc.rstrip()}\n\n{VALUE_START}\n{VALUE_END}\n"
    head, _, rest = doc.partition(VALUE_START)
    section, _, after = rest.partition(VALUE_END)
    text = merge(section, sized, fit, benchmark.machine_description())
    out_path.write_text(f"{head}{VALUE_START}\n{text}\n{VALUE_END}{after}", encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
