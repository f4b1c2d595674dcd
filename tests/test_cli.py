"""The job entry points' shared plumbing: options, summaries, exit codes."""

from __future__ import annotations

from segmentation.errors import InputError
from segmentation.runtime import cli
from tests.conftest import ROOT

CONFIG = ["--config", str(ROOT / "conf" / "local.yaml")]


def test_main_passes_options_and_prints_the_summary_without_spark(capsys):
    seen = {}

    def run(spark, cfg, *, version=None):
        seen.update(spark=spark, version=version, as_of=cfg.features.as_of.isoformat())
        return version * 2

    job = cli.Job("d", run, lambda result, cfg: f"result {result}",
                  options={"--version": {"type": int}}, spark=False)  # fmt: skip
    assert cli.main(job, [*CONFIG, "--version", "21", "--as-of", "2024-06-30"]) == 0
    assert seen == {"spark": None, "version": 21, "as_of": "2024-06-30"}
    assert capsys.readouterr().out.strip() == "result 42"


def test_main_turns_a_user_error_into_exit_code_2(capsys):
    def run(spark, cfg):
        raise InputError("no such thing (config key x.y)")

    job = cli.Job("d", run, lambda result, cfg: "", spark=False)
    assert cli.main(job, CONFIG) == 2
    assert capsys.readouterr().err.strip() == "ERROR: no such thing (config key x.y)"


def test_main_turns_spark_s_parquet_type_mismatch_into_exit_code_2(capsys):
    """Any Spark action can be the one that reads a mismatched Parquet file: the entry point
    names the file and column (Spark 4's message, as raised through Py4J)."""
    spark_message = (
        "An error occurred while calling o987.count.\n: org.apache.spark.SparkException: "
        "[FAILED_READ_FILE.PARQUET_COLUMN_DATA_TYPE_MISMATCH] Encountered error while reading "
        "file file:///data/ev/day0701.parquet. Data type mismatches when reading Parquet "
        "column [amount]. Expected Spark type double, actual Parquet type BINARY. SQLSTATE: "
        "KD001"
    )

    def run(spark, cfg):
        raise RuntimeError(spark_message)

    job = cli.Job("d", run, lambda result, cfg: "", spark=False)
    assert cli.main(job, CONFIG) == 2
    assert capsys.readouterr().err.strip() == (
        "ERROR: input file /data/ev/day0701.parquet holds column 'amount' as Parquet BINARY "
        "where the input's schema, read from its other files, has double: Spark reads every "
        "file of an input with one schema. Write that file with the same column types as the "
        "others"
    )


def test_run_key_option_sets_storage_run_key():
    seen = {}
    job = cli.Job("d", lambda spark, cfg: seen.setdefault("key", cfg.storage.run_key),
                  lambda result, cfg: "", spark=False)  # fmt: skip
    assert cli.main(job, [*CONFIG, "--run-key", "airflow-2026-01-31"]) == 0
    assert seen["key"] == "airflow-2026-01-31"


def test_next_step_commands_keep_the_config_as_of_and_overrides():
    from segmentation.config import load_config
    from segmentation.workflows import summaries

    cfg = load_config(
        ROOT / "conf" / "local.yaml",
        overrides=["storage.warehouse=/data/my wh", "features.as_of=2025-06-30",
                   "storage.run_key=r1"],
    )  # fmt: skip
    config = ROOT / "conf" / "local.yaml"
    assert summaries.make_command(cfg, "assign", AS_OF=cfg.features.as_of) == (
        f"make assign CONFIG={config} AS_OF=2025-06-30 "
        "ARGS='--set '\"'\"'storage.warehouse=/data/my wh'\"'\"''"
    )


def test_promotion_summary_prints_an_assign_command_that_works_as_printed():
    from segmentation.config import load_config
    from segmentation.workflows import summaries
    from segmentation.workflows.promote import PromoteResult

    cfg = load_config("conf/local.yaml", overrides=["features.as_of=2025-06-30"])
    text = summaries.promotion(PromoteResult("customer_segments", "champion", 2, 1, "r"), cfg)
    assert text.endswith("make assign CONFIG=conf/local.yaml AS_OF=2025-06-30")
