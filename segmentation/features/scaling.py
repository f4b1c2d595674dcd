"""Skew handling and standard scaling of the clustering features, as one SQL stage.

Every segmentation (behavioural and attitudinal) scales its features the same way before
clustering: per feature an optional signed ``log1p``, then standard scaling with the means and
standard deviations of the training data (nulls become the mean). The fitted ``Scaling`` is a
``SQLTransformer``, so the registered model applies it wherever Spark runs.

Imports: pyspark and ``segmentation.errors`` only.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from pyspark.ml.feature import SQLTransformer
from pyspark.sql import DataFrame
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


@dataclass(frozen=True)
class Scaling:
    """Fitted skew transforms and standard scaling for the clustering features."""

    features: tuple[str, ...]
    transforms: tuple[str, ...]
    means: tuple[float, ...]
    stds: tuple[float, ...]
    # Added to every scaled value. Spark's BisectingKMeans splits a cluster by perturbing its
    # centre by 1e-4 * norm(centre): a root cluster centred exactly at the origin (which is
    # where standard scaling puts it) can never split. Distances do not change with a shift.
    offset: float = 0.0

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
            parts.append(
                f"COALESCE(({value} - {sql_double(mean)}) / {sql_double(std)}, 0D)"
                f" + {sql_double(self.offset)} AS `{out}`"
            )
        return SQLTransformer(statement=f"SELECT *, {', '.join(parts)} FROM __THIS__")

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
) -> Scaling:
    """Means and standard deviations of the transformed features, in one pass over ``df``.

    A feature with zero variance gets standard deviation 1 (its scaled value is 0 everywhere),
    so it cannot produce NaN; it simply has no influence on the clustering.
    """
    missing = [f for f in features if f not in df.columns]
    if missing:
        raise InputError(
            f"clustering feature(s) {missing} (config key training.features) are not columns of "
            f"customer_features; available: {', '.join(sorted(df.columns))}"
        )
    chosen = tuple((transforms or {}).get(f, default_transform) for f in features)
    exprs = []
    for i, (feature, transform) in enumerate(zip(features, chosen, strict=True)):
        value = F.expr(transformed_sql(feature, transform))
        exprs += [F.avg(value).alias(f"m{i}"), F.stddev_pop(value).alias(f"s{i}")]
    row = df.agg(*exprs).first()
    if row is None or row["m0"] is None:
        raise InputError("cannot fit scaling: customer_features has no rows")
    means = tuple(float(row[f"m{i}"]) for i in range(len(features)))
    constant = [f for i, f in enumerate(features) if not row[f"s{i}"] or row[f"s{i}"] <= _STD_FLOOR]
    if len(constant) == len(features):
        raise InputError(
            f"every clustering feature ({', '.join(features)}) has the same value for all "
            "customers: there is nothing to segment (check the input, features.as_of and "
            "training.features)"
        )
    for feature in constant:
        log.warning("feature %s has zero variance: it cannot influence the segments", feature)
    stds = tuple(
        1.0 if features[i] in constant else float(row[f"s{i}"]) for i in range(len(features))
    )
    return Scaling(tuple(features), chosen, means, stds, offset)
