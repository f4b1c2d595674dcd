"""spark-submit entry point: score a snapshot with the champion model, without retraining:
customer_features for --as-of, then membership, SCD2 history, migration and drift (PSI)."""

from segmentation.runtime import cli
from segmentation.workflows import assign, build_features, summaries

JOB = cli.Job(
    "Assign segments for a date with the registered champion model",
    assign.run,
    summaries.assignment,
    preflight=build_features.check_inputs,
)

if __name__ == "__main__":
    cli.exit_with(JOB)
