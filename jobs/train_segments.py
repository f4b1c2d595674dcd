"""spark-submit entry point: choose k, train, register, explain and profile segments."""

from segmentation import cli, summaries
from segmentation.workflows import train

JOB = cli.Job("Train customer segments", train.run, summaries.training)

if __name__ == "__main__":
    cli.exit_with(JOB)
