"""Choosing k on overlapping planted behaviours: the balanced rule finds the planted number
where the former parsimony rule merged two of them."""

from __future__ import annotations

import mlflow
import pytest

from segmentation.modeling import model_selection
from segmentation.workflows import build_features, generate, summaries, train
from tests.conftest import local_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def overlapping(spark, tmp_path_factory):
    base = tmp_path_factory.mktemp("overlap")
    cfg = local_config(
        base,
        "generator.customers=6000", "generator.events=300000", "generator.overlap=0.5",
        "tracking.promote=false", "explain.report=false", "validation.outcome.mode=none",
        "validation.bootstrap_samples=5",
    )  # fmt: skip
    generate.run(spark, cfg)
    build_features.run(spark, cfg)
    yield cfg, train.run(spark, cfg)
    mlflow.set_tracking_uri(None)


def test_overlapping_archetypes_get_the_planted_number_of_segments(overlapping):
    _, trained = overlapping
    assert trained.selection.chosen_k == 6  # the generator plants six behaviours
    assert trained.ari_vs_truth >= 0.85
    assert trained.selection.rule == "balanced"
    # Every candidate was judged on each criterion; k = 7 splits a planted behaviour and is
    # unstable, so it is not admissible.
    by_k = {c.k: c for c in trained.selection.candidates}
    assert by_k[6].worst_jaccard >= 0.75 > by_k[7].worst_jaccard


def test_the_former_parsimony_rule_would_have_merged_behaviours(overlapping):
    _, trained = overlapping
    k, reason = model_selection.choose(
        trained.selection.candidates,
        model_selection.SelectionRule("parsimony", min_segment_share=0.02, tolerance=0.03),
    )
    assert k < 6 and "smallest k with silhouette" in reason


def test_the_summary_shows_every_candidate_and_the_reason(overlapping):
    cfg, trained = overlapping
    text = summaries.training(trained, cfg)
    assert "model selection (balanced rule): k=6: best mean rank of silhouette" in text
    header = next(line for line in text.splitlines() if "Calinski-H." in line)
    rows = text.splitlines()[text.splitlines().index(header) + 1 :][
        : len(trained.selection.candidates)
    ]
    assert [int(r.split()[1 if r.strip().startswith("*") else 0]) for r in rows] == [
        c.k for c in trained.selection.candidates
    ]
    assert sum(r.strip().startswith("*") for r in rows) == 1
