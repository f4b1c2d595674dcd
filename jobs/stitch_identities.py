"""spark-submit entry point: stitch the identifiers seen up to a date into customers
(identity_map, identity_changes, identity_guards), keeping each customer's key across runs."""

from segmentation.runtime import cli
from segmentation.workflows import build_features, identities, summaries

JOB = cli.Job(
    "Stitch identifiers (emails, devices, cookies, cards...) into one customer key as of a date",
    identities.run,
    summaries.identity,
    preflight=build_features.check_inputs,
)

if __name__ == "__main__":
    cli.exit_with(JOB)
