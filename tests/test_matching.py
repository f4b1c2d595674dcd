"""Stable segment ids: Hungarian matching of a retrained model's centroids to the champion's."""

from __future__ import annotations

import math

import pytest

from segmentation.modeling.clustering import Scaling
from segmentation.modeling.matching import (
    KnownSegment,
    Overlap,
    match_segments,
    pair_by_members,
    scaled_point,
)

FEATURES = ("recency_days", "frequency")
# Old model: log1p on both features, its own means and stds.
OLD = Scaling(FEATURES, ("log1p", "log1p"), (3.0, 2.0), (1.0, 0.5))
# The retrained model saw other data: different means and standard deviations.
NEW = Scaling(FEATURES, ("log1p", "log1p"), (3.2, 2.1), (1.1, 0.6))


def centre(recency: float, frequency: float) -> dict[str, float]:
    return {"recency_days": recency, "frequency": frequency}


PREVIOUS = (
    KnownSegment(1, "Lapsed customers", centre(400.0, 3.0)),
    KnownSegment(2, "Loyal regulars", centre(10.0, 30.0)),
    KnownSegment(4, "New customers", centre(5.0, 1.0)),
)


def new_centres(*points: tuple[float, float]) -> dict[int, list[float]]:
    return {i: scaled_point(NEW, centre(*p)) for i, p in enumerate(points)}


def test_scaled_point_inverts_to_original():
    point = scaled_point(NEW, centre(400.0, 3.0))
    assert NEW.to_original(point) == pytest.approx([400.0, 3.0])


def test_same_segments_in_another_order_keep_ids_across_scalings():
    # New clusters in a different order, shifted slightly: every one finds its old id.
    centres = new_centres((6.0, 1.1), (380.0, 3.2), (11.0, 28.0))
    m = match_segments(
        scaling=NEW, new_centers_scaled=centres, new_sizes={0: 10, 1: 50, 2: 30},
        previous=PREVIOUS, previous_max_id=4, max_distance=1.0,
    )  # fmt: skip
    assert m.cluster_to_segment == {0: 4, 1: 1, 2: 2}
    assert m.kept == {4: 4, 1: 1, 2: 2}
    assert m.retired == () and m.max_segment_id == 4
    assert all(p.reason.startswith("matched: centres") and p.distance < 0.2 for p in m.pairs)


def test_extra_segment_gets_a_never_used_id_and_missing_one_is_retired():
    # Lapsed disappears; two new behaviours appear. Ids 1..4 were issued before (3 was
    # retired earlier), so new ids start at 5, the larger new segment first.
    centres = new_centres((10.0, 30.0), (5.0, 1.0), (60.0, 100.0), (2000.0, 500.0))
    m = match_segments(
        scaling=NEW, new_centers_scaled=centres, new_sizes={0: 40, 1: 10, 2: 5, 3: 20},
        previous=PREVIOUS, previous_max_id=4, max_distance=1.0,
    )  # fmt: skip
    assert m.cluster_to_segment[0] == 2 and m.cluster_to_segment[1] == 4
    assert m.cluster_to_segment[3] == 5 and m.cluster_to_segment[2] == 6
    assert m.retired == (1,)
    assert m.max_segment_id == 6
    far = next(p for p in m.pairs if p.cluster in (2, 3) and p.distance is not None)
    assert "match_max_distance" in far.reason


def test_a_segment_beyond_the_distance_threshold_is_new():
    # One-to-one optimal: the only candidate for the moved segment is too far away.
    centres = new_centres((400.0, 3.0), (10.0, 30.0), (5.0, 40.0))
    m = match_segments(
        scaling=NEW, new_centers_scaled=centres, new_sizes={0: 1, 1: 1, 2: 1},
        previous=PREVIOUS, previous_max_id=4, max_distance=1.0,
    )  # fmt: skip
    assert m.cluster_to_segment[0] == 1 and m.cluster_to_segment[1] == 2
    assert m.cluster_to_segment[2] == 5
    assert m.retired == (4,)
    d = m.distances[2][m.previous_ids.index(4)]
    assert d > 1.0 and math.isclose(d, math.dist(centres[2], scaled_point(NEW, centre(5, 1))),
                                    rel_tol=1e-5)  # fmt: skip


def test_first_model_numbers_segments_by_size():
    centres = new_centres((1.0, 1.0), (100.0, 1.0), (1.0, 100.0))
    m = match_segments(
        scaling=NEW, new_centers_scaled=centres, new_sizes={0: 5, 1: 50, 2: 20},
        previous=(), previous_max_id=0, max_distance=1.0,
    )  # fmt: skip
    assert m.cluster_to_segment == {1: 1, 2: 2, 0: 3}
    assert all(p.reason.startswith("first model") for p in m.pairs)


def test_a_champion_on_other_features_is_not_matched():
    other = (KnownSegment(1, "Old", {"monetary_total": 5.0}),)
    m = match_segments(
        scaling=NEW, new_centers_scaled=new_centres((1.0, 1.0)), new_sizes={0: 5},
        previous=other, previous_max_id=3, max_distance=1.0,
    )  # fmt: skip
    assert m.cluster_to_segment == {0: 4} and m.retired == (1,)
    assert "other features" in m.pairs[0].reason


def test_stable_names_keep_the_champions_and_never_repeat():
    from segmentation.modeling.matching import stable_names

    generated = {1: "Champions", 2: "Lapsed customers", 3: "Champions", 4: "New customers"}
    kept = {1: 5, 2: 7}  # new segment 1 continues old 5, 2 continues old 7
    previous = {5: "Big spenders", 7: "Champions", 9: "Retired"}
    assert stable_names(generated, kept, previous) == {
        1: "Big spenders",
        2: "Champions",
        3: "Champions #3",  # its generated name is taken by a kept segment
        4: "New customers",
    }


def test_stable_names_without_a_champion_are_the_generated_ones():
    from segmentation.modeling.matching import stable_names

    assert stable_names({1: "A", 2: "A"}, {}, {}) == {1: "A", 2: "A #2"}


def test_a_near_segment_of_another_size_does_not_inherit_the_id():
    """A retrain from 30 segments to 2 put a segment of 85% of customers nearest a 0.4% one:
    near centres, but the shares' ratio 0.004 / 0.85 is far below the minimum agreement."""
    previous = (KnownSegment(18, "Loyal regulars (less frequent) #18", centre(10.0, 30.0), 0.004),
                KnownSegment(2, "Lapsed customers", centre(400.0, 3.0), 0.15))  # fmt: skip
    centres = new_centres((11.0, 29.0), (390.0, 3.1))
    m = match_segments(
        scaling=NEW, new_centers_scaled=centres, new_sizes={0: 850, 1: 150}, previous=previous,
        previous_max_id=30, max_distance=1.0, min_agreement=0.5,
    )  # fmt: skip
    big, lapsed = m.pairs
    assert big.previous_id is None and big.segment_id == 31
    assert big.agreement == pytest.approx(0.004 / 0.85)
    assert "shares' ratio is only 0.00" in big.reason and "match_min_jaccard" in big.reason
    assert lapsed.previous_id == 2 and lapsed.agreement == pytest.approx(1.0)


def test_member_overlap_decides_with_the_jaccard_of_the_members():
    """Members known: cluster 0 (100 customers) shares 80 with old segment 2 (90 members):
    Jaccard 80 / (100 + 90 - 80) = 0.727, kept; cluster 1 (50) shares 10 with old segment 1
    (60): 10 / 100 = 0.1, a different segment although its centre is near."""
    from segmentation.modeling.matching import Overlap

    centres = new_centres((10.0, 30.0), (400.0, 3.0))
    overlap = Overlap(both={(0, 2): 80, (1, 1): 10}, previous_sizes={1: 60, 2: 90, 4: 5})
    m = match_segments(
        scaling=NEW, new_centers_scaled=centres, new_sizes={0: 100, 1: 50},
        previous=PREVIOUS, previous_max_id=4, max_distance=1.0, min_agreement=0.5,
        overlap=overlap,
    )  # fmt: skip
    kept, other = m.pairs
    assert kept.previous_id == 2 and kept.agreement == pytest.approx(80 / 110)
    assert "members overlap (Jaccard) 0.73" in kept.reason
    assert other.previous_id is None and other.agreement == pytest.approx(0.1)
    assert m.retired == (1, 4)


def test_backtest_clusters_take_the_ids_whose_members_they_share():
    """Jaccard by hand: cluster 0 and segment 9 share 8 of 10 + 9 - 8 = 11 customers (0.727),
    cluster 1 and segment 7 share 4 of 5 + 6 - 4 = 7 (0.571); the other pairing sums to
    1/15 + 0. A segment no customer is in still gets the cluster left over."""
    overlap = Overlap({(0, 9): 8, (0, 7): 1, (1, 7): 4}, {7: 6, 9: 9})
    assert pair_by_members({0: 10, 1: 5}, [7, 9], overlap) == {0: 9, 1: 7}
    empty = Overlap({(0, 1): 3, (1, 2): 3}, {1: 3, 2: 3})
    assert pair_by_members({0: 3, 1: 3, 2: 3}, [1, 2, 3], empty) == {0: 1, 1: 2, 2: 3}
