"""spark-submit entry point: customer value as of a date: the BTYD summary, BG/NBD (or MBG/NBD)
and Gamma-Gamma fitted and backtested, every customer scored (customer_value), the model
registered; --score-only scores the date with the registered model, without refitting."""

from segmentation.runtime import cli
from segmentation.workflows import build_features, summaries, value

JOB = cli.Job(
    "Customer value (P(alive), expected purchases, order value, CLV) as of a date",
    value.run,
    summaries.value,
    preflight=build_features.check_inputs,
    options={
        "--score-only": {
            "action": "store_true",
            "help": "score with the value model under the alias instead of fitting a new one",
        },
    },
)

if __name__ == "__main__":
    cli.exit_with(JOB)
