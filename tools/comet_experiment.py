"""Experiment: Apache DataFusion Comet on the feature stage (BENCHMARKS.md, "Comet").

Runs the product's feature stage (read the events, the quality rules, de-duplication, the 34
features) in two Spark applications on the same Parquet files, plain and with the Comet
plugin, times each, and compares the results exactly (the same customers, every feature equal,
the same quarantined rows).

Comet is published only for the Spark versions it supports (``comet-spark-spark4.1_2.13:1.2.0``
is the newest on Maven Central for Spark 4.x, built for Spark 4.1), so the experiment runs in a
separate virtual environment with PySpark 4.1::

    python3.11 -m venv /tmp/comet-venv
    /tmp/comet-venv/bin/pip install pyspark==4.1.1 pyyaml 'pydantic>=2' numpy pandas pyarrow
    /tmp/comet-venv/bin/pip install --no-deps delta-spark==4.1.0   # imported, never used here
    PYTHONPATH=. /tmp/comet-venv/bin/python -m tools.comet_experiment \\
        --events warehouse/events --as-of 2025-12-31 --workdir /tmp/comet

The events are read as Parquet (the files of a Delta table written once, as the generator
writes them). Each arm runs in its own process: a Spark plugin is fixed when the JVM starts.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import time
from pathlib import Path

COMET = "org.apache.datafusion:comet-spark-spark4.1_2.13:1.2.0"
COMET_CONF = {
    "spark.jars.packages": COMET,
    "spark.plugins": "org.apache.spark.CometPlugin",
    "spark.shuffle.manager": "org.apache.spark.sql.comet.execution.shuffle.CometShuffleManager",
    "spark.comet.exec.shuffle.enabled": "true",
    "spark.comet.explainFallback.enabled": "true",
    "spark.memory.offHeap.enabled": "true",
    "spark.memory.offHeap.size": "4g",
}


def arm(events: str, as_of: dt.date, out: Path, *, comet: bool, partitions: int) -> dict:
    """One Spark application: the feature stage, timed, its outputs written under ``out``."""
    from pyspark.sql import SparkSession

    from segmentation.config import load_config
    from segmentation.features import behaviour as feat
    from segmentation.inputs import quality, sources

    cfg = load_config("conf/local.yaml")
    builder = (
        SparkSession.builder.master("local[*]")
        .appName(f"comet-experiment-{'comet' if comet else 'plain'}")
        .config("spark.driver.memory", "8g")
        .config("spark.sql.shuffle.partitions", str(partitions))
        .config("spark.ui.enabled", "false")
        .config("spark.sql.session.timeZone", "UTC")
    )
    for key, value in (COMET_CONF if comet else {}).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    fc, q = cfg.features, cfg.quality
    source_cfg = cfg.input.events.model_copy(update={"format": "parquet"})
    started = time.perf_counter()
    source = sources.read_events(spark, source_cfg, events)
    split = quality.split_events(
        source.events, earliest=q.earliest_event_date,
        latest=as_of + dt.timedelta(days=q.max_days_after_as_of),
    )  # fmt: skip
    features = feat.compute_features(
        split.clean, as_of=as_of, windows_days=fc.windows_days,
        trend_window_days=fc.trend_window_days, categories=fc.categories or (),
        channels=fc.channels or (), devices=fc.devices or (), with_discount=True,
    )  # fmt: skip
    split.rejected.write.mode("overwrite").parquet(str(out / "rejected"))
    features.write.mode("overwrite").parquet(str(out / "features"))
    seconds = time.perf_counter() - started
    plan = features._jdf.queryExecution().executedPlan().toString()
    spark.stop()
    operators = [line.strip().lstrip("+-: ").split(" ")[0] for line in plan.splitlines()]
    return {
        "seconds": seconds,
        "comet_operators": sorted({o for o in operators if o.startswith("Comet")}),
        "spark_operators": sorted({o for o in operators if o and not o.startswith("Comet")}),
    }


def compare(plain: Path, comet: Path) -> dict:
    """Exact comparison of the two arms' outputs (pandas, sorted by customer and event)."""
    import numpy as np
    import pandas as pd

    a = pd.read_parquet(plain / "features").sort_values("customer_id").reset_index(drop=True)
    b = pd.read_parquet(comet / "features").sort_values("customer_id").reset_index(drop=True)
    result: dict = {
        "customers": [len(a), len(b)],
        "same_customers": a.customer_id.equals(b.customer_id),
    }
    worst, worst_col = 0.0, None
    unequal = []
    for col in a.columns:
        if col not in b.columns:
            unequal.append(f"{col} (missing)")
            continue
        x, y = a[col], b[col]
        if x.dtype.kind == "f":
            equal = np.array_equal(x.to_numpy(), y.to_numpy(), equal_nan=True)
            diff = np.nanmax(np.abs(x - y) / np.maximum(np.abs(x), 1e-300)) if len(x) else 0.0
            if diff > worst:
                worst, worst_col = float(diff), col
        else:
            equal = x.equals(y)
        if not equal:
            unequal.append(col)
    result.update(unequal_columns=unequal, max_relative_diff=worst, worst_column=worst_col)
    key = ["customer_id", "event_id", "event_time", "amount", "reason"]
    ra = pd.read_parquet(plain / "rejected").sort_values(key).reset_index(drop=True)
    rb = pd.read_parquet(comet / "rejected").sort_values(key).reset_index(drop=True)
    result["rejected"] = [len(ra), len(rb)]
    result["rejected_equal"] = ra[key].equals(rb[key])
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--events", required=True, help="events Parquet folder (or Delta table)")
    p.add_argument("--as-of", required=True, type=dt.date.fromisoformat)
    p.add_argument("--workdir", required=True, type=Path)
    p.add_argument("--partitions", type=int, default=8)
    p.add_argument("--arm", choices=("plain", "comet"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.arm:
        out = args.workdir / args.arm
        res = arm(args.events, args.as_of, out, comet=args.arm == "comet",
                  partitions=args.partitions)  # fmt: skip
        (out / "result.json").write_text(json.dumps(res))
        return 0
    results: dict[str, list[dict]] = {}
    for name in ("plain", "comet", "plain", "comet"):
        proc = subprocess.run(
            [sys.executable, "-m", "tools.comet_experiment", "--events", args.events,
             "--as-of", args.as_of.isoformat(), "--workdir", str(args.workdir),
             "--partitions", str(args.partitions), "--arm", name],
            capture_output=True, text=True,
        )  # fmt: skip
        if proc.returncode != 0:
            print(f"{name} arm failed:\n{proc.stderr[-4000:]}")
            return 1
        res = json.loads((args.workdir / name / "result.json").read_text())
        results.setdefault(name, []).append(res)
        print(f"{name}: {res['seconds']:.1f} s", flush=True)
    summary = {
        "plain_seconds": [r["seconds"] for r in results["plain"]],
        "comet_seconds": [r["seconds"] for r in results["comet"]],
        "comet_operators": results["comet"][-1]["comet_operators"],
        "spark_operators_left_with_comet": results["comet"][-1]["spark_operators"],
        **compare(args.workdir / "plain", args.workdir / "comet"),
    }
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
