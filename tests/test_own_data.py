"""The published "Bring your own events" (docs/own-data.md, where the README's short version
points), run as a newcomer would: its CSV export and overlay, its two job commands as
published, then the commands the training prints, exactly as printed (expanded the way the
Makefile expands them), ending with segment_membership written."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import polars as pl
import pytest

from jobs import assign_segments, build_features, promote_model, train_segments
from segmentation.features.levels import level_name
from segmentation.runtime import cli
from segmentation.storage import delta_tables
from segmentation.workflows import rules, summaries
from tests.conftest import ROOT, mlflow_store

pytestmark = [pytest.mark.integration, pytest.mark.slow]


PAGE = ROOT / "docs" / "own-data.md"
JOBS = {
    "build_features": build_features.JOB,
    "train_segments": train_segments.JOB,
    "promote_model": promote_model.JOB,
    "assign_segments": assign_segments.JOB,
}


def published_page() -> str:
    return PAGE.read_text(encoding="utf-8")


def block(page: str, language: str) -> str:
    found = re.search(rf"^```{language}\n(.*?)^```", page, re.S | re.M)
    assert found, f"no {language} block in {PAGE.relative_to(ROOT)}"
    return found.group(1)


def job_commands(bash: str) -> list[tuple[str, list[str]]]:
    """The published ``.venv/bin/python jobs/<name>.py ...`` lines, as (job, arguments)."""
    commands = []
    for line in bash.splitlines():
        words = shlex.split(line, comments=True)
        if len(words) > 1 and words[0].endswith("/python") and words[1].startswith("jobs/"):
            commands.append((Path(words[1]).stem, words[2:]))
    return commands


def make_variables() -> dict[str, str]:
    """The Makefile's defaults (``NAME ?= value``)."""
    text = (ROOT / "Makefile").read_text()
    return {m[1]: m[2].strip() for m in re.finditer(r"^(\w+) \?= ?(.*)$", text, re.M)}


def make_to_argv(command: str) -> tuple[str, list[str]]:
    """``make <target> VAR=value...`` -> the job and arguments its recipe runs."""
    words = shlex.split(command)
    assert words[0] == "make", command
    target, assigned = words[1], dict(w.split("=", 1) for w in words[2:])
    variables = {**make_variables(), **assigned}
    recipe = re.search(rf"^{target}:.*\n\t(.*)$", (ROOT / "Makefile").read_text(), re.M)
    assert recipe, target
    line = re.sub(
        r"\$\(if \$\((\w+)\),([^)]*\$\(\1\))\)",
        lambda m: m[2] if variables.get(m[1]) else "",
        recipe[1].replace("$(PY)", "python", 1),
    )
    line = re.sub(r"\$\((\w+)\)", lambda m: variables.get(m[1], ""), line)
    words = shlex.split(line)
    assert words[0] == "python" and words[1].startswith("jobs/"), line
    return Path(words[1]).stem, words[2:]


def run_job(spark, name: str, argv: list[str]):
    """One job, as its process would run it (preflight first; the session is the suite's).

    Returns the loaded config and the job's result.
    """
    job = JOBS[name]
    parser = cli.parser(job.description)
    dests = [parser.add_argument(flag, **kw).dest for flag, kw in job.options.items()]
    args = parser.parse_args(argv)
    cfg = cli.load(args)
    if job.preflight is not None:
        job.preflight(cfg)
    result = job.run(spark if job.spark else None, cfg, **{d: getattr(args, d) for d in dests})
    return cfg, result


def run_as_printed(spark, command: str):
    """One printed make command, as the job process would run it."""
    return run_job(spark, *make_to_argv(command))[1]


@pytest.fixture(scope="module")
def newcomer(spark, tmp_path_factory):
    base = tmp_path_factory.mktemp("own")
    page = published_page()
    (base / "orders.csv").write_text(block(page, "csv"))
    conf = base / "conf"
    conf.mkdir()
    shutil.copy(ROOT / "conf" / "base.yaml", conf / "base.yaml")
    overlay = block(page, "yaml")
    assert overlay.startswith("# conf/mydata.yaml\n")
    (conf / "mydata.yaml").write_text(overlay)
    # Only where things live, and a smaller k range for nine customers.
    overrides = [
        f"input.events.path={base / 'orders.csv'}", f"storage.warehouse={base / 'wh'}",
        f"tracking.tracking_uri={mlflow_store(base / 'mlflow.db')}",
        f"tracking.artifact_location={base / 'mla'}", "training.k_max=3",
    ]  # fmt: skip
    sets = [a for o in overrides for a in ("--set", o)]
    commands = job_commands(block(page, "bash"))
    assert [name for name, _ in commands] == ["build_features", "train_segments"]
    results = []
    for name, argv in commands:  # the published commands, the page's conf/ being this test's
        assert argv[:2] == ["--config", "conf/mydata.yaml"], argv
        argv = ["--config", str(conf / "mydata.yaml"), *argv[2:], *sets]
        results.append(run_job(spark, name, argv))
    (cfg, features), (_, trained) = results
    yield cfg, features, trained


def test_published_export_gives_the_features_its_table_promises(spark, newcomer):
    cfg, result, _ = newcomer
    rows = delta_tables.read(spark, cfg.storage.table_path("customer_features")).collect()
    got = {
        r["customer_id"]: (r["frequency"], r["recency_days"], round(r["monetary_total"], 2),
                           round(r["monetary_net"], 2), r["has_purchase"])
        for r in rows
    }  # fmt: skip
    assert got["17850"] == (2, 0, 1254.49, 1254.49, 1)
    assert got["17851"] == (1, 15, 89.0, 0.0, 1)
    assert got["17852"] == (1, 20, 45.0, 45.0, 1)  # 00:30 on 01.07 in Berlin is after as_of
    assert got["17858"] == (0, 18, 0.0, -25.0, 0)
    assert len(got) == 9 and result.rejected == {}
    labels = {lv.label for lv in result.levels.values()}
    assert {"haus & garten", "bücher", "elektronik"} <= labels
    assert level_name("category", "bücher") in result.feature_columns
    text = summaries.features(result, cfg)
    assert re.search(r"amount \(amount_eur\)\s+16\s+0\s+0", text)


def test_training_leaves_out_the_unmapped_discount_and_prints_working_next_steps(newcomer):
    cfg, _, trained = newcomer
    assert not trained.promoted
    assert "discount_share" not in trained.explanation.rules.features
    text = summaries.training(trained, cfg)
    assert "Note: clustering feature discount_share left out" in text
    printed = re.search(r"^\s+(make promote .*)$", text, re.M)
    assert printed, text
    assert f"CONFIG={cfg.origin.config}" in printed[1] and "AS_OF=2025-06-30" in printed[1]


def test_printed_commands_end_with_segment_membership_written(spark, newcomer):
    cfg, _, trained = newcomer
    text = summaries.training(trained, cfg)
    printed = re.search(r"^\s+(make promote .*)$", text, re.M)[1]
    promote, assign = (c.strip() for c in printed.split("&&"))
    promoted = run_as_printed(spark, promote)
    assert promoted.version == trained.model_version
    assigned = run_as_printed(spark, assign)
    members = pl.read_delta(cfg.storage.table_path("segment_membership"))
    assert members.height == 9 == assigned.publication.customers
    assert set(members["model_name"]) == {"customer_segments"}
    assert set(members["as_of"].cast(pl.Utf8)) == {"2025-06-30"}


def test_rfm_of_the_export_puts_the_return_only_customer_in_no_purchases(spark, newcomer):
    cfg, _, _ = newcomer
    result = rules.run(spark, cfg)
    assert result.rfm_no_purchases == 1
    members = pl.read_delta(cfg.storage.table_path("segment_membership")).filter(
        pl.col("model_name") == "rfm"
    )
    by_customer = dict(members.select("customer_id", "segment_name").iter_rows())
    assert by_customer["17858"] == "No purchases"
    assert "b2b_tiers" in result.skipped  # no customers dimension in this example
    # Buyers' frequencies 1, 1, 1, 1, 1, 2, 2, 4: cuts 1, 1, 1, 2, so F2 and F3 are empty.
    assert result.rfm_cuts.frequency == (1, 1, 1, 2)
    assert [(e.measure, e.score) for e in result.rfm_empty_scores] == [("F", 2), ("F", 3)]
    text = summaries.rules(result, cfg)
    assert "F2: the 20% and 40% quintile cuts coincide at 1" in text
