"""Identity stitching at benchmark sizes: the whole job (``workflows.identities``) on generated
identifiers, most in small customers and a tenth in long chains.

    PYTHONPATH=. .venv/bin/python -m tools.bench_identity --sizes 1M,10M

Per size, ``--small`` identifiers per small customer are linked in a chain (a-b, b-c, c-d),
and one identifier in ten sits in a chain of ``--chain`` identifiers (10,000 by default): the
case where label propagation needs as many rounds as the chain is long. Each row of the
generated events links two consecutive identifiers of one chain. The job runs twice: as of
day 1 (no earlier snapshot: every key new) and as of day 2 (every key kept against day 1).
Printed per run: wall time, the time of each stage, rounds of large-star / small-star, and a
check that the customers found are the generated ones.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from segmentation.config import AppConfig, Identifier, load_config
from segmentation.runtime import timing
from segmentation.runtime.session import build_session
from segmentation.workflows import identities
from tools.bench import parse_size

ROOT = Path(__file__).resolve().parents[1]
DAY_1 = dt.date(2025, 12, 30)
LONG_SHARE = 0.1


def generate(spark: SparkSession, n: int, *, small: int, chain: int, path: str) -> int:
    """Events linking consecutive identifiers of each customer's chain; returns the number of
    customers generated."""
    long_n = int(n * LONG_SHARE) // chain * chain
    short_n = (n - long_n) // small * small
    ids = spark.range(0, long_n + short_n, numPartitions=max(2, n // 500_000))
    i = F.col("id")
    block = F.when(i < long_n, F.floor(i / chain)).otherwise(
        F.lit(long_n // chain) + F.floor((i - long_n) / small)
    )
    last_of_block = F.when(i < long_n, (i + 1) % chain == 0).otherwise(
        (i - long_n + 1) % small == 0
    )
    rows = ids.where(~last_of_block).select(
        F.format_string("id-%010d", i).alias("a"),
        F.format_string("id-%010d", i + 1).alias("b"),
        (F.lit(dt.datetime(2025, 1, 1, tzinfo=dt.UTC)).cast("long") + i % 86_400_000)
        .cast("timestamp")
        .alias("t"),
        F.lit(1.0).alias("amount"),
        block.alias("truth"),
    )
    rows.write.mode("overwrite").parquet(path)
    return long_n // chain + short_n // small


def config(
    workdir: Path, events: str, as_of: dt.date, *, driver_memory: str, partitions: int
) -> AppConfig:
    """The job's configuration for the generated events (no guard: chains of one type)."""
    overrides = [
        f"storage.warehouse={workdir / 'wh'}",
        f"tracking.tracking_uri=sqlite:///{workdir / 'mlflow.db'}",
        f"tracking.artifact_location={workdir / 'mla'}",
        f"spark.shuffle_partitions={partitions}",
        f"input.events.path={events}", "input.events.format=parquet",
        "input.events.columns.customer_id=a", "input.events.columns.event_time=t",
        *[f"input.events.columns.{c}=null" for c in ("event_type", "category", "channel",
                                                     "device", "quantity", "discount",
                                                     "event_id")],
        f"features.as_of={as_of.isoformat()}", "attitudes.enabled=false",
    ]  # fmt: skip
    cfg = load_config(ROOT / "conf" / "local.yaml", overrides=overrides)
    identity = cfg.identity.model_copy(
        update={
            "enabled": True,
            "identifiers": (Identifier(column="a", type="node"),
                            Identifier(column="b", type="node")),
            "max_degree": {},
        }
    )  # fmt: skip
    conf = {**cfg.spark.conf, "spark.driver.memory": driver_memory}
    return cfg.model_copy(
        update={"identity": identity, "spark": cfg.spark.model_copy(update={"conf": conf})}
    )


class _Stages(logging.Handler):
    """Collects ``timing.stage`` log lines (``name: 1.2 s``)."""

    def __init__(self) -> None:
        super().__init__()
        self.stages: dict[str, float] = {}

    def emit(self, record: logging.LogRecord) -> None:
        if isinstance(record.args, tuple) and len(record.args) == 2:
            name, seconds = record.args
            self.stages[str(name).removeprefix("identities: ")] = float(str(seconds))


def run_size(
    spark: SparkSession, n: int, workdir: Path, *, small: int, chain: int, **settings: Any
) -> dict[str, Any]:
    events = str(workdir / f"events_{n}")
    started = time.perf_counter()
    customers = generate(spark, n, small=small, chain=chain, path=events)
    out: dict[str, Any] = {"identifiers": n, "customers": customers, "small": small,
                           "chain": chain, "generate_s": time.perf_counter() - started}  # fmt: skip
    handler = _Stages()
    logging.getLogger(timing.__name__).addHandler(handler)
    try:
        for day, as_of in (("day_1", DAY_1), ("day_2", DAY_1 + dt.timedelta(days=1))):
            handler.stages = {}
            started = time.perf_counter()
            result = identities.run(spark, config(workdir, events, as_of, **settings))
            out[day] = {
                "wall_s": time.perf_counter() - started, "stages": dict(handler.stages),
                "identifiers": result.identifiers, "customers": result.customers,
                "edges": result.edges, "rounds": result.iterations,
                "edges_per_round": list(result.edges_per_iteration),
                "kept": result.kept_keys, "new": result.new_keys,
                "customers_as_generated": result.customers == customers,
            }  # fmt: skip
            print(json.dumps({n: out[day]}), flush=True)
    finally:
        logging.getLogger(timing.__name__).removeHandler(handler)
    return out


def markdown(results: Sequence[dict[str, Any]], machine: str, command: str) -> str:
    lines = [
        f"Machine: {machine}. Command: `{command}`.", "",
        "| identifiers | customers | graph edges | run | wall | read | graph | components "
        "(rounds) | keys | write | customers found | keys kept |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for r in results:
        for day in ("day_1", "day_2"):
            d, s = r[day], r[day]["stages"]
            lines.append(
                f"| {r['identifiers']:,} | {r['customers']:,} | {d['edges']:,} | {day} | "
                f"{d['wall_s']:.0f} s | {s.get('read and normalise the inputs', 0):.0f} s | "
                f"{s.get('graph and guard', 0):.0f} s | "
                f"{s.get('connected components', 0):.0f} s ({d['rounds']}) | "
                f"{s.get('stable keys', 0):.0f} s | {s.get('write tables (Delta)', 0):.0f} s | "
                f"{d['customers']:,} | {d['kept']:,} |"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1M,10M", help="identifiers, e.g. 1M,10M")
    parser.add_argument("--small", type=int, default=4, help="identifiers per small customer")
    parser.add_argument("--chain", type=int, default=10_000, help="identifiers per long chain")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--driver-memory", default="6g")
    parser.add_argument("--shuffle-partitions", type=int, default=8)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger(timing.__name__).setLevel(logging.INFO)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="segmentation-bench-identity-"))
    workdir.mkdir(parents=True, exist_ok=True)
    settings = {"driver_memory": args.driver_memory, "partitions": args.shuffle_partitions}
    spark = build_session(config(workdir, "unused", DAY_1, **settings), job="bench_identity")
    results = []
    try:
        for size in (parse_size(s) for s in args.sizes.split(",")):
            print(f"identity benchmark: {size:,} identifiers (data under {workdir})", flush=True)
            results.append(run_size(spark, size, workdir, small=args.small, chain=args.chain,
                                    **settings))  # fmt: skip
    finally:
        spark.stop()
    machine = f"{os.cpu_count()} cores, local[*], driver memory {args.driver_memory}"
    command = f"PYTHONPATH=. .venv/bin/python -m tools.bench_identity --sizes {args.sizes}"
    print(markdown(results, machine, command))
    (workdir / "results.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
