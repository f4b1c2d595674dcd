"""spark-submit entry point: compute customer_features as of a date."""

from __future__ import annotations

from collections.abc import Sequence

from segmentation import cli, pipeline


def main(argv: Sequence[str] | None = None) -> int:
    args = cli.parser("Compute per-customer features as of a date").parse_args(argv)

    def body(spark, cfg):  # type: ignore[no-untyped-def]
        r = pipeline.build_features(spark, cfg)
        rejected = ", ".join(f"{k}: {v}" for k, v in sorted(r.rejected.items())) or "none"
        print(
            f"customer_features as of {r.as_of}: {r.customers:,} customers, "
            f"{len(r.feature_columns)} features, table version {r.version} "
            f"(events {r.events_path} version {r.events_version}: {r.input_rows:,} rows; "
            f"quarantined in rejected_events: {rejected}; MLflow run {r.run_id})"
        )

    return cli.run(args, body, preflight=pipeline.check_inputs)


if __name__ == "__main__":
    cli.exit_with(main)
