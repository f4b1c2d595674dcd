"""spark-submit entry point: compute customer_features as of a date (quarantining bad events)."""

from segmentation.runtime import cli
from segmentation.workflows import build_features, summaries

JOB = cli.Job(
    "Compute per-customer features as of a date",
    build_features.run,
    summaries.features,
    preflight=build_features.check_inputs,
    options={
        "--full-refresh": {
            "action": "store_true",
            "help": "rebuild the incremental feature state from every input row",
        }
    },
)

if __name__ == "__main__":
    cli.exit_with(JOB)
