"""The ``attitudes`` section: the survey-based (attitudinal) segmentation's configuration."""

from __future__ import annotations

from typing import ClassVar, Literal, Self

from pydantic import Field, model_validator

from segmentation.config.clustering import ClusteringConfig
from segmentation.config.types import (
    EventFormat,
    Float,
    FrozenMap,
    Int,
    Str,
    Transform,
    _FrozenDict,
    _require,
    _Section,
)

__all__ = [
    "AttitudeClusteringConfig",
    "AttitudesConfig",
    "AttributesConfig",
    "BlocksConfig",
    "FactorsConfig",
    "ItemsConfig",
    "SurveySourceConfig",
]

# The bundled generator's twelve Likert items (segmentation/survey_generator.py).
DEFAULT_ITEMS = (
    "price_compare", "price_wait_for_sales", "price_cheapest_option", "price_use_coupons",
    "brand_stay_loyal", "brand_pay_for_quality", "brand_prefer_premium", "brand_trust_known",
    "digital_prefer_app", "digital_fast_delivery", "digital_avoid_stores", "digital_subscribe",
)  # fmt: skip

Rotation = Literal["varimax", "quartimax", "promax", "oblimin", "none"]
OBLIQUE = ("promax", "oblimin")


class SurveySourceConfig(_Section):
    """The survey table: one row per respondent (survey answers and/or CRM attributes)."""

    path: Str | None = None
    format: EventFormat = "delta"
    options: FrozenMap[Str] = Field(default_factory=_FrozenDict)
    customer_id: Str = "customer_id"


class ItemsConfig(_Section):
    """The factor-analysed items: ordinal (Likert) answers on a scale, and numeric items."""

    ordinal: tuple[Str, ...] = ()
    scale: tuple[Int, Int] = (1, 5)
    scales: FrozenMap[tuple[Int, Int]] = Field(default_factory=_FrozenDict)
    numeric: tuple[Str, ...] = ()
    invalid_answers: Literal["error", "missing"] = "error"
    missing_answers: tuple[Str, ...] = (
        "don't know", "dont know", "do not know", "not sure", "n/a", "na", "not applicable",
        "prefer not to say", "refused", "no answer", "-",
    )  # fmt: skip
    missing_answers_by_item: FrozenMap[tuple[Str, ...]] = Field(default_factory=_FrozenDict)

    @property
    def names(self) -> tuple[str, ...]:
        """Every factor-analysed item, ordinal first, in configured order."""
        return (*self.ordinal, *self.numeric)

    def scale_of(self, item: str) -> tuple[int, int]:
        """The answer scale [low, high] of an ordinal item."""
        low, high = self.scales.get(item, self.scale)
        return int(low), int(high)

    @model_validator(mode="after")
    def _check(self) -> Self:
        names = self.names
        _require(
            len(names) >= 3,
            "attitudes.items.ordinal and attitudes.items.numeric must list at least 3 items "
            "together (factor analysis needs several correlated items)",
        )
        repeated = sorted({n for n in names if names.count(n) > 1})
        _require(not repeated, f"attitudes.items lists {repeated} more than once")
        for item, (low, high) in {"": self.scale, **dict(self.scales)}.items():
            key = f"attitudes.items.scales.{item}" if item else "attitudes.items.scale"
            _require(low < high, f"{key} must be [low, high] with low < high, got {[low, high]}")
        unknown = sorted(set(self.scales) - set(self.ordinal))
        _require(
            not unknown, f"attitudes.items.scales names {unknown}, not in attitudes.items.ordinal"
        )
        unknown = sorted(set(self.missing_answers_by_item) - set(names))
        _require(
            not unknown,
            f"attitudes.items.missing_answers_by_item names {unknown}, not an item of "
            "attitudes.items",
        )
        return self


class AttributesConfig(_Section):
    """Attributes clustered beside the factor scores (demographic, firmographic, CRM)."""

    numeric: tuple[Str, ...] = ()
    transforms: FrozenMap[Transform] = Field(default_factory=_FrozenDict)
    categorical: tuple[Str, ...] = ()
    boolean: tuple[Str, ...] = ()
    max_levels: Int = 8
    weights: FrozenMap[Float] = Field(default_factory=_FrozenDict)

    @property
    def names(self) -> tuple[str, ...]:
        return (*self.numeric, *self.categorical, *self.boolean)

    def weight_of(self, attribute: str) -> float:
        """The attribute's weight inside the attributes block (default 1)."""
        return float(self.weights.get(attribute, 1.0))

    @model_validator(mode="after")
    def _check(self) -> Self:
        names = self.names
        repeated = sorted({n for n in names if names.count(n) > 1})
        _require(not repeated, f"attitudes.attributes lists {repeated} more than once")
        _require(self.max_levels >= 1, "attitudes.attributes.max_levels must be >= 1")
        unknown = sorted(set(self.transforms) - set(self.numeric))
        _require(
            not unknown,
            f"attitudes.attributes.transforms names {unknown}, not in attitudes.attributes.numeric",
        )
        for name, weight in self.weights.items():
            _require(
                name in names,
                f"attitudes.attributes.weights.{name} names no attribute of attitudes.attributes",
            )
            _require(weight >= 0, f"attitudes.attributes.weights.{name} must be >= 0")
        return self


class FactorsConfig(_Section):
    """Exploratory factor analysis of the items (``factor_analyzer`` on Spark's correlations)."""

    n_factors: Int | None = None
    method: Literal["minres", "ml"] = "minres"
    rotation: Rotation = "varimax"
    parallel_iterations: Int = 100
    parallel_percentile: Float = 95.0
    name_items: Int = 2
    seed: Int = 42
    max_item_correlation: Float = 0.95

    @property
    def oblique(self) -> bool:
        return self.rotation in OBLIQUE

    @model_validator(mode="after")
    def _check(self) -> Self:
        _require(
            self.n_factors is None or self.n_factors >= 1,
            "attitudes.factors.n_factors must be >= 1 (or null: parallel analysis)",
        )
        _require(
            0.5 < self.max_item_correlation <= 1,
            "attitudes.factors.max_item_correlation must be in (0.5, 1]",
        )
        _require(
            self.parallel_iterations >= 10, "attitudes.factors.parallel_iterations must be >= 10"
        )
        _require(
            50 <= self.parallel_percentile < 100,
            "attitudes.factors.parallel_percentile must be in [50, 100)",
        )
        _require(self.name_items >= 1, "attitudes.factors.name_items must be >= 1")
        return self


class BlocksConfig(_Section):
    """The weight of each source in the clustering space (0: the source is not clustered)."""

    factors: Float = 1.0
    attributes: Float = 0.3
    behaviour: Float = 0.0
    behaviour_features: tuple[Str, ...] = ()

    @model_validator(mode="after")
    def _check(self) -> Self:
        for name in ("factors", "attributes", "behaviour"):
            _require(getattr(self, name) >= 0, f"attitudes.blocks.{name} must be >= 0")
        _require(self.factors > 0, "attitudes.blocks.factors must be > 0: factor scores are the "
                 "basis of this segmentation")  # fmt: skip
        return self


class AttitudeClusteringConfig(ClusteringConfig):
    """k selection and the final fit of the attitudinal segmentation (as ``training.*``)."""

    KEY: ClassVar[str] = "attitudes.clustering"

    k_max: Int = 8


class AttitudesConfig(_Section):
    enabled: bool = True
    """Whether `make run` (jobs/run_pipeline.py) trains it after the behavioural model."""
    model_name: Str = "attitudinal_segments"
    survey: SurveySourceConfig = Field(default_factory=SurveySourceConfig)
    items: ItemsConfig = Field(default_factory=lambda: ItemsConfig(ordinal=DEFAULT_ITEMS))
    attributes: AttributesConfig = Field(default_factory=AttributesConfig)
    max_missing_share: Float = 0.5
    factors: FactorsConfig = Field(default_factory=FactorsConfig)
    blocks: BlocksConfig = Field(default_factory=BlocksConfig)
    clustering: AttitudeClusteringConfig = Field(default_factory=AttitudeClusteringConfig)

    @model_validator(mode="after")
    def _check(self) -> Self:
        _require(
            0 <= self.max_missing_share < 1,
            "attitudes.max_missing_share must be in [0, 1) (a share of the items)",
        )
        shared = sorted(set(self.items.names) & set(self.attributes.names))
        _require(
            not shared,
            f"{shared} are mapped both as attitudes.items and attitudes.attributes: each column "
            "has one role",
        )
        ids = {self.survey.customer_id.lower()}
        mapped = sorted(c for c in (*self.items.names, *self.attributes.names) if c.lower() in ids)
        _require(
            not mapped,
            f"attitudes.survey.customer_id ({self.survey.customer_id}) cannot also be an item or "
            "attribute",
        )
        return self
