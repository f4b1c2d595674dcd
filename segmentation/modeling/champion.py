"""The model in use: the registered version under the alias, with the segments it recorded."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from segmentation.config import TrackingConfig, mask_uri
from segmentation.errors import InputError
from segmentation.modeling import matching
from segmentation.runtime import tracking


@dataclass(frozen=True)
class Champion:
    """The model under the alias, with the segments its training run recorded."""

    version: int
    run_id: str
    segments: tuple[matching.KnownSegment, ...]
    max_segment_id: int
    features: tuple[str, ...]
    as_of: dt.date | None = None
    """The snapshot it was trained on (its membership of that date, when published, says who
    its segments' members are)."""

    @property
    def names(self) -> dict[int, str]:
        return {s.segment_id: s.name for s in self.segments}


def load(tc: TrackingConfig) -> Champion | None:
    """The current ``registered_model@alias`` and its segments, or None when there is none.

    Raises:
        InputError: the version has no segments artifact (it was not trained by this job).
        SegmentationError: the registry failed (anything but "no such model or alias").
    """
    current = tracking.alias_version(tc.registered_model, tc.alias)
    if current is None:
        return None
    info = tracking.load_json(current.run_id, matching.SEGMENTS_ARTIFACT)
    if info is None:
        raise InputError(
            f"model {tc.registered_model} version {current.version} (@{tc.alias}) has no "
            f"{matching.SEGMENTS_ARTIFACT} artifact in run {current.run_id}: it was not trained "
            "by train_segments; train and promote a new version"
        )
    return Champion(
        version=current.version,
        run_id=current.run_id,
        segments=tuple(
            matching.KnownSegment(int(s["segment_id"]), str(s["name"]), s["center"], s.get("share"))
            for s in info["segments"]
        ),
        max_segment_id=int(info["max_segment_id"]),
        features=tuple(info["features"]),
        as_of=dt.date.fromisoformat(info["as_of"]) if info.get("as_of") else None,
    )


def require(tc: TrackingConfig) -> Champion:
    """The champion; without one, an error saying how to get one."""
    champion = load(tc)
    if champion is None:
        raise InputError(
            f"no model under {tc.registered_model}@{tc.alias} (tracking.registered_model, "
            f"tracking.alias) in the registry at {mask_uri(tc.tracking_uri)} "
            "(tracking.tracking_uri): train one with tracking.promote=true, or promote a trained "
            "version with `make promote CONFIG=<your config> VERSION=<n>`"
        )
    return champion
