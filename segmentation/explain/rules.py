"""Why a customer is in a segment: decision-tree rules on the clustering features.

``explain_with_rules`` trains a ``pyspark.ml`` decision tree to predict each customer's segment
from the clustering features in their original units, and reads its leaves back as short
threshold rules per segment. Its fidelity is the share of customers whose segment the tree
(all of its rules) reproduces.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pyspark.ml.classification import DecisionTreeClassifier
from pyspark.ml.feature import VectorAssembler
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from segmentation.storage import tables
from segmentation.storage.tables import SEGMENT_ID

CUSTOMER_ID = tables.CUSTOMER_ID
MISSING = "(missing)"
OTHER = "other"
_LABEL, _VECTOR, _PREDICTION = "_rule_label", "_rule_features", "_rule_prediction"


@dataclass(frozen=True)
class Condition:
    feature: str
    op: str  # "<=" or ">"
    threshold: float

    def text(self) -> str:
        return f"{self.feature} {self.op} {format_threshold(self.threshold)}"


@dataclass(frozen=True)
class Rule:
    """One leaf of the tree: customers matching every condition are predicted ``segment_id``."""

    segment_id: int
    conditions: tuple[Condition, ...]
    customers: int
    precision: float
    recall: float

    def text(self) -> str:
        return " and ".join(c.text() for c in self.conditions) or "all customers"

    def as_dict(self) -> dict[str, Any]:
        return {
            "segment_id": self.segment_id,
            "rule": self.text(),
            "conditions": [
                {"feature": c.feature, "op": c.op, "threshold": c.threshold}
                for c in self.conditions
            ],
            "customers": self.customers,
            "precision": self.precision,
            "recall": self.recall,
        }


@dataclass
class RuleExplanation:
    features: tuple[str, ...]
    max_depth: int
    fidelity: float
    segment_fidelity: dict[int, float]
    importances: dict[str, float]
    rules: dict[int, list[Rule]]
    leaves: int
    tree: str = field(repr=False, default="")

    def top(self, segment_id: int, n: int, *, min_recall: float = 0.02) -> list[Rule]:
        """The segment's ``n`` rules covering most of it (the first always; the others only
        when they cover at least ``min_recall`` of the segment)."""
        rules = self.rules.get(segment_id, [])
        return [r for i, r in enumerate(rules) if i == 0 or r.recall >= min_recall][:n]

    def as_dict(self, rules_per_segment: int) -> dict[str, Any]:
        return {
            "features": list(self.features),
            "max_depth": self.max_depth,
            "fidelity": self.fidelity,
            "segment_fidelity": {str(k): v for k, v in sorted(self.segment_fidelity.items())},
            "feature_importances": self.importances,
            "leaves": self.leaves,
            "rules": {
                str(sid): [r.as_dict() for r in self.top(sid, rules_per_segment)]
                for sid in sorted(self.rules)
            },
        }


def format_threshold(value: float) -> str:
    """A threshold as people read it: at most 3 significant digits below 1000, else whole."""
    if not math.isfinite(value):
        return str(value)
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def explain_with_rules(
    assigned: DataFrame,
    features: Sequence[str],
    segment_ids: Sequence[int],
    *,
    max_depth: int,
    seed: int,
) -> RuleExplanation:
    """Fit a decision tree on ``features`` (original units) that predicts ``segment_id``.

    Args:
        assigned: customers with ``features`` and ``segment_id`` (cache it: read twice).
        features: the clustering features (never transformed: rules must read in raw units).
        segment_ids: every segment id of the model.
        max_depth: the tree's depth; a rule has at most this many conditions.
        seed: for the tree's (deterministic) fit.
    """
    ids = sorted(segment_ids)
    index_of = {sid: i for i, sid in enumerate(ids)}
    label_map = F.create_map(*[x for sid, i in index_of.items() for x in (F.lit(sid), F.lit(i))])
    data = VectorAssembler(inputCols=list(features), outputCol=_VECTOR, handleInvalid="keep")
    prepared = data.transform(
        assigned.select(
            *[F.col(f).cast("double").alias(f) for f in features],
            F.element_at(label_map, F.col(SEGMENT_ID)).cast("double").alias(_LABEL),
        )
    )
    tree = DecisionTreeClassifier(
        labelCol=_LABEL, featuresCol=_VECTOR, predictionCol=_PREDICTION, maxDepth=max_depth,
        maxBins=128, seed=seed,
    ).fit(prepared)  # fmt: skip
    per_class = (
        tree.transform(prepared)
        .groupBy(_LABEL)
        .agg(
            F.count(F.lit(1)).alias("n"),
            F.sum((F.col(_PREDICTION) == F.col(_LABEL)).cast("long")).alias("hit"),
        )
        .collect()
    )
    total = sum(int(r["n"]) for r in per_class)
    hits = sum(int(r["hit"]) for r in per_class)
    sizes = {ids[int(r[_LABEL])]: int(r["n"]) for r in per_class}
    segment_fidelity = {ids[int(r[_LABEL])]: int(r["hit"]) / int(r["n"]) for r in per_class}
    importances = {f: float(v) for f, v in zip(features, tree.featureImportances.toArray(),
                                               strict=True)}  # fmt: skip
    leaves = _leaves(tree._java_obj.rootNode(), features, ())
    return RuleExplanation(
        features=tuple(features),
        max_depth=max_depth,
        fidelity=hits / total if total else 0.0,
        segment_fidelity=segment_fidelity,
        importances=importances,
        rules=_rules(leaves, ids, sizes),
        leaves=len(leaves),
        tree=tree.toDebugString,
    )


def _rules(
    leaves: Sequence[tuple[tuple[Condition, ...], float, float, Sequence[float]]],
    ids: Sequence[int],
    sizes: Mapping[int, int],
) -> dict[int, list[Rule]]:
    """One rule per leaf, by the segment it predicts, best recall first."""
    rules: dict[int, list[Rule]] = {sid: [] for sid in ids}
    for conditions, label, count, class_counts in leaves:
        sid = ids[int(label)]
        correct = class_counts[int(label)] if int(label) < len(class_counts) else 0.0
        rules[sid].append(
            Rule(
                segment_id=sid,
                conditions=_simplify(conditions),
                customers=round(count),
                precision=correct / count if count else 0.0,
                recall=correct / sizes[sid] if sizes.get(sid) else 0.0,
            )
        )
    for sid in rules:
        rules[sid].sort(key=lambda r: (-r.recall, -r.precision, r.text()))
    return rules


def _leaves(
    node: Any, features: Sequence[str], path: tuple[Condition, ...]
) -> list[tuple[tuple[Condition, ...], float, float, list[float]]]:
    """(conditions, predicted label, training count, class counts) of every leaf below node.

    Reads Spark's tree through its JVM nodes (``InternalNode`` / ``LeafNode``): the Python API
    exposes only the debug string.
    """
    stats = node.impurityStats()
    if node.getClass().getSimpleName() != "InternalNode":
        return [(path, float(node.prediction()), float(stats.count()), list(stats.stats()))]
    split = node.split()
    feature = features[int(split.featureIndex())]
    threshold = float(split.threshold())
    return _leaves(node.leftChild(), features, (*path, Condition(feature, "<=", threshold))) + (
        _leaves(node.rightChild(), features, (*path, Condition(feature, ">", threshold)))
    )


def _simplify(conditions: Sequence[Condition]) -> tuple[Condition, ...]:
    """One upper and one lower bound per feature (the tightest), in first-use order."""
    upper: dict[str, float] = {}
    lower: dict[str, float] = {}
    order: list[str] = []
    for c in conditions:
        if c.feature not in order:
            order.append(c.feature)
        if c.op == "<=":
            upper[c.feature] = min(upper.get(c.feature, math.inf), c.threshold)
        else:
            lower[c.feature] = max(lower.get(c.feature, -math.inf), c.threshold)
    out = []
    for f in order:
        if f in lower:
            out.append(Condition(f, ">", lower[f]))
        if f in upper:
            out.append(Condition(f, "<=", upper[f]))
    return tuple(out)
