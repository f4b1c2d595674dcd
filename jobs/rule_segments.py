"""spark-submit entry point: rule-based segmentations beside clustering.

Scores the customer_features snapshot of --as-of (or features.as_of) with RFM quintiles and the
named RFM map (rfm.*), and gives business accounts of the customers dimension a tier (b2b.*).
Each is written to segment_membership, with history, migration and drift, under its own
model_name; the RFM scores also go to the rfm_scores table.
"""

from __future__ import annotations

from collections.abc import Sequence

from segmentation import cli, pipeline


def main(argv: Sequence[str] | None = None) -> int:
    args = cli.parser("RFM segments and B2B tiers for a features snapshot").parse_args(argv)

    def body(spark, cfg):  # type: ignore[no-untyped-def]
        result = pipeline.rule_segments(spark, cfg)
        print(pipeline.format_rules_summary(result, cfg))

    return cli.run(args, body)


if __name__ == "__main__":
    cli.exit_with(main)
