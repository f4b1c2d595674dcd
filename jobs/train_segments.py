"""spark-submit entry point: choose k, train, register, explain and profile segments."""

from segmentation.runtime import cli
from segmentation.workflows import summaries, train

JOB = cli.Job("Train customer segments", train.run, summaries.training)

if __name__ == "__main__":
    cli.exit_with(JOB)
