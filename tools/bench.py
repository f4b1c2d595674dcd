"""Benchmark entry point (`make bench`): the Spark job's stages against DuckDB + scikit-learn.

    python -m tools.bench --sizes 1M,10M,50M          # writes the results into BENCHMARKS.md
    python -m tools.bench --quick                     # 1M events, checks agreement only

The quick mode (CI) checks that the baseline and the job agree (features within tolerance,
segment sizes and labels), never how fast they were.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from segmentation.config import load_config
from segmentation.runtime.session import build_session
from tools import benchmark

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- results:start -->", "<!-- results:end -->"


def parse_size(text: str) -> int:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([kKmM]?)", text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 1M, 500k, 2000000)")
    factor = {"": 1, "k": 1_000, "m": 1_000_000}[m.group(2).lower()]
    return int(float(m.group(1)) * factor)


def failures(result: benchmark.SizeResult) -> list[str]:
    c = result.checks
    out = []
    if c.get("customers_equal") is False:
        out.append("DuckDB and Spark found different customers")
    if c.get("max_relative_feature_diff", 0.0) > 1e-6:
        out.append(f"features differ: {c['worst_feature']} by {c['max_relative_feature_diff']:.1e}")
    if c.get("rejected_equal") is False:
        out.append(
            f"quarantined events differ: Spark {c.get('spark_rejected')}, "
            f"DuckDB {c.get('duckdb_rejected')}"
        )
    if c.get("features_missing_in_baseline"):
        out.append(f"baseline lacks features {c['features_missing_in_baseline']}")
    if c["max_size_diff_share"] > 0.01:
        out.append(f"segment sizes differ by {c['max_size_diff_share']:.2%} of customers")
    if c.get("spark_cost", 0.0) > c.get("sklearn_cost", 0.0) * (1 + 1e-6):
        out.append(
            f"the kept Spark model's cost {c['spark_cost']:.6g} exceeds scikit-learn's from the "
            f"same start ({c['sklearn_cost']:.6g})"
        )
    if c["ari_spark_vs_sklearn"] < 0.95:
        out.append(f"Spark and scikit-learn segments disagree: ARI {c['ari_spark_vs_sklearn']:.3f}")
    return out


def write_results(out: Path, text: str) -> None:
    """Replace the results section of ``out`` (between the markers), keeping the rest."""
    doc = out.read_text() if out.exists() else f"# Benchmarks\n\n{START}\n{END}\n"
    head, _, rest = doc.partition(START)
    _, _, tail = rest.partition(END)
    out.write_text(f"{head}{START}\n{text}\n{END}{tail}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1M,10M,50M", help="event counts, e.g. 1M,10M,50M,100M")
    parser.add_argument("--quick", action="store_true", help="1M events, agreement checks only")
    parser.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    parser.add_argument("--workdir", default=None, help="where generated data goes (kept)")
    parser.add_argument("--driver-memory", default="8g")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    sizes = [1_000_000] if args.quick else [parse_size(s) for s in args.sizes.split(",")]
    base = load_config(ROOT / "conf" / "local.yaml")
    base = base.model_copy(
        update={
            "spark": base.spark.model_copy(
                update={"conf": {**base.spark.conf, "spark.driver.memory": args.driver_memory}}
            )
        }
    )
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="segmentation-bench-"))
    command = "make bench QUICK=1" if args.quick else f"make bench SIZES={args.sizes}"
    spark = build_session(base, job="benchmark")
    results: list[benchmark.SizeResult] = []
    try:
        for events in sizes:
            print(f"benchmark: {events:,} events (data under {workdir})", flush=True)
            results.append(benchmark.run_size(spark, base, events, workdir))
            # Written after every size, so a later size that fails keeps the earlier figures.
            text = benchmark.render_markdown(
                results, machine=benchmark.machine_description(), command=command
            )
            if not args.quick:
                write_results(Path(args.out), text)
    finally:
        spark.stop()
    print(text)
    if not args.quick:
        print(f"results written to {args.out}")
    bad = [f"{r.events:,} events: {f}" for r in results for f in failures(r)]
    for b in bad:
        print(f"CHECK FAILED: {b}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
