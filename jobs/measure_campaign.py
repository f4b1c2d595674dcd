"""spark-submit entry point: measure a campaign's lift per segment, treatment against holdout,
over the days after its launch (campaign_results, MLflow and an HTML page)."""

from segmentation.runtime import cli
from segmentation.workflows import build_features, campaigns, summaries

JOB = cli.Job(
    "Measure a campaign: conversion and revenue lift per segment with confidence intervals",
    campaigns.run,
    summaries.campaign,
    preflight=build_features.check_inputs,
    options={
        "--audience": {"required": True, "help": "the audience's name (audiences.definitions)"},
        "--launch": {"required": True, "help": "the launch date YYYY-MM-DD"},
        "--days": {"type": int, "default": 30, "help": "days after the launch to measure"},
    },
)

if __name__ == "__main__":
    cli.exit_with(JOB)
