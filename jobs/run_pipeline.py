"""The whole local pipeline in one Spark application (`make run`): sample, features, training
and rules as of --train-as-of, then scoring and rules as of --as-of."""

import datetime as dt

from segmentation.runtime import cli
from segmentation.workflows import local_pipeline

JOB = cli.Job(
    "Run generate, build_features, train, rules, assign and rules in one Spark application",
    local_pipeline.run,
    lambda result, cfg: f"Pipeline done in one Spark application. {result.timings()}",
    preflight=local_pipeline.preflight,
    options={
        "--train-as-of": {"type": dt.date.fromisoformat, "help": "training snapshot date"},
        "--score-as-of": {"type": dt.date.fromisoformat, "help": "date scored afterwards"},
    },
)

if __name__ == "__main__":
    cli.exit_with(JOB)
