"""Side-by-side benchmark: the Spark job's stages against DuckDB + scikit-learn, same data.

For each size, one run generates the sample events, then times every stage of the pipeline
(features, Delta write, k selection, final fit, assignment, membership write) and the
single-node baseline on the same data and the same cores: DuckDB computes the same features
from the same Parquet files, scikit-learn fits KMeans on the same scaled matrix with the same k
and iteration count. Wall time and peak resident memory are recorded per stage.

DuckDB, scikit-learn and numpy are benchmark-only dependencies (the ``bench`` extra).
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import threading
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from segmentation.config import AppConfig
from segmentation.features import behaviour as feat
from segmentation.features.levels import OTHER_LEVEL, level_name
from segmentation.modeling import model_validation, restarts, training
from segmentation.modeling.evaluation import adjusted_rand_index_from_counts
from segmentation.runtime import tracking
from segmentation.storage import delta_tables, tables
from segmentation.workflows import build_features, generate

EVENTS_PER_CUSTOMER = 50


@dataclass
class Stage:
    name: str
    seconds: float
    peak_rss_mb: float
    detail: str = ""


@dataclass
class SizeResult:
    events: int
    customers: int
    spark: list[Stage] = field(default_factory=list)
    baseline: list[Stage] = field(default_factory=list)
    chosen_k: int = 0
    iterations: int = 0
    init_centers: list[list[float]] = field(default_factory=list)
    checks: dict[str, Any] = field(default_factory=dict)

    def seconds(self, side: str, name: str) -> float:
        stages = self.spark if side == "spark" else self.baseline
        return next(s.seconds for s in stages if s.name == name)


# --- memory ------------------------------------------------------------------------------


def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _available_mb() -> int:
    """MemAvailable from /proc/meminfo, in MiB (4096 if unknown)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) // 1024
    except OSError:
        pass
    return 4096


def _descendants(root: int) -> list[int]:
    """``root`` and every process below it (the Spark driver JVM runs under this process)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


@contextmanager
def measured(stages: list[Stage], name: str, *, tree: bool = True) -> Iterator[Stage]:
    """Time the block and sample the resident memory (of this process and, with ``tree``, its
    children: the JVM) every 50 ms; the peak is recorded."""
    stage = Stage(name=name, seconds=0.0, peak_rss_mb=0.0)
    pids = _descendants(os.getpid()) if tree else [os.getpid()]
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, sum(_rss_kb(p) for p in pids))
            done.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    start = time.perf_counter()
    sampler.start()
    try:
        yield stage
    finally:
        stage.seconds = time.perf_counter() - start
        done.set()
        sampler.join()
        peak = max(peak, sum(_rss_kb(p) for p in pids))
        stage.peak_rss_mb = peak / 1024
        stages.append(stage)


# --- the Spark side ----------------------------------------------------------------------


def run_spark(spark: SparkSession, cfg: AppConfig, result: SizeResult) -> dict[str, Any]:
    """Time the pipeline's stages; returns what the baseline and the checks need."""
    fc, t = cfg.features, cfg.training
    stages = result.spark
    # The product's own feature stage (build_features up to its writes): quality rules and
    # quarantine, de-duplication, levels, features; both snapshots computed and persisted.
    experiment_id = tracking.configure(cfg.tracking)
    with tracking.run(experiment_id, "benchmark features") as run_id:
        with measured(stages, "features") as st:
            staged = build_features.compute(spark, cfg, run_id=run_id)
            result.customers = staged.customers
            n_rejected = sum(staged.rejected_counts.values())
            result.checks["spark_rejected"] = n_rejected
            st.detail = (
                f"{result.customers:,} customers x {len(staged.feature_columns)}; "
                f"{n_rejected:,} events quarantined"
            )
        with measured(stages, "write customer_features, rejected_events (Delta)"):
            tables.write_in_order(staged.writes(spark, cfg, job="benchmark", run_id=run_id))
        staged.unpersist()
    with measured(stages, "read customer_features (cached)") as st:
        features_path = tables.path(cfg.storage, tables.FEATURES)
        features_df = delta_tables.read(
            spark, features_path, partitions={feat.AS_OF: fc.as_of}
        ).cache()
        st.detail = f"{features_df.count():,} rows"
    estimator = training.estimator(t)
    with measured(stages, "k selection") as st:
        scaling = estimator.fit_scaling(features_df)
        sample = training.selection_sample(t, features_df, scaling)
        selection = training.select_k(t, sample)
        result.chosen_k = selection.chosen_k
        st.detail = (
            f"k {t.k_min}-{t.k_max} x {t.n_init} restarts on {selection.sample_rows:,} rows, "
            f"chose {selection.chosen_k}"
        )
    with measured(stages, "final fit (sample centres and restarts)") as st:
        model, seed = training.final_fit(t, estimator, features_df, scaling, selection)
        result.iterations = model.iterations
        kept = "the sample's centres" if seed is None else f"restart seed {seed}"
        st.detail = (
            f"k={selection.chosen_k} on all customers: Lloyd from the selection sample's centres"
            f" and {t.n_init} seeded k-means|| restarts (concurrent); kept {kept}, "
            f"{result.iterations} iterations"
        )
    if cfg.validation.enabled:
        with measured(stages, "segment validation") as st:
            checked = model_validation.validate(
                spark, cfg, sample=sample, estimator=estimator, model=model,
                features=features_df,
            )  # fmt: skip
            vc = cfg.validation
            share = checked.get("outcome_customer_share")
            judged = (
                "all customers"
                if share is None or share.value is None
                else f"a {share.value:.0%} sample of customers (validation.outcome.max_customers)"
            )
            st.detail = (
                f"{vc.bootstrap_samples} bootstrap refits and split-half on "
                f"{selection.sample_rows:,} rows; outcome {vc.outcome.mode}"
                + (f" skipped ({checked.skipped['outcome']})" if "outcome" in checked.skipped
                   else f" over {vc.outcome.horizon_days} days, {judged}")
            )  # fmt: skip
    # The comparison with scikit-learn: one k-means run from the same start (the selection
    # sample's centres of the chosen k), the same matrix, k and iteration limit, each side to
    # its own convergence (Spark: no centre moves more than 1e-4; scikit-learn tol=0: the
    # labels stop changing).
    result.init_centers = [list(c) for c in selection.chosen.centers]
    with measured(stages, "final fit") as st:
        single = restarts.refine(features_df, scaling, result.init_centers, max_iter=t.max_iter)
        result.checks["spark_single_cost"] = single.training_cost
        st.detail = (
            f"one k-means run from the sample's centres (restarts.refine), k="
            f"{selection.chosen_k}, {single.iterations} iterations"
        )
    result.checks["spark_cost"] = model.training_cost
    with measured(stages, "assignment") as st:
        assigned = model.transform(features_df).cache()
        st.detail = f"{assigned.count():,} customers"
    with measured(stages, "write segment_membership (Delta)"):
        delta_tables.write(
            spark,
            assigned.select(feat.CUSTOMER_ID, F.lit(fc.as_of).alias(feat.AS_OF),
                            tables.SEGMENT_ID, tables.DISTANCE),
            tables.path(cfg.storage, tables.MEMBERSHIP),
            delta_tables.WriteOptions(partition_by=(feat.AS_OF,), replace={feat.AS_OF: fc.as_of}),
        )  # fmt: skip
    scaled = model.scaling.stage().transform(features_df)
    matrix = scaled.select(feat.CUSTOMER_ID, *model.scaling.scaled_columns).toPandas()
    labels = assigned.select(feat.CUSTOMER_ID, tables.SEGMENT_ID).toPandas()
    spark_features = features_df.toPandas() if result.customers <= 200_000 else None
    features_df.unpersist()
    assigned.unpersist()
    return {
        "levels": staged.levels,
        "matrix": matrix,
        "labels": labels,
        "features": spark_features,
        "scaled_columns": model.scaling.scaled_columns,
    }


# --- the baseline ------------------------------------------------------------------------


def duckdb_quality_sql(files: Sequence[str], *, earliest: dt.date, latest: dt.date) -> str:
    """The job's input semantics in DuckDB: canonical columns (``sources``), a reject reason per
    event (``quality.reject_reason``) and each valid event's copy number among its duplicates
    (``quality.split_events``), into the temporary table ``checked``."""
    epoch = dt.date(1970, 1, 1)
    first_us = (earliest - epoch).days * 86_400_000_000
    end_us = ((latest - epoch).days + 1) * 86_400_000_000
    file_list = ", ".join(f"'{f}'" for f in files)
    order = ", ".join(f"{c} ASC NULLS FIRST" for c in tables.CANONICAL_EVENTS.names)
    return f"""
CREATE TEMP TABLE checked AS
WITH canonical AS (
  SELECT trim(customer_id) AS customer_id, event_time, amount,
         CASE WHEN lower(trim(event_type)) IN ('order', 'purchase', 'sale') THEN 'order'
              WHEN lower(trim(event_type)) IN ('return', 'refund') THEN 'return'
              WHEN lower(trim(event_type)) IN ('visit', 'view', 'session') THEN 'visit'
              ELSE 'other' END AS event_type,
         lower(trim(category)) AS category, lower(trim(channel)) AS channel,
         lower(trim(device)) AS device, TRY_CAST(quantity AS DOUBLE) AS quantity, discount,
         event_id
  FROM read_parquet([{file_list}])
), flagged AS (
  SELECT *, CASE
    WHEN customer_id IS NULL OR customer_id = '' THEN 'missing_customer_id'
    WHEN event_time IS NULL THEN 'invalid_event_time'
    WHEN epoch_us(event_time) < {first_us} OR epoch_us(event_time) >= {end_us}
      THEN 'implausible_event_time'
    WHEN amount IS NULL OR isnan(amount) OR isinf(amount) THEN 'invalid_amount'
    WHEN amount < 0 AND event_type <> 'return' THEN 'negative_amount'
  END AS reason
  FROM canonical
)
SELECT *, CASE WHEN reason IS NULL THEN row_number() OVER (
    PARTITION BY reason IS NULL, customer_id, event_id,
      CASE WHEN event_id IS NULL THEN epoch_us(event_time) END,
      CASE WHEN event_id IS NULL THEN amount END,
      CASE WHEN event_id IS NULL THEN event_type END,
      CASE WHEN event_id IS NULL THEN category END,
      CASE WHEN event_id IS NULL THEN channel END,
      CASE WHEN event_id IS NULL THEN device END,
      CASE WHEN event_id IS NULL THEN quantity END,
      CASE WHEN event_id IS NULL THEN discount END
    ORDER BY {order}) END AS copy
FROM flagged
"""


def duckdb_features_sql(
    *,
    as_of: dt.date,
    windows_days: Sequence[int],
    trend_window_days: int,
    levels: dict[str, Sequence[str]],
) -> str:
    """The same features in one DuckDB query over the usable events of ``checked`` (same
    semantics: customer-day pre-aggregation, then per customer)."""
    # Days as integers since the epoch (UTC), as Spark's session time zone computes them; no
    # time zone support (DuckDB's icu extension) is needed.
    as_of_day = (as_of - dt.date(1970, 1, 1)).days
    end_us = (as_of_day + 1) * 86_400_000_000
    day = str(as_of_day)
    cats = [c for c in levels["category"] if c != OTHER_LEVEL]

    def q(text: str) -> str:
        return text.replace("'", "''")

    daily_cols = [
        "count(*) AS events",
        "sum(is_order::INT) AS orders",
        "sum(CASE WHEN is_order THEN amt ELSE 0 END) AS order_amount",
        "sum(CASE WHEN is_return THEN amt ELSE 0 END) AS return_amount",
        "sum((is_order AND disc)::INT) AS discounted_orders",
    ]
    daily_cols += [
        f"sum(CASE WHEN is_order AND category = '{q(c)}' THEN amt ELSE 0 END) AS \"cat_{i}\""
        for i, c in enumerate(cats)
    ]
    if cats:
        known = ", ".join(f"'{q(c)}'" for c in cats)
        daily_cols.append(
            "sum(CASE WHEN is_order AND NOT coalesce(category IN "
            f"({known}), false) THEN amt ELSE 0 END) AS cat_other"
        )
    for prefix in ("channel", "device"):
        daily_cols += [
            f"sum(({prefix} = '{q(v)}')::INT) AS \"{prefix}_{i}\""
            for i, v in enumerate(levels[prefix])
        ]
        if levels[prefix]:
            daily_cols.append(f"count({prefix}) AS {prefix}_known")
    t = trend_window_days

    def ratio(num: str, den: str) -> str:
        return f"CASE WHEN ({den}) > 0 THEN ({num}) / ({den}) ELSE 0.0 END"

    out = [
        "customer_id",
        f"coalesce({day} - max(CASE WHEN orders > 0 THEN d END), {day} - min(d)) AS {feat.RECENCY}",
        f"{day} - min(d) AS {feat.TENURE}",
        f"sum(orders)::BIGINT AS {feat.FREQUENCY}",
    ]
    out += [f"sum(CASE WHEN days_ago < {w} THEN orders ELSE 0 END)::BIGINT AS orders_{w}d"
            for w in windows_days]  # fmt: skip
    out.append(f"sum(order_amount)::DOUBLE AS {feat.MONETARY}")
    out += [f"sum(CASE WHEN days_ago < {w} THEN order_amount ELSE 0 END)::DOUBLE AS "
            f"monetary_{w}d" for w in windows_days]  # fmt: skip
    out.append(f"(sum(order_amount) - sum(return_amount))::DOUBLE AS {feat.MONETARY_NET}")
    out += [f"sum(CASE WHEN days_ago < {w} THEN order_amount - return_amount ELSE 0 END)::DOUBLE "
            f"AS {feat.MONETARY_NET}_{w}d" for w in windows_days]  # fmt: skip
    out.append(f"(sum(orders) > 0)::BIGINT AS {feat.HAS_PURCHASE}")
    since_first_order = f"coalesce({day} - min(CASE WHEN orders > 0 THEN d END), {day} - min(d))"
    censored = "count(CASE WHEN orders > 0 THEN 1 END) < 2"
    recent = f"sum(CASE WHEN days_ago < {t} THEN order_amount ELSE 0 END)"
    earlier = f"sum(CASE WHEN days_ago >= {t} AND days_ago < {2 * t} THEN order_amount ELSE 0 END)"
    out += [
        f"{ratio('sum(order_amount)', 'sum(orders)')} AS {feat.AOV}",
        f"count(*)::BIGINT AS {feat.ACTIVE_DAYS}",
        f"(CASE WHEN {censored} THEN {since_first_order} ELSE avg(gap) END)::DOUBLE "
        f"AS {feat.IPI_MEAN}",
        f"(CASE WHEN {censored} THEN 0 ELSE stddev_pop(gap) END)::DOUBLE AS {feat.IPI_STD}",
        f"(CASE WHEN {censored} THEN {since_first_order} ELSE max(gap) END)::DOUBLE "
        f"AS {feat.IPI_MAX}",
        f"{ratio(f'{recent} - {earlier}', f'{recent} + {earlier}')} AS {feat.TREND}",
        f"{ratio('sum(return_amount)', 'sum(order_amount)')} AS {feat.RETURN_RATE}",
        f"{ratio('sum(discounted_orders)', 'sum(orders)')} AS {feat.DISCOUNT_SHARE}",
    ]
    for i, c in enumerate(cats):
        name = level_name("category", c)
        out.append(ratio(f'sum("cat_{i}")', "sum(order_amount)") + f' AS "{name}"')
    if cats:
        name = level_name("category", OTHER_LEVEL)
        out.append(ratio("sum(cat_other)", "sum(order_amount)") + f' AS "{name}"')
    for prefix in ("channel", "device"):
        for i, v in enumerate(levels[prefix]):
            name = level_name(prefix, v)
            out.append(ratio(f'sum("{prefix}_{i}")', f"sum({prefix}_known)") + f' AS "{name}"')
    return f"""
WITH ev AS (
  SELECT customer_id, (epoch_us(event_time) // 86400000000)::INTEGER AS d,
         event_type = 'order' AS is_order,
         event_type = 'return' AS is_return, abs(amount) AS amt,
         coalesce(discount, 0) > 0 AS disc, category, channel, device
  FROM checked
  WHERE reason IS NULL AND copy = 1 AND epoch_us(event_time) < {end_us}
), daily AS (
  SELECT customer_id, d, {day} - d AS days_ago, {", ".join(daily_cols)}
  FROM ev GROUP BY customer_id, d
), gaps AS (
  SELECT *, CASE WHEN orders > 0 THEN d - lag(CASE WHEN orders > 0 THEN d END IGNORE NULLS)
                 OVER (PARTITION BY customer_id ORDER BY d) END AS gap
  FROM daily
)
SELECT {", ".join(out)}
FROM gaps GROUP BY customer_id
"""


def run_baseline(
    spark: SparkSession, cfg: AppConfig, result: SizeResult, spark_side: dict[str, Any]
) -> Any:
    """DuckDB features and scikit-learn KMeans, each timed; returns DuckDB's feature table."""
    import duckdb
    import numpy as np
    from sklearn.cluster import KMeans

    fc, t = cfg.features, cfg.training
    # The Parquet files of the events table's current version, as Delta lists them (the
    # generator's table has no deletion vectors, so the files are exactly its rows).
    files = [
        urllib.parse.urlparse(f).path if f.startswith("file:") else f
        for f in delta_tables.read(spark, cfg.events_path()).inputFiles()
    ]
    checks_sql = duckdb_quality_sql(
        files,
        earliest=cfg.quality.earliest_event_date,
        latest=fc.as_of + dt.timedelta(days=cfg.quality.max_days_after_as_of),
    )
    features_sql = duckdb_features_sql(
        as_of=fc.as_of,
        windows_days=fc.windows_days,
        trend_window_days=fc.trend_window_days,
        levels=spark_side["levels"],
    )
    rejected_path = Path(cfg.storage.warehouse) / "duckdb_rejected.parquet"
    threads = os.cpu_count() or 1
    with measured(result.baseline, "features", tree=False) as st:
        # The Spark JVM is still alive in this process tree: DuckDB gets 3/4 of the memory
        # available now and spills to the work directory beyond that.
        memory_mb = int(_available_mb() * 0.75)
        con = duckdb.connect(
            config={
                "threads": threads,
                "memory_limit": f"{memory_mb}MB",
                "temp_directory": str(Path(cfg.storage.warehouse) / "duckdb_tmp"),
            }
        )
        con.execute(checks_sql)
        con.execute(
            "COPY (SELECT * EXCLUDE (copy) FROM checked WHERE reason IS NOT NULL OR copy > 1) "
            f"TO '{rejected_path}' (FORMAT parquet)"
        )
        out = con.sql(features_sql).arrow()
        # DuckDB 1.x returns a table, 2.x a record batch reader.
        table = out.read_all() if hasattr(out, "read_all") else out
        count = con.execute(f"SELECT count(*) FROM '{rejected_path}'").fetchone()
        result.checks["duckdb_rejected"] = int(count[0]) if count else -1
        st.detail = (
            f"DuckDB {duckdb.__version__}, {threads} threads, memory limit {memory_mb:,} MB: "
            "quality rules, de-duplication, "
            f"quarantine to Parquet, features; {table.num_rows:,} rows"
        )
        con.close()
    matrix = spark_side["matrix"]
    x = np.ascontiguousarray(matrix[spark_side["scaled_columns"]].to_numpy(dtype=np.float64))
    with measured(result.baseline, "final fit", tree=False) as st:
        km = KMeans(
            n_clusters=result.chosen_k,
            init=np.asarray(result.init_centers, dtype=np.float64),
            n_init=1,
            max_iter=t.max_iter,
            tol=0.0,
            algorithm="lloyd",
        ).fit(x)
        result.checks["sklearn_cost"] = float(km.inertia_)
        st.detail = (
            f"scikit-learn Lloyd from the same centres, k={result.chosen_k}, {km.n_iter_} "
            "iterations (tol 0)"
        )
    with measured(result.baseline, "assignment", tree=False):
        labels = km.predict(x)
    result.checks["sklearn_labels"] = dict(zip(matrix[feat.CUSTOMER_ID], labels, strict=True))
    return table


# --- checks -----------------------------------------------------------------------------


def check_agreement(result: SizeResult, spark_side: dict[str, Any], duck: Any) -> dict[str, Any]:
    """Features equal within tolerance (when collected), segment sizes and ARI across sides."""
    checks: dict[str, Any] = {}
    spark_features = spark_side["features"]
    if spark_features is not None:
        d = duck.to_pandas().set_index(feat.CUSTOMER_ID).sort_index()
        s = spark_features.set_index(feat.CUSTOMER_ID).sort_index()
        common = [c for c in s.columns if c in d.columns]
        checks["customers_equal"] = list(d.index) == list(s.index)
        worst = 0.0
        worst_col = ""
        for c in common:
            a = s[c].astype(float).to_numpy()
            b = d[c].astype(float).to_numpy()
            diff = float(abs(a - b).max() / max(1.0, float(abs(a).max()))) if len(a) else 0.0
            if diff > worst:
                worst, worst_col = diff, c
        checks["features_compared"] = len(common)
        checks["features_missing_in_baseline"] = [
            c for c in s.columns if c not in d.columns and c != feat.AS_OF
        ]
        checks["max_relative_feature_diff"] = worst
        checks["worst_feature"] = worst_col
    labels = spark_side["labels"]
    sk = result.checks.pop("sklearn_labels")
    counts: dict[tuple[object, object], int] = {}
    for cid, seg in zip(labels[feat.CUSTOMER_ID], labels[tables.SEGMENT_ID], strict=True):
        key = (int(seg), int(sk[cid]))
        counts[key] = counts.get(key, 0) + 1
    spark_sizes: dict[int, int] = {}
    sk_sizes: dict[int, int] = {}
    for (a, b), n in counts.items():
        spark_sizes[int(a)] = spark_sizes.get(int(a), 0) + n  # type: ignore[call-overload]
        sk_sizes[int(b)] = sk_sizes.get(int(b), 0) + n  # type: ignore[call-overload]
    checks["spark_sizes"] = sorted(spark_sizes.values(), reverse=True)
    checks["sklearn_sizes"] = sorted(sk_sizes.values(), reverse=True)
    total = sum(spark_sizes.values())
    checks["max_size_diff_share"] = max(
        abs(a - b) / total
        for a, b in zip(checks["spark_sizes"], checks["sklearn_sizes"], strict=False)
    )
    checks["ari_spark_vs_sklearn"] = adjusted_rand_index_from_counts(counts)
    checks["rejected_equal"] = result.checks.get("spark_rejected") == result.checks.get(
        "duckdb_rejected"
    )
    result.checks.update(checks)
    return checks


# --- report ------------------------------------------------------------------------------


def machine_description() -> str:
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(
                line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")
            )
    except (OSError, StopIteration):
        pass
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    import pyspark

    parts = [
        f"{os.cpu_count()} cores ({cpu}), {mem_gb:.0f} GiB RAM, {platform.system()} "
        f"{platform.release()}",
        f"Python {platform.python_version()}, PySpark {pyspark.__version__} (local mode), "
        f"Java {os.environ.get('JAVA_VERSION', _java_version())}",
    ]
    try:
        import duckdb
        import sklearn

        parts.append(f"DuckDB {duckdb.__version__}, scikit-learn {sklearn.__version__}")
    except ImportError:
        pass
    return "; ".join(parts)


def _java_version() -> str:
    import subprocess

    try:
        out = subprocess.run(["java", "-version"], capture_output=True, text=True, timeout=20)
        return out.stderr.splitlines()[0] if out.stderr else "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


COMPARED = ("features", "final fit", "assignment")


def render_markdown(results: Sequence[SizeResult], *, machine: str, command: str) -> str:
    lines = [
        "## Results",
        "",
        f"Produced by `{command}` on {dt.date.today().isoformat()}.",
        "",
        f"Machine: {machine}.",
        "",
        "Peak memory: resident set of the driver process and everything below it (the Spark JVM)"
        " for Spark stages; of the Python process (DuckDB, scikit-learn run in it) for the"
        " baseline. Ratio = Spark / baseline wall time.",
        "",
    ]
    for r in results:
        lines += [
            f"### {r.events:,} events, {r.customers:,} customers (k = {r.chosen_k})",
            "",
            "| stage | Spark s | Spark peak MiB | baseline s | baseline peak MiB | ratio "
            "| detail |",
            "|---|---:|---:|---:|---:|---:|---|",
        ]
        base = {s.name: s for s in r.baseline}
        total = 0.0
        for s in r.spark:
            total += s.seconds if s.name != "generate (not timed against)" else 0.0
            b = base.get(s.name)
            detail = s.detail + (f"; baseline: {b.detail}" if b and b.detail else "")
            lines.append(
                f"| {s.name} | {s.seconds:.1f} | {s.peak_rss_mb:,.0f} | "
                + (f"{b.seconds:.2f} | {b.peak_rss_mb:,.0f} | {s.seconds / b.seconds:.1f}x"
                   if b else "- | - | -")
                + f" | {detail} |"
            )  # fmt: skip
        lines.append(f"| **end to end (Spark stages)** | {total:.1f} | | | | | |")
        c = r.checks
        lines += [
            "",
            f"Checks: segment sizes Spark {c.get('spark_sizes')} vs scikit-learn "
            f"{c.get('sklearn_sizes')} (largest difference "
            f"{c.get('max_size_diff_share', 0):.2%} of customers), ARI between the two "
            f"labelings {c.get('ari_spark_vs_sklearn', 0):.4f}; within-cluster sum of squares "
            f"(scaled) of the kept model {c.get('spark_cost', 0):,.2f}, of one Spark run from "
            f"the sample's centres {c.get('spark_single_cost', 0):,.2f}, of scikit-learn's from "
            f"the same centres {c.get('sklearn_cost', 0):,.2f}"
            + (
                f"; {c['features_compared']} features compared with DuckDB's, largest "
                f"relative difference {c['max_relative_feature_diff']:.1e} "
                f"({c['worst_feature'] or 'none'})"
                if "features_compared" in c
                else "; features not collected for comparison at this size"
            )
            + ".",
            "",
        ]
    return "\n".join(lines)


def bench_config(base: AppConfig, events: int, workdir: Path) -> AppConfig:
    """The config for one size: its own warehouse and MLflow store under ``workdir``."""
    customers = max(events // EVENTS_PER_CUSTOMER, 100)
    partitions = max(2, events // 2_000_000)
    return base.model_copy(
        update={
            "storage": base.storage.model_copy(update={"warehouse": str(workdir / f"wh-{events}")}),
            "generator": base.generator.model_copy(
                update={"customers": customers, "events": events, "partitions": None}
            ),
            "spark": base.spark.model_copy(update={"shuffle_partitions": partitions}),
            "tracking": base.tracking.model_copy(
                update={
                    "tracking_uri": f"sqlite:///{workdir / f'mlflow-{events}.db'}",
                    "artifact_location": str(workdir / "mlartifacts"),
                    "experiment": "segmentation-benchmark",
                }
            ),
        }
    )


def run_size(spark: SparkSession, base: AppConfig, events: int, workdir: Path) -> SizeResult:
    cfg = bench_config(base, events, workdir)
    spark.conf.set("spark.sql.shuffle.partitions", str(cfg.spark.shuffle_partitions))
    result = SizeResult(events=events, customers=0)
    if not delta_tables.exists(spark, cfg.events_path()):
        generated: list[Stage] = []
        with measured(generated, "generate"):
            generate.run(spark, cfg)
    spark_side = run_spark(spark, cfg, result)
    duck = run_baseline(spark, cfg, result, spark_side)
    check_agreement(result, spark_side, duck)
    return result
