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


@dataclass(frozen=True)
class Pair:
    """One matching decision for a new segment (cluster index of the new model)."""

    cluster: int
    segment_id: int
    previous_id: int | None
    distance: float | None
    reason: str


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
        out.append((x - mean) / std + scaling.offset)
    return out


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
) -> Matching:
    """Assign segment ids to a new model's clusters, reusing the previous model's ids.

    Args:
        scaling: the new model's scaling (the common space).
        new_centers_scaled: cluster index -> centre in the new scaled space.
        new_sizes: cluster index -> customers, to number unmatched segments (largest first).
        previous: the champion's segments; empty for a first model.
        previous_max_id: the highest id ever issued; new ids start above it.
        max_distance: a pair further apart than this is not the same segment.
    """
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
    pairs: dict[int, Pair] = {}
    next_id = max([previous_max_id, *[p.segment_id for p in previous]])
    unmatched = []
    for cluster in clusters:
        hit = matched.get(cluster)
        if hit is not None and hit[1] <= max_distance:
            seg, d = hit
            pairs[cluster] = Pair(cluster, seg.segment_id, seg.segment_id, d, "matched")
        else:
            unmatched.append(cluster)
    # New ids for unmatched segments: largest first, so a first model numbers 1 = largest.
    for cluster in sorted(unmatched, key=lambda c: (-new_sizes.get(c, 0), c)):
        next_id += 1
        hit = matched.get(cluster)
        reason = _new_id_reason(hit, bool(previous), bool(usable), max_distance)
        pairs[cluster] = Pair(cluster, next_id, None, hit[1] if hit else None, reason)
    kept = {p.previous_id for p in pairs.values()}
    retired = tuple(sorted(p.segment_id for p in previous if p.segment_id not in kept))
    return Matching(
        pairs=tuple(pairs[c] for c in clusters),
        retired=retired,
        max_segment_id=next_id,
        distances=tuple(tuple(round(d, 6) for d in row) for row in distances),
        previous_ids=tuple(p.segment_id for p in usable),
    )


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
