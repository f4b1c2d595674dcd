"""spark-submit entry point: factor-analyse survey items and train attitudinal segments."""

from segmentation.runtime import cli
from segmentation.workflows import attitudes, summaries

JOB = cli.Job("Train attitudinal segments", attitudes.run, summaries.attitudes)

if __name__ == "__main__":
    cli.exit_with(JOB)
