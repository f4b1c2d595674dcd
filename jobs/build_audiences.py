"""spark-submit entry point: build the configured audiences as of a date (audience_members with
its change data feed, audience_history), with consent, suppression and holdout groups."""

from segmentation.runtime import cli
from segmentation.workflows import audiences, summaries

JOB = cli.Job(
    "Audiences from segments, with consent, suppression and holdout groups, as of a date",
    audiences.run,
    summaries.audiences,
)

if __name__ == "__main__":
    cli.exit_with(JOB)
