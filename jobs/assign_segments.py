"""spark-submit entry point: score a snapshot with the champion model, without retraining.

Computes customer_features for --as-of (or features.as_of), assigns every customer with the
registered version under tracking.alias, and writes segment_membership, the SCD2
segment_membership_history, the segment_migration matrix and drift (PSI) for that date.
"""

from __future__ import annotations

from collections.abc import Sequence

from segmentation import cli, pipeline


def main(argv: Sequence[str] | None = None) -> int:
    args = cli.parser("Assign segments for a date with the registered champion model").parse_args(
        argv
    )

    def body(spark, cfg):  # type: ignore[no-untyped-def]
        result = pipeline.assign_segments(spark, cfg)
        print(pipeline.format_assign_summary(result, cfg))

    return cli.run(args, body, preflight=pipeline.check_inputs)


if __name__ == "__main__":
    cli.exit_with(main)
