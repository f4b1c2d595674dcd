"""spark-submit entry point: RFM segments (rfm.*) and B2B tiers (b2b.*) of the customer_features
snapshot of --as-of, each published under its own model_name (scores in rfm_scores)."""

from segmentation.runtime import cli
from segmentation.workflows import rules, summaries

JOB = cli.Job("RFM segments and B2B tiers for a features snapshot", rules.run, summaries.rules)

if __name__ == "__main__":
    cli.exit_with(JOB)
