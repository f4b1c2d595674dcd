"""The retrain rule on plain values."""

from __future__ import annotations

from segmentation import drift


def test_retrain_reasons_name_every_psi_over_the_threshold():
    reasons = drift.retrain_reasons(0.3, {"recency_days": 5.0871, "frequency": 0.01}, 0.25)
    assert reasons == [
        "segment shares moved: PSI 0.300 > drift.psi_threshold 0.25",
        "feature recency_days drifted: PSI 5.087 > drift.psi_threshold 0.25",
    ]


def test_retrain_reasons_empty_at_or_under_the_threshold():
    assert drift.retrain_reasons(0.25, {"frequency": 0.25}, 0.25) == []
