"""The attitudinal clustering space: imputation, encoding, factor scores and block weights.

Everything here becomes SQL (``SQLTransformer`` stages), so the registered model applies to a
new respondent exactly what the training applied to its respondents:

1. ``clean`` stage: every item cleaned (``survey.clean_sql``) and imputed (``survey``'s rule);
   numeric and boolean attributes cleaned and imputed; each categorical attribute one-hot
   encoded on the levels the training saw most (``attitudes.attributes.max_levels``; the
   others grouped as ``other``, a missing value is its own level ``(missing)``).
2. ``factors`` stage: each factor's regression score, sum_i W[i, k] (x_i - mean_i) / sd_i
   (``factors.Solution.weights``; the means and population sds of the imputed items).
3. The clustering ``Scaling`` (``Scaling``) standardises every column and applies
   the block weights (``weighted_scaling``).

Block weights (documented rule): each block's columns are scaled so that the block's total
variance in the clustering space is ``attitudes.blocks.<block>`` squared: a factor score or a
behavioural feature gets ``weight / sqrt(columns in the block)``; inside the attributes block
each attribute's share is ``attitudes.attributes.weights`` (default 1) normalised to unit sum
of squares, and a categorical attribute's dummies share one divisor (the square root of their
summed variances), so an attribute with many levels weighs what a yes/no attribute weighs.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from pyspark.ml.feature import SQLTransformer
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from segmentation.config import AttitudesConfig
from segmentation.features.factors import FactorName, Solution
from segmentation.features.scaling import Scaling
from segmentation.inputs import survey

OTHER = "other"
MISSING = "(missing)"
_ITEM = "att__item__"


def _double(value: float) -> str:
    return f"CAST('{float(value)!r}' AS DOUBLE)"


def factor_column(name: FactorName) -> str:
    """The clustering column of a factor's score (``factor_<label>``)."""
    return f"factor_{name.label}"


def dummy_column(attribute: str, level: str) -> str:
    """``<attribute>:<level>``, the level reduced to the characters MLflow accepts in names
    (the column names become metric names: feature importances)."""
    return f"{attribute}:{re.sub(r'[^0-9A-Za-z_.-]+', '_', level).strip('_') or 'blank'}"


def category_levels(df: DataFrame, attribute: str, max_levels: int) -> list[str]:
    """The ``max_levels`` most frequent levels of a categorical attribute (ties by name),
    ``(missing)`` counted as a level; the rest become ``other``."""
    value = F.coalesce(F.col(attribute), F.lit(MISSING)).alias("level")
    rows = df.groupBy(value).count().collect()
    ranked = sorted(rows, key=lambda r: (-int(r["count"]), str(r["level"])))
    levels = [str(r["level"]) for r in ranked[:max_levels]]
    if len(ranked) > max_levels:
        levels.append(OTHER)
    return levels


@dataclass(frozen=True)
class Space:
    """The SQL stages and the clustering columns, by block."""

    clean_statement: str
    factor_statement: str
    factors: tuple[str, ...]
    attributes: tuple[str, ...]
    dummies: Mapping[str, tuple[str, ...]]
    behaviour: tuple[str, ...]

    @property
    def columns(self) -> tuple[str, ...]:
        """Every clustering column, in order: factors, attributes, behaviour."""
        return (*self.factors, *self.attributes, *self.behaviour)

    def stages(self) -> list[SQLTransformer]:
        return [
            SQLTransformer(statement=self.clean_statement),
            SQLTransformer(statement=self.factor_statement),
        ]

    def transform(self, df: DataFrame) -> DataFrame:
        """``df`` plus the space's columns (and the imputed items)."""
        for stage in self.stages():
            df = stage.transform(df)
        return df


def item_column(item: str) -> str:
    """The imputed item column the ``clean`` stage adds."""
    return f"{_ITEM}{item}"


def _dummies(name: str, value: str, levels: Sequence[str], parts: list[str]) -> list[str]:
    """One 0/1 column per level of a categorical attribute (``other`` for every level not
    kept), appended to ``parts`` as SQL; returns their names."""
    level = f"COALESCE({value}, '{MISSING}')"
    kept = [lv for lv in levels if lv != OTHER]
    names = []
    for lv in levels:
        if lv == OTHER:
            quoted = ", ".join(survey.sql_text(k) for k in kept)
            cond = f"{level} NOT IN ({quoted})"
        else:
            cond = f"{level} = {survey.sql_text(lv)}"
        column = dummy_column(name, lv)
        parts.append(f"CASE WHEN {cond} THEN 1D ELSE 0D END AS {survey.quote(column)}")
        names.append(column)
    return names


def build_space(
    ac: AttitudesConfig,
    checked: survey.Survey,
    *,
    solution: Solution,
    means: np.ndarray,
    stds: np.ndarray,
    factor_names: Sequence[FactorName],
    levels: Mapping[str, Sequence[str]],
    behaviour: Sequence[str] = (),
) -> Space:
    """The SQL of the space, from the training's imputation values, levels and solution."""
    invalid = ac.items.invalid_answers
    parts = []
    for col in checked.items:
        value = survey.clean_sql(col, survey.quote(col.name), invalid=invalid)
        parts.append(
            f"COALESCE({value}, {_double(checked.impute[col.name])}) AS `{item_column(col.name)}`"
        )
    clustered = set(ac.attributes.names) if ac.blocks.attributes > 0 else set()
    attributes: list[str] = []
    dummies: dict[str, tuple[str, ...]] = {}
    for col in checked.attributes:
        if col.name not in clustered or ac.attributes.weight_of(col.name) == 0:
            continue
        src = survey.quote(col.name)
        value = survey.clean_sql(col, src, invalid="missing")
        if col.kind != "categorical":
            parts.append(f"COALESCE({value}, {_double(checked.impute[col.name])}) AS {src}")
            attributes.append(col.name)
            continue
        names = _dummies(col.name, value, levels[col.name], parts)
        dummies[col.name] = tuple(names)
        attributes += names
    # Numeric and boolean attributes are replaced in place (imputed); others are added.
    replaced = {a for a in attributes if a in {c.name for c in checked.attributes}}
    keep = "*" if not replaced else f"* EXCEPT ({', '.join(survey.quote(a) for a in replaced)})"
    clean = f"SELECT {keep}, {', '.join(parts)} FROM __THIS__"
    scores = []
    for k, factor in enumerate(factor_names):
        terms = " + ".join(
            f"{_double(solution.weights[i, k] / stds[i])} * "
            f"(`{item_column(c.name)}` - {_double(means[i])})"
            for i, c in enumerate(checked.items)
        )
        scores.append(f"({terms}) AS `{factor_column(factor)}`")
    return Space(
        clean_statement=clean,
        factor_statement=f"SELECT *, {', '.join(scores)} FROM __THIS__",
        factors=tuple(factor_column(n) for n in factor_names),
        attributes=tuple(attributes),
        dummies=dummies,
        behaviour=tuple(behaviour),
    )


def weighted_scaling(
    ac: AttitudesConfig,
    space: Space,
    fitted: Scaling,
    variances: Mapping[str, float],
) -> Scaling:
    """``fitted`` (each column standardised) with the block weights of the module docstring.

    Args:
        ac: the ``attitudes`` section (block and attribute weights).
        space: the clustering columns by block.
        fitted: ``scaling_mod.fit_scaling`` on ``space.columns``.
        variances: the population variance of every dummy column.
    """
    blocks = ac.blocks
    weight: dict[str, float] = {}
    divisor: dict[str, float] = {}
    for col in space.factors:
        weight[col] = blocks.factors / math.sqrt(len(space.factors))
    for col in space.behaviour:
        weight[col] = blocks.behaviour / math.sqrt(len(space.behaviour))
    owners = {d: a for a, ds in space.dummies.items() for d in ds}
    attrs = [a for a in ac.attributes.names if a in space.attributes or a in space.dummies]
    norm = math.sqrt(sum(ac.attributes.weight_of(a) ** 2 for a in attrs)) or 1.0
    for col in space.attributes:
        owner = owners.get(col, col)
        weight[col] = blocks.attributes * ac.attributes.weight_of(owner) / norm
        if owner in space.dummies:
            total = sum(variances[d] for d in space.dummies[owner])
            divisor[col] = math.sqrt(total) if total > 0 else 1.0
    stds = tuple(
        divisor.get(col, std) / weight[col]
        for col, std in zip(fitted.features, fitted.stds, strict=True)
    )
    return dataclasses.replace(fitted, stds=stds)
