"""spark-submit entry point: write the sample events, customers and segment_truth tables."""

from segmentation.runtime import cli
from segmentation.workflows import generate, summaries

JOB = cli.Job(
    "Generate sample customer events with planted archetypes",
    generate.run,
    summaries.generation,
    options={"--if-absent": {"action": "store_true", "help": "keep an existing sample"}},
)

if __name__ == "__main__":
    cli.exit_with(JOB)
