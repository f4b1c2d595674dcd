"""spark-submit entry point: write the sample events, customers and segment_truth tables."""

from __future__ import annotations

from collections.abc import Sequence

from segmentation import cli, pipeline


def main(argv: Sequence[str] | None = None) -> int:
    parser = cli.parser("Generate sample customer events with planted archetypes")
    parser.add_argument(
        "--if-absent", action="store_true", help="do nothing if the events table exists"
    )
    args = parser.parse_args(argv)

    def body(spark, cfg):  # type: ignore[no-untyped-def]
        result = pipeline.generate(spark, cfg, if_absent=args.if_absent)
        if result.skipped:
            print(f"Sample data already present under {cfg.storage.warehouse}/ (kept as is).")
        else:
            rows = ", ".join(f"{n}: {r:,} rows" for n, r in result.rows.items())
            print(f"Sample data written under {cfg.storage.warehouse}/ ({rows}).")

    return cli.run(args, body)


if __name__ == "__main__":
    cli.exit_with(main)
