"""Stable segment ids across retrains: match a new model's segments to the champion's.

Two models are fitted on different data (another snapshot) with different scalings, so their
centroids are compared in one common space: both sets are taken in the features' original
units and mapped through the *new* model's skew transform and scaling. The optimal one-to-one
assignment (Hungarian algorithm, ``scipy.optimize.linear_sum_assignment``) minimises the total
Euclidean distance there. A new segment keeps the matched old segment's id and name when the
distance is at most ``max_distance`` (in standard deviations of the scaled space); otherwise,
and when the new model has more segments, it gets a new id, never one used before.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from scipy.optimize import linear_sum_assignment

from segmentation.modeling.clustering import Scaling

SEGMENTS_ARTIFACT = "segments/segments.json"


@dataclass(frozen=True)
class KnownSegment:
    """A segment of an earlier model: its id, name and centre in original units."""

    segment_id: int
    name: str
    center: Mapping[str, float]
    share: float | None = None
    """Its share of the customers it was trained on (None: not recorded)."""


@dataclass(frozen=True)
class Pair:
    """One matching decision for a new segment (cluster index of the new model)."""

    cluster: int
    segment_id: int
    previous_id: int | None
    distance: float | None
    reason: str
    agreement: float | None = None
    """How much the two segments agree: the Jaccard overlap of their members (or, without
    the previous members, the ratio of their shares, an upper bound of it)."""


@dataclass(frozen=True)
class Matching:
    pairs: tuple[Pair, ...]
    retired: tuple[int, ...]
    max_segment_id: int
    distances: tuple[tuple[float, ...], ...]
    previous_ids: tuple[int, ...]

    @property
    def cluster_to_segment(self) -> dict[int, int]:
        return {p.cluster: p.segment_id for p in self.pairs}

    @property
    def kept(self) -> dict[int, int]:
        """New segment id -> the previous model's id it continues (the same number)."""
        return {p.segment_id: p.previous_id for p in self.pairs if p.previous_id is not None}

    def as_dict(self) -> dict[str, object]:
        return {
            "pairs": [p.__dict__ for p in self.pairs],
            "retired_segment_ids": list(self.retired),
            "max_segment_id": self.max_segment_id,
            "previous_segment_ids": list(self.previous_ids),
            "distance_matrix": [list(row) for row in self.distances],
        }


def scaled_point(scaling: Scaling, center: Mapping[str, float]) -> list[float]:
    """A point in original units mapped into ``scaling``'s space (transform, then scale)."""
    out = []
    for feature, transform, mean, std in zip(
        scaling.features, scaling.transforms, scaling.means, scaling.stds, strict=True
    ):
        x = float(center[feature])
        if transform == "log1p":
            x = math.copysign(math.log1p(abs(x)), x)
        z = (x - mean) / std
        if scaling.clip is not None:
            z = max(-scaling.clip, min(scaling.clip, z))
        out.append(z + scaling.offset)
    return out


@dataclass(frozen=True)
class Overlap:
    """Members the new clusters share with the previous segments (customers in both)."""

    both: Mapping[tuple[int, int], int]
    """(new cluster, previous segment id) -> customers in both."""
    previous_sizes: Mapping[int, int]
    """Previous segment id -> its members."""


def agreement(
    cluster: int,
    previous: KnownSegment,
    new_sizes: Mapping[int, int],
    overlap: Overlap | None,
) -> float | None:
    """The Jaccard overlap of a new cluster's and a previous segment's members; without the
    previous members, the smaller share over the larger (the Jaccard can be no higher); None
    when neither is known."""
    size = new_sizes.get(cluster, 0)
    if overlap is not None:
        both = overlap.both.get((cluster, previous.segment_id), 0)
        union = size + overlap.previous_sizes.get(previous.segment_id, 0) - both
        return both / union if union else 0.0
    total = sum(new_sizes.values())
    if previous.share is None or not total or not previous.share:
        return None
    share = size / total
    return min(share, previous.share) / max(share, previous.share)


def pair_by_members(
    new_sizes: Mapping[int, int], segment_ids: Sequence[int], overlap: Overlap
) -> dict[int, int]:
    """Each new cluster -> the segment id whose members it shares most: Hungarian matching
    (Kuhn 1955) maximising the summed Jaccard overlap. Every cluster gets an id when there are
    at least as many ``segment_ids`` as clusters."""
    clusters, ids = sorted(new_sizes), list(segment_ids)
    jaccard = [
        [agreement(c, KnownSegment(s, "", {}), new_sizes, overlap) or 0.0 for s in ids]
        for c in clusters
    ]
    rows, cols = linear_sum_assignment(jaccard, maximize=True)
    return {clusters[r]: ids[c] for r, c in zip(rows, cols, strict=True)}


def _kept_reason(distance: float, agreed: float | None, overlap: Overlap | None) -> str:
    if agreed is None:
        return f"matched: centres {distance:.3f} apart"
    what = "members overlap (Jaccard)" if overlap is not None else "shares' ratio"
    return f"matched: centres {distance:.3f} apart, {what} {agreed:.2f}"


def _disagree_reason(
    hit: tuple[KnownSegment, float], agreed: float | None, overlap: Overlap | None,
    min_agreement: float,
) -> str:  # fmt: skip
    what = "members overlap (Jaccard)" if overlap is not None else "shares' ratio"
    return (
        f"previous segment {hit[0].segment_id} is near ({hit[1]:.3f}) but its {what} is only "
        f"{agreed or 0.0:.2f}, below training.match_min_jaccard ({min_agreement}): a different "
        "segment"
    )


def _new_id_reason(
    hit: tuple[KnownSegment, float] | None, previous: bool, usable: bool, max_distance: float
) -> str:
    """Why a cluster gets a new id rather than a previous segment's."""
    if not previous:
        return "first model: no previous segments"
    if not usable:
        return "the previous model was trained on other features: nothing to match"
    if hit is not None:
        return (
            f"nearest unclaimed previous segment {hit[0].segment_id} is {hit[1]:.3f} away, "
            f"more than training.match_max_distance ({max_distance})"
        )
    return "more segments than the previous model"


def match_segments(
    *,
    scaling: Scaling,
    new_centers_scaled: Mapping[int, Sequence[float]],
    new_sizes: Mapping[int, int],
    previous: Sequence[KnownSegment],
    previous_max_id: int,
    max_distance: float,
    min_agreement: float = 0.0,
    overlap: Overlap | None = None,
) -> Matching:
    """Assign segment ids to a new model's clusters, reusing the previous model's ids.

    A new cluster inherits the id and name of the previous segment Hungarian matching pairs it
    with only when their centres are at most ``max_distance`` apart *and* their members agree:
    a Jaccard overlap of at least ``min_agreement`` (``training.match_min_jaccard``), or, when
    the previous members are not known, shares that close (a new segment of 85% of customers
    never continues a 0.4% one, however near their centres).

    Args:
        scaling: the new model's scaling (the common space).
        new_centers_scaled: cluster index -> centre in the new scaled space.
        new_sizes: cluster index -> customers, to number unmatched segments (largest first).
        previous: the champion's segments; empty for a first model.
        previous_max_id: the highest id ever issued; new ids start above it.
        max_distance: a pair further apart than this is not the same segment.
        min_agreement: a pair whose members agree less is not the same segment.
        overlap: the members both share (None: compare the shares instead).
    """
    clusters = sorted(new_centers_scaled)
    usable, distances, matched = _nearest_pairs(scaling, new_centers_scaled, previous)
    agreed = {c: None if (hit := matched.get(c)) is None else
              agreement(c, hit[0], new_sizes, overlap) for c in clusters}  # fmt: skip
    pairs: dict[int, Pair] = {}
    for cluster in clusters:
        hit, a = matched.get(cluster), agreed[cluster]
        if hit is not None and hit[1] <= max_distance and (a is None or a >= min_agreement):
            seg, d = hit
            pairs[cluster] = Pair(cluster, seg.segment_id, seg.segment_id, d,
                                  _kept_reason(d, a, overlap), a)  # fmt: skip
    next_id = max([previous_max_id, *[p.segment_id for p in previous]])
    # New ids for unmatched segments: largest first, so a first model numbers 1 = largest.
    unmatched = [c for c in clusters if c not in pairs]
    for cluster in sorted(unmatched, key=lambda c: (-new_sizes.get(c, 0), c)):
        next_id += 1
        hit = matched.get(cluster)
        reason = _new_id_reason(hit, bool(previous), bool(usable), max_distance)
        if hit is not None and hit[1] <= max_distance:
            reason = _disagree_reason(hit, agreed[cluster], overlap, min_agreement)
        pairs[cluster] = Pair(cluster, next_id, None, hit[1] if hit else None, reason,
                              agreed[cluster])  # fmt: skip
    kept = {p.previous_id for p in pairs.values()}
    return Matching(
        pairs=tuple(pairs[c] for c in clusters),
        retired=tuple(sorted(p.segment_id for p in previous if p.segment_id not in kept)),
        max_segment_id=next_id,
        distances=tuple(tuple(round(d, 6) for d in row) for row in distances),
        previous_ids=tuple(p.segment_id for p in usable),
    )


def _nearest_pairs(
    scaling: Scaling,
    new_centers_scaled: Mapping[int, Sequence[float]],
    previous: Sequence[KnownSegment],
) -> tuple[list[KnownSegment], list[list[float]], dict[int, tuple[KnownSegment, float]]]:
    """The previous segments comparable with the new model (trained on its features), the
    distance matrix in the new scaled space, and the Hungarian pairing (cluster -> segment,
    distance)."""
    clusters = sorted(new_centers_scaled)
    usable = [p for p in previous if all(f in p.center for f in scaling.features)]
    old_points = [scaled_point(scaling, p.center) for p in usable]
    distances = [
        [math.dist(new_centers_scaled[c], point) for point in old_points] for c in clusters
    ]
    matched: dict[int, tuple[KnownSegment, float]] = {}
    if usable:
        rows, cols = linear_sum_assignment(distances)
        for r, c in zip(rows, cols, strict=True):
            matched[clusters[r]] = (usable[c], distances[r][c])
    return usable, distances, matched


def stable_names(
    generated: Mapping[int, str], kept: Mapping[int, int], previous: Mapping[int, str]
) -> dict[int, str]:
    """Segment names that survive retrains.

    Args:
        generated: segment id -> the name the new model's profile suggests.
        kept: new segment id -> the previous model's segment id it continues (``Matching.kept``).
        previous: the previous model's segment id -> name.

    Returns:
        A kept segment keeps its previous name; any other gets its generated name, suffixed
        with ``#<id>`` when that name is already taken, so names stay unique.
    """
    names = {sid: previous[old] for sid, old in kept.items() if old in previous}
    taken = set(names.values())
    for sid in sorted(generated):
        if sid in names:
            continue
        name = generated[sid] if generated[sid] not in taken else f"{generated[sid]} #{sid}"
        names[sid] = name
        taken.add(name)
    return names
