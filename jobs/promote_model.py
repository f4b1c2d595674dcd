"""Promote a registered model version to the alias (default champion): a deliberate step,
recorded as an MLflow run. It writes no table: run assign_segments afterwards."""

from segmentation.runtime import cli
from segmentation.workflows import promote, summaries

JOB = cli.Job(
    "Move the alias to a registered model version",
    promote.run,
    summaries.promotion,
    options={"--version": {"type": int, "default": None, "help": "default: the latest"}},
    spark=False,
)

if __name__ == "__main__":
    cli.exit_with(JOB)
