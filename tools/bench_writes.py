"""The fixed cost of one table write: ``delta_tables.write`` of a small snapshot (replaceWhere,
with its contract) against Delta's own ``save``, under several ``snapshotPartitions``.

Every stage of the pipeline publishes through ``delta_tables.write``, and ``make run`` writes
small tables, so this per-write cost, not the rows, sets much of its time (issue 31, part 5).
The settings compared are Delta's default (50), the shuffle partitions of ``conf/local.yaml``,
and what ``runtime.session.snapshot_partitions`` picks on this machine; the rounds alternate,
in one process, so a busy machine slows every setting alike.

    PYTHONPATH=. .venv/bin/python -m tools.bench_writes --writes 20
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path

from segmentation.config import load_config
from segmentation.runtime.session import build_session, snapshot_partitions
from segmentation.storage import delta_tables
from segmentation.storage.delta_contract import Contract, table_state

ROOT = Path(__file__).resolve().parents[1]
AS_OF = date(2025, 12, 31)
CONTRACT = Contract(
    description="bench",
    comments={"value": "a value"},
    properties={"delta.enableChangeDataFeed": "true"},
)


def _timed(action: Callable[[], object], times: int) -> float:
    """The median seconds of ``times`` calls."""
    seconds = []
    for _ in range(times):
        start = time.perf_counter()
        action()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=20, help="writes per setting and round")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    cfg = load_config(ROOT / "conf" / "local.yaml")
    spark = build_session(cfg, job="bench_writes")
    workdir = Path(tempfile.mkdtemp(prefix="segmentation-bench-writes-"))
    rows = spark.range(100).selectExpr(
        "id AS customer_id", "CAST(id AS DOUBLE) AS value", f"DATE'{AS_OF}' AS as_of"
    )
    options = delta_tables.WriteOptions(
        partition_by=("as_of",), replace={"as_of": AS_OF}, contract=CONTRACT
    )
    settings = {
        "Delta's default": 50,
        "conf/local.yaml's shuffle partitions": cfg.spark.shuffle_partitions,
        "snapshot_partitions()": snapshot_partitions(cfg.spark),
    }
    found: dict[str, dict[str, list[float]]] = {name: {} for name in settings}
    try:
        for _ in range(args.rounds):
            for name, partitions in settings.items():
                spark.conf.set("spark.databricks.delta.snapshotPartitions", str(partitions))
                path = str(workdir / f"t{partitions}")
                shutil.rmtree(path, ignore_errors=True)
                delta_tables.write(spark, rows, path, options)

                def save(path: str = path) -> None:
                    rows.write.format("delta").mode("overwrite").option(
                        "replaceWhere", f"as_of = DATE'{AS_OF}'"
                    ).save(path)

                def ours(path: str = path) -> None:
                    delta_tables.write(spark, rows, path, options)

                def state(path: str = path) -> None:
                    table_state(spark, path)

                def commits(path: str = path) -> None:
                    delta_tables.history(spark, path, 200)

                measured = {
                    "delta_tables.write": _timed(ours, args.writes),
                    "Delta's save": _timed(save, args.writes),
                    "table_state": _timed(state, 5),
                    "history(200)": _timed(commits, 5),
                }
                for key, value in measured.items():
                    found[name].setdefault(key, []).append(value)
                print(name, partitions, measured, flush=True)
    finally:
        spark.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    keys = list(next(iter(found.values())))
    print(f"\n`PYTHONPATH=. .venv/bin/python -m tools.bench_writes --writes {args.writes}`: "
          "median seconds of one call, a 100-row snapshot, the lower of the rounds\n")  # fmt: skip
    print("| snapshotPartitions | " + " | ".join(keys) + " |")
    print("|---|" + "---:|" * len(keys))
    for name, partitions in settings.items():
        cells = " | ".join(f"{min(found[name][k]):.2f}" for k in keys)
        print(f"| {partitions} ({name}) | {cells} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
