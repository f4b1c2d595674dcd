"""A day's feature run from the incremental state against the full feature run (issue 31).

    PYTHONPATH=. .venv/bin/python -m tools.bench_incremental --sizes 10M,50M

Per size, in one Spark application: a generated sample of its own (a Delta table, as
``make bench``, under ``<workdir>/incremental``, generated afresh), then, as of its last day
(``features.as_of``):

1. **full**: ``build_features`` with ``features.mode: full`` (every event, no state);
2. **rebuild**: the same with ``features.mode: auto`` and no state yet (every event, the state
   written too);
3. the next day's events appended to the input (the last day's events one day later, new
   event ids: one Delta commit);
4. **increment**: ``build_features`` as of that next day (``auto``: the state plus only the
   appended commit);
5. **DuckDB**: the same quality rules, de-duplication and features over every event file
   (``tools.benchmark``'s baseline SQL), in this process.

The increment's features are checked against a full run of the next day (every column,
relative 1e-12 / absolute 1e-9) unless ``--no-check``. Prints a Markdown table.

``--keep-copy``: each size's warehouse as it stands before the increment (step 3 done) is
copied to ``<workdir>/before-increment-<events>``. ``--increment-only`` then restores that
copy and runs only the increment (after a read of the state tables, so the JVM is warm as in
the full benchmark), as often as ``--repeat`` says: a change to the increment measured in
about a minute at 50M instead of the whole benchmark. The job's log gives the increment's parts
(``features: increment: ...``; the rest of ``features: compute`` is the
rejected rows and the customers dimension match).

``--identities``: the sample with several identifiers per customer, stitched
(``generator.identities``): each date's ``identity_map`` is written first (``stitch`` s, not in
the feature runs' times), and every feature run reads the events by stitched key; the state is
kept by raw id (docs/incremental.md). The appended day repeats the last day's identifiers, so
no customer moves: the figure is a quiet day's. DuckDB's features are the unstitched ones.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import math
import os
import shutil
import tempfile
import time
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from segmentation.config import AppConfig, load_config
from segmentation.runtime.session import build_session
from segmentation.storage import delta_tables
from segmentation.workflows import build_features, generate, identities
from tools import benchmark
from tools.bench import parse_size

ROOT = Path(__file__).resolve().parents[1]


def with_mode(cfg: AppConfig, mode: str, as_of: dt.date) -> AppConfig:
    features = cfg.features.model_copy(update={"mode": mode, "as_of": as_of})
    return cfg.model_copy(update={"features": features})


def timed(call: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    out = call()
    return time.perf_counter() - start, out


def append_next_day(spark: SparkSession, cfg: AppConfig, day: dt.date) -> int:
    """The events of ``day`` again, one day later with new ids, appended (one commit)."""
    path = cfg.events_path()
    events = delta_tables.read(spark, path)
    zone = cfg.input.events.time_zone
    local = F.to_date(F.from_utc_timestamp(F.col("event_time"), zone))
    next_day = (
        events.where(local == F.lit(day))
        .withColumn("event_time", F.col("event_time") + F.expr("INTERVAL 1 DAY"))
        .withColumn("event_id", F.concat(F.col("event_id"), F.lit("+1d")))
    )
    rows = next_day.count()
    next_day.write.format("delta").mode("append").save(path)
    return rows


DUCKDB_MEMORY = "6GB"
"""DuckDB's memory limit: it shares the machine with the Spark driver (its default, 80% of
the RAM, got the process killed at 50M events on 24 GiB); it spills to disk beyond it."""


def duckdb_full(spark: SparkSession, cfg: AppConfig, levels: dict[str, Any]) -> float:
    """DuckDB's quality rules, de-duplication and features over every event file."""
    import duckdb

    fc = cfg.features
    files = [
        urllib.parse.urlparse(f).path if f.startswith("file:") else f
        for f in delta_tables.read(spark, cfg.events_path()).inputFiles()
    ]
    checks = benchmark.duckdb_quality_sql(
        files, earliest=cfg.quality.earliest_event_date,
        latest=fc.as_of + dt.timedelta(days=cfg.quality.max_days_after_as_of),
    )  # fmt: skip
    features = benchmark.duckdb_features_sql(
        as_of=fc.as_of, windows_days=fc.windows_days, trend_window_days=fc.trend_window_days,
        levels=levels,
    )  # fmt: skip
    spill = Path(cfg.storage.warehouse).parent / "duckdb-spill"
    con = duckdb.connect(config={"threads": os.cpu_count() or 1, "memory_limit": DUCKDB_MEMORY,
                                 "temp_directory": str(spill)})  # fmt: skip
    start = time.perf_counter()
    con.execute(checks)
    rows = con.sql(features).arrow()
    _ = rows.read_all() if hasattr(rows, "read_all") else rows
    seconds = time.perf_counter() - start
    con.close()
    return seconds


def size_on_disk(path: str) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def same_features(spark: SparkSession, cfg: AppConfig) -> int:
    """Columns of customers where the increment's snapshot differs from a full run."""
    from segmentation.runtime import tracking

    written = {
        r["customer_id"]: r.asDict()
        for r in delta_tables.read(spark, cfg.storage.table_path("customer_features"))
        .where(F.col("as_of") == F.lit(cfg.features.as_of)).collect()
    }  # fmt: skip
    with tracking.run(tracking.configure(cfg.tracking), "bench: full check") as run_id:
        snap = build_features.compute(spark, cfg, run_id=run_id, keep_state=False)
    full = {r["customer_id"]: r.asDict() for r in snap.features.collect()}
    snap.unpersist()
    assert written.keys() == full.keys(), "customers differ"
    bad = 0
    for cid, row in full.items():
        for c, want in row.items():
            got = written[cid][c]
            if isinstance(want, float):
                bad += not math.isclose(got, want, rel_tol=1e-12, abs_tol=1e-9)
            else:
                bad += got != want
    return bad


def run_size(
    spark: SparkSession,
    base: AppConfig,
    events: int,
    workdir: Path,
    check: bool,
    stitch: bool,
    keep_copy: bool = False,
):
    # A sample of its own (the next day is appended to it), generated afresh each run.
    cfg = size_config(base, events, workdir, stitch)
    shutil.rmtree(cfg.storage.warehouse, ignore_errors=True)
    spark.conf.set("spark.sql.shuffle.partitions", str(cfg.spark.shuffle_partitions))
    generate.run(spark, cfg)
    day = cfg.features.as_of
    out: dict[str, Any] = {"events": events, "stitch_s": 0.0}
    if stitch:
        out["stitch_s"], _ = timed(lambda: identities.run(spark, with_mode(cfg, "full", day)))
    out["full_s"], full = timed(lambda: build_features.run(spark, with_mode(cfg, "full", day)))
    out["rebuild_s"], _ = timed(lambda: build_features.run(spark, with_mode(cfg, "auto", day)))
    out["new_events"] = append_next_day(spark, cfg, day)
    if keep_copy:
        shutil.rmtree(kept_copy(workdir, events), ignore_errors=True)
        shutil.copytree(cfg.storage.warehouse, kept_copy(workdir, events))
    nxt = with_mode(cfg, "auto", day + dt.timedelta(days=1))
    if stitch:
        out["stitch_s"] += timed(lambda: identities.run(spark, nxt))[0]
    out["increment_s"], inc = timed(lambda: build_features.run(spark, nxt))
    _require_incremental(inc)
    out["customers"] = inc.customers
    levels = {c: list(v) for c, v in (("category", cfg.features.categories or ()),
                                      ("channel", cfg.features.channels or ()),
                                      ("device", cfg.features.devices or ()))}  # fmt: skip
    out["duckdb_s"] = duckdb_full(spark, with_mode(cfg, "full", day), levels)
    wh = Path(cfg.storage.warehouse)
    out["state_mb"] = sum(size_on_disk(str(p)) for p in wh.glob("feature_state_*")) / 2**20
    out["events_mb"] = size_on_disk(cfg.events_path()) / 2**20
    out["differences"] = same_features(spark, nxt) if check else None
    out["full_customers"] = full.customers
    return out


def size_config(base: AppConfig, events: int, workdir: Path, stitch: bool) -> AppConfig:
    """One size's config (``benchmark.bench_config`` under ``<workdir>/incremental``), with
    the identifiers generated and stitched for ``--identities``."""
    cfg = benchmark.bench_config(base, events, workdir / "incremental")
    if not stitch:
        return cfg
    return cfg.model_copy(update={"generator": cfg.generator.model_copy(
        update={"identities": True})})  # fmt: skip


def kept_copy(workdir: Path, events: int) -> Path:
    """Where ``--keep-copy`` keeps a size's warehouse as it stands before the increment."""
    return workdir / f"before-increment-{events}"


def increment_only(
    spark: SparkSession, base: AppConfig, events: int, workdir: Path, stitch: bool
) -> float:
    """The day's increment alone, on a fresh copy of the size's :func:`kept_copy`."""
    kept = kept_copy(workdir, events)
    if not kept.is_dir():
        raise SystemExit(f"{kept} does not exist: run with --keep-copy first")
    cfg = size_config(base, events, workdir, stitch)
    shutil.rmtree(cfg.storage.warehouse, ignore_errors=True)
    shutil.copytree(kept, cfg.storage.warehouse)
    # An MLflow store of its own, outside the restored copy (a repeat restores it).
    tracking = cfg.tracking.model_copy(
        update={"tracking_uri": f"sqlite:///{workdir / 'increment-only-mlflow.db'}"}
    )
    cfg = cfg.model_copy(update={"tracking": tracking})
    spark.conf.set("spark.sql.shuffle.partitions", str(cfg.spark.shuffle_partitions))
    for table in Path(cfg.storage.warehouse).glob("feature_state_*"):
        delta_tables.read(spark, str(table)).count()  # the JVM and Delta warm
    nxt = with_mode(cfg, "auto", cfg.features.as_of + dt.timedelta(days=1))
    seconds, inc = timed(lambda: build_features.run(spark, nxt))
    _require_incremental(inc)
    return seconds


def _require_incremental(result: Any) -> None:
    """The benchmark times an increment: a run that rebuilt instead measured something else."""
    if result.mode != "incremental":
        raise SystemExit(
            f"the day's run was a {result.mode}, not an increment: {result.mode_reason}"
        )


def markdown(rows: Sequence[dict[str, Any]], command: str) -> str:
    lines = [
        f"Produced by `{command}` ({dt.date.today()}); {benchmark.machine_description()}.",
        "",
        "| events | customers | full run s | rebuild (full + state) s | new day's events | "
        "one-day increment s | increment / full | DuckDB full s | state on disk MiB (events "
        "MiB) | features differing from a full run |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        diff = "not checked" if r["differences"] is None else f"{r['differences']} values"
        lines.append(
            f"| {r['events']:,} | {r['customers']:,} | {r['full_s']:.1f} | {r['rebuild_s']:.1f} | "
            f"{r['new_events']:,} | {r['increment_s']:.1f} | "
            f"{r['increment_s'] / r['full_s']:.2f} | {r['duckdb_s']:.1f} | "
            f"{r['state_mb']:,.0f} ({r['events_mb']:,.0f}) | {diff} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10M", help="events, e.g. 10M,50M")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--driver-memory", default="8g")
    parser.add_argument("--no-check", action="store_true", help="skip the full-run comparison")
    parser.add_argument(
        "--identities", action="store_true", help="the sample with identifiers, stitched"
    )
    parser.add_argument(
        "--keep-copy",
        action="store_true",
        help="copy the warehouse before the increment (for --increment-only)",
    )
    parser.add_argument(
        "--increment-only",
        action="store_true",
        help="restore the --keep-copy copy and run only the increment",
    )
    parser.add_argument("--repeat", type=int, default=1, help="increments (--increment-only)")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    try:  # before Spark starts
        sizes = [parse_size(s) for s in args.sizes.split(",")]
    except argparse.ArgumentTypeError as exc:
        parser.error(f"--sizes: {exc}")
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("segmentation.runtime.timing").setLevel(logging.INFO)
    logging.getLogger("segmentation.workflows.build_features").setLevel(logging.INFO)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="segmentation-bench-incremental-"))
    base = load_config(ROOT / "conf" / "local.yaml")
    spark_conf = {**base.spark.conf, "spark.driver.memory": args.driver_memory}
    base = base.model_copy(update={"spark": base.spark.model_copy(update={"conf": spark_conf})})
    spark = build_session(base, job="bench_incremental")
    rows = []
    try:
        if args.increment_only:
            for size in sizes:
                for _ in range(args.repeat):
                    seconds = increment_only(spark, base, size, workdir, args.identities)
                    print(f"{size:,} events: one-day increment {seconds:.1f} s", flush=True)
            return 0
        for size in sizes:
            print(f"incremental benchmark: {size:,} events (data under {workdir})", flush=True)
            rows.append(run_size(spark, base, size, workdir, not args.no_check, args.identities,
                                 args.keep_copy))  # fmt: skip
            print(rows[-1], flush=True)
    finally:
        spark.stop()
    flags = f"--sizes {args.sizes}" + (" --identities" if args.identities else "")
    print(markdown(rows, f"PYTHONPATH=. .venv/bin/python -m tools.bench_incremental {flags}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
