"""Skew handling and standard scaling of the clustering features, as one SQL stage.

Every segmentation (behavioural and attitudinal) scales its features the same way before
clustering: per feature an optional signed ``log1p``, then standard scaling with the means and
standard deviations of the training data (nulls become the mean). The fitted ``Scaling`` is a
``SQLTransformer``, so the registered model applies it wherever Spark runs.

Imports: pyspark and ``segmentation.errors`` only.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from pyspark.ml.feature import SQLTransformer
from pyspark.sql import DataFrame, Row
from pyspark.sql import functions as F

from segmentation.errors import InputError

log = logging.getLogger(__name__)

PREFIX = "seg__"
"""Prefix of the columns the model adds (scaled features, vector, cluster index)."""
_STD_FLOOR = 1e-12

TransformName = Literal["log1p", "none"]


def sql_double(value: float) -> str:
    return f"CAST('{value!r}' AS DOUBLE)"


def transformed_sql(feature: str, transform: str) -> str:
    x = f"CAST(`{feature}` AS DOUBLE)"
    return f"(SIGN({x}) * LN(1 + ABS({x})))" if transform == "log1p" else x


ScalingMethod = Literal["robust", "standard"]
IQR_PER_SD = 1.3489795003921634
"""The interquartile range of a normal distribution in standard deviations: a robust scale of
IQR / 1.349 equals the standard deviation for normal data, so distances (``match_max_distance``)
keep their meaning."""


@dataclass(frozen=True)
class Scaling:
    """Fitted skew transforms and scaling for the clustering features: ``(x - centre) /
    scale`` per feature, then clipped to ``[-clip, clip]`` (no clip: None).

    ``means`` and ``stds`` hold the centres and scales: the mean and standard deviation
    (``method="standard"``), or the median and IQR / 1.349 (``"robust"``; a feature whose IQR
    is 0 falls back to its standard deviation, listed in ``fallbacks``)."""

    features: tuple[str, ...]
    transforms: tuple[str, ...]
    means: tuple[float, ...]
    stds: tuple[float, ...]
    # Added to every scaled value. Spark's BisectingKMeans splits a cluster by perturbing its
    # centre by 1e-4 * norm(centre): a root cluster centred exactly at the origin (which is
    # where standard scaling puts it) can never split. Distances do not change with a shift.
    offset: float = 0.0
    method: str = "standard"
    clip: float | None = None
    fallbacks: tuple[str, ...] = ()
    """Robust scaling: the features whose IQR was 0, scaled by their standard deviation."""
    sds: tuple[float, ...] = ()
    """Every feature's standard deviation (measured whatever the method)."""

    @property
    def scaled_columns(self) -> list[str]:
        return [f"{PREFIX}z_{i}" for i in range(len(self.features))]

    def stage(self) -> SQLTransformer:
        """The SQL stage that adds the scaled columns."""
        parts = []
        for feature, transform, mean, std, out in zip(
            self.features, self.transforms, self.means, self.stds, self.scaled_columns, strict=True
        ):
            value = transformed_sql(feature, transform)
            z = f"({value} - {sql_double(mean)}) / {sql_double(std)}"
            if self.clip is not None:
                bound = sql_double(self.clip)
                z = f"LEAST(GREATEST({z}, -{bound}), {bound})"
            parts.append(f"COALESCE({z}, 0D) + {sql_double(self.offset)} AS `{out}`")
        return SQLTransformer(statement=f"SELECT *, {', '.join(parts)} FROM __THIS__")

    def subset(self, features: Sequence[str]) -> Scaling:
        """The same scaling of ``features`` only (a subset, in its order)."""
        index = [self.features.index(f) for f in features]

        def pick(values: Sequence[float]) -> tuple[float, ...]:
            return tuple(values[i] for i in index) if values else ()

        return dataclasses.replace(
            self, features=tuple(features), transforms=tuple(self.transforms[i] for i in index),
            means=pick(self.means), stds=pick(self.stds), sds=pick(self.sds),
            fallbacks=tuple(f for f in self.fallbacks if f in features),
        )  # fmt: skip

    def to_original(self, scaled: Sequence[float]) -> list[float]:
        """Map a point of the scaled space back to the features' original units."""
        values = []
        for z, transform, mean, std in zip(
            scaled, self.transforms, self.means, self.stds, strict=True
        ):
            t = (z - self.offset) * std + mean
            values.append(math.copysign(math.expm1(abs(t)), t) if transform == "log1p" else t)
        return values


def fit_scaling(
    df: DataFrame,
    features: Sequence[str],
    *,
    transforms: Mapping[str, str] | None = None,
    default_transform: str = "log1p",
    offset: float = 0.0,
    method: ScalingMethod = "standard",
    clip: float | None = None,
) -> Scaling:
    """Centres and scales of the transformed features, in one pass over ``df``.

    ``standard``: mean and standard deviation. ``robust``: median and IQR / 1.349, which one
    extreme customer cannot move (a flag only one customer has would get z = 55 from the
    standard deviation); a feature whose IQR is 0 (a sparse share, a rare flag) falls back to
    its standard deviation. ``clip`` caps every scaled value (winsorised z-scores), so an
    outlier joins the nearest segment instead of pulling a centre of its own. A feature with
    zero variance gets scale 1 (scaled value 0 everywhere): it cannot influence the segments.
    """
    require_columns(df, features)
    chosen = tuple((transforms or {}).get(f, default_transform) for f in features)
    exprs = []
    for i, (feature, transform) in enumerate(zip(features, chosen, strict=True)):
        value = F.expr(transformed_sql(feature, transform))
        exprs += [F.avg(value).alias(f"m{i}"), F.stddev_pop(value).alias(f"s{i}")]
        if method == "robust":
            exprs.append(F.percentile_approx(value, [0.25, 0.5, 0.75], 10000).alias(f"q{i}"))
    row = df.agg(*exprs).first()
    if row is None or row["m0"] is None:
        raise InputError("cannot fit scaling: customer_features has no rows")
    constant = [f for i, f in enumerate(features) if not row[f"s{i}"] or row[f"s{i}"] <= _STD_FLOOR]
    if len(constant) == len(features):
        raise InputError(
            f"every clustering feature ({', '.join(features)}) has the same value for all "
            "customers: there is nothing to segment (check the input, features.as_of and "
            "training.features)"
        )
    for feature in constant:
        log.warning("feature %s has zero variance: it cannot influence the segments", feature)
    centres, scales, fallbacks, sds = [], [], [], []
    for i, feature in enumerate(features):
        sds.append(float(row[f"s{i}"] or 0.0))
        centre, scale, fell_back = _centre_and_scale(row, i, method, feature in constant)
        centres.append(centre)
        scales.append(scale)
        if fell_back:
            fallbacks.append(feature)
    return Scaling(tuple(features), chosen, tuple(centres), tuple(scales), offset, method, clip,
                   tuple(fallbacks), tuple(sds))  # fmt: skip


def _centre_and_scale(row: Row, i: int, method: str, constant: bool) -> tuple[float, float, bool]:
    """Feature ``i``'s centre and scale from the aggregation row, and whether a robust scale
    fell back to the standard deviation (IQR 0)."""
    sd = 1.0 if constant else float(row[f"s{i}"])
    if method != "robust":
        return float(row[f"m{i}"]), sd, False
    q1, median, q3 = (float(v) for v in row[f"q{i}"])
    if q3 - q1 > _STD_FLOOR:
        return median, (q3 - q1) / IQR_PER_SD, False
    return median, sd, not constant


@dataclass(frozen=True)
class NearConstant:
    """A feature one value dominates: the value and the share of rows that hold it."""

    feature: str
    value: float
    share: float

    def note(self, key: str) -> str:
        return (
            f"clustering feature {self.feature} left out: {self.share:.2%} of customers have "
            f"the same value ({self.value:g}), at least {key}; it could only single out the "
            "few others (set the key higher to keep it)"
        )


def require_columns(df: DataFrame, features: Sequence[str]) -> None:
    """Raises InputError naming the clustering features that are not columns of ``df``."""
    missing = [f for f in features if f not in df.columns]
    if missing:
        raise InputError(
            f"clustering feature(s) {missing} (config key training.features) are not columns of "
            f"customer_features; available: {', '.join(sorted(df.columns))}"
        )


def near_constant(df: DataFrame, features: Sequence[str], *, share: float) -> list[NearConstant]:
    """The features where at least ``share`` of the rows hold one value (their most frequent
    one, ``mode``), measured in two aggregations. A flag or share that almost nobody has is
    such a feature: scaled, its few non-zero customers are far from everyone, and the segments
    would be shaped around them."""
    if not features:
        return []
    require_columns(df, features)
    values = [F.col(f"`{f}`").cast("double") for f in features]
    modes = df.agg(*[F.mode(v).alias(f"m{i}") for i, v in enumerate(values)]).first()
    assert modes is not None
    shares = df.agg(
        F.count(F.lit(1)).alias("n"),
        *[F.count(F.when(v == F.lit(modes[f"m{i}"]), 1)).alias(f"c{i}")
          for i, v in enumerate(values) if modes[f"m{i}"] is not None],
    ).first()  # fmt: skip
    assert shares is not None
    n = int(shares["n"]) or 1
    return [
        NearConstant(f, float(modes[f"m{i}"]), shares[f"c{i}"] / n)
        for i, f in enumerate(features)
        if modes[f"m{i}"] is not None and shares[f"c{i}"] / n >= share
    ]
