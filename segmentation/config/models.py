"""The configuration sections: one frozen pydantic model per YAML section."""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import dataclass
from typing import Annotated, Literal, Self

from pydantic import (
    BeforeValidator,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)

__all__ = [
    "DEFAULT_B2B_TIERS",
    "DEFAULT_RFM_SEGMENTS",
    "AppConfig",
    "AssignConfig",
    "AudienceConfig",
    "AudiencesConfig",
    "B2bConfig",
    "B2bTier",
    "ClusteringConfig",
    "ConsentSourceConfig",
    "CustomersSourceConfig",
    "DriftConfig",
    "DuplicateRule",
    "EdgesSourceConfig",
    "EventColumns",
    "EventSourceConfig",
    "EventTypes",
    "ExplainConfig",
    "ExportConfig",
    "FeatureConfig",
    "GeneratorConfig",
    "Identifier",
    "IdentityConfig",
    "InputConfig",
    "MeasurementConfig",
    "NamingConfig",
    "Origin",
    "OutcomeConfig",
    "QualityConfig",
    "RfmConfig",
    "RfmSegment",
    "SparkConfig",
    "StorageConfig",
    "SuppressionSourceConfig",
    "TrackingConfig",
    "TrainingConfig",
    "ValidationConfig",
    "ValueConfig",
    "normalise_level",
]

from segmentation.config.attitudes import AttitudesConfig
from segmentation.config.audiences import (
    AudienceConfig,
    AudiencesConfig,
    ConsentSourceConfig,
    ExportConfig,
    MeasurementConfig,
    SuppressionSourceConfig,
)
from segmentation.config.clustering import ClusteringConfig
from segmentation.config.generator import GeneratorConfig
from segmentation.config.identity import (
    EdgesSourceConfig,
    Identifier,
    IdentityConfig,
    resolved_identity,
)
from segmentation.config.inputs import (
    CustomersSourceConfig,
    EventColumns,
    EventSourceConfig,
    EventTypes,
    InputConfig,
)
from segmentation.config.platform import SparkConfig, StorageConfig, TrackingConfig
from segmentation.config.rulesets import (
    DEFAULT_B2B_TIERS,
    DEFAULT_RFM_SEGMENTS,
    B2bConfig,
    B2bTier,
    RfmConfig,
    RfmSegment,
)
from segmentation.config.types import (
    Bool,
    Date,
    Float,
    FrozenMap,
    Int,
    Str,
    Transform,
    _FrozenDict,
    _require,
    _Section,
    strip_blank,
)
from segmentation.config.value import ValueConfig


def normalise_level(value: str) -> str:
    """A level as the reader normalises the data's values: blanks trimmed (every Unicode space,
    control and format character: ``types.strip_blank``), lower case, so configured levels
    match the data's."""
    return strip_blank(value).lower()


class FeatureConfig(_Section):
    as_of: Date = dt.date(2025, 12, 31)
    windows_days: tuple[Int, ...] = (30, 90, 365)
    trend_window_days: Int = 90
    categories: tuple[Str, ...] | None = None
    channels: tuple[Str, ...] | None = None
    devices: tuple[Str, ...] | None = None
    max_levels: Int = 12
    mode: Literal["auto", "incremental", "full"] = "auto"

    @field_validator("categories", "channels", "devices", mode="after")
    @classmethod
    def _normalise(
        cls, levels: tuple[str, ...] | None, info: ValidationInfo
    ) -> tuple[str, ...] | None:
        """Levels as the reader normalises the data (``[Web, App]`` matches ``web``, ``app``)."""
        if levels is None:
            return None
        normalised = tuple(normalise_level(v) for v in levels)
        key = f"features.{info.field_name}"
        repeated = sorted({v for v in normalised if normalised.count(v) > 1})
        _require(
            not repeated,
            f"{key} {list(levels)} repeats {repeated} once trimmed and lower-cased (as the "
            "reader compares them); list each level once",
        )
        _require(all(normalised), f"{key} must not list empty text")
        return normalised

    @model_validator(mode="after")
    def _check(self) -> Self:
        w = self.windows_days
        _require(len(w) >= 1, "features.windows_days must list at least one window")
        _require(all(d >= 1 for d in w), "features.windows_days must all be >= 1 day")
        _require(self.trend_window_days >= 1, "features.trend_window_days must be >= 1 day")
        _require(self.max_levels >= 1, "features.max_levels must be >= 1")
        return self


DuplicateRule = Literal["auto", "event_id", "exact", "off"]


class QualityConfig(_Section):
    earliest_event_date: Date = dt.date(1990, 1, 1)
    max_days_after_as_of: Int = 366
    max_reject_share: Float = 0.05
    duplicates: DuplicateRule = "auto"

    @model_validator(mode="after")
    def _check(self) -> Self:
        _require(
            0 <= self.max_reject_share <= 1,
            "quality.max_reject_share must be in [0, 1] (a share of input rows)",
        )
        _require(self.max_days_after_as_of >= 0, "quality.max_days_after_as_of must be >= 0")
        return self


class TrainingConfig(ClusteringConfig):
    features: tuple[Str, ...] = ()
    default_transform: Transform = "log1p"
    transforms: FrozenMap[Transform] = Field(default_factory=_FrozenDict)

    def transform_for(self, feature: str) -> Transform:
        """The skew transform applied to ``feature`` before scaling."""
        return self.transforms.get(feature, self.default_transform)

    @model_validator(mode="after")
    def _check(self) -> Self:
        _require(len(self.features) >= 1, "training.features must list at least one feature column")
        _require(len(set(self.features)) == len(self.features), "training.features has duplicates")
        return self


class AssignConfig(_Section):
    reuse_features: Bool = False


class DriftConfig(_Section):
    baseline_as_of: Date | None = None
    psi_threshold: Float = 0.25
    psi_bins: Int = 10

    @model_validator(mode="after")
    def _check(self) -> Self:
        _require(self.psi_threshold > 0, "drift.psi_threshold must be > 0")
        _require(2 <= self.psi_bins <= 100, "drift.psi_bins must be in [2, 100]")
        return self


def _off_is_none(value: object) -> object:
    """YAML reads a bare ``off`` as false: it means no outcome check."""
    return "none" if value is False or value == "off" else value


class OutcomeConfig(_Section):
    mode: Annotated[Literal["backtest", "forward", "none"], BeforeValidator(_off_is_none)] = (
        "backtest"
    )
    horizon_days: Int = 90
    min_history_days: Int = 180
    max_customers: Int | None = 200_000

    @model_validator(mode="after")
    def _check(self) -> Self:
        _require(self.horizon_days >= 1, "validation.outcome.horizon_days must be >= 1")
        _require(self.min_history_days >= 0, "validation.outcome.min_history_days must be >= 0")
        _require(
            self.max_customers is None or self.max_customers >= 1,
            "validation.outcome.max_customers must be >= 1 (or null: every customer)",
        )
        return self


class ValidationConfig(_Section):
    enabled: Bool = True
    bootstrap_samples: Int = 20
    jaccard_cuts: tuple[Float, Float, Float, Float] = (0.5, 0.6, 0.75, 0.85)
    replication_min_agreement: Float = 0.8
    silhouette_sample_rows: Int = 5000
    outcome: OutcomeConfig = Field(default_factory=OutcomeConfig)

    @model_validator(mode="after")
    def _check(self) -> Self:
        _require(self.bootstrap_samples >= 2, "validation.bootstrap_samples must be >= 2")
        cuts = self.jaccard_cuts
        _require(
            all(0 <= a <= b <= 1 for a, b in itertools.pairwise(cuts)),
            "validation.jaccard_cuts must be 4 increasing values in [0, 1] "
            "(dissolved, not to be trusted, stable, highly stable)",
        )
        _require(
            0 <= self.replication_min_agreement <= 1,
            "validation.replication_min_agreement must be in [0, 1]",
        )
        _require(
            self.silhouette_sample_rows >= 10, "validation.silhouette_sample_rows must be >= 10"
        )
        return self


class NamingConfig(_Section):
    lapsed_after_days: Int = 365
    new_within_days: Int = 90
    one_time_max_orders: Int = 1
    high_value_percentile: Float = 0.8
    recent_within_days: Int = 30

    @model_validator(mode="after")
    def _check(self) -> Self:
        _require(
            0 < self.high_value_percentile < 1, "naming.high_value_percentile must be in (0, 1)"
        )
        _require(self.lapsed_after_days >= 1, "naming.lapsed_after_days must be >= 1")
        return self


class ExplainConfig(_Section):
    """Profiles' composition, rule explanations, pictures and the HTML report of a training."""

    composition_attributes: tuple[Str, ...] = (
        "country", "age", "gender", "os", "is_business", "industry", "employee_count",
    )  # fmt: skip
    sensitive_attributes: tuple[Str, ...] = ("age", "gender")
    bins: FrozenMap[tuple[Float, ...]] = Field(default_factory=_FrozenDict)
    max_levels: Int = 12
    rules_max_depth: Int = 5
    rules_per_segment: Int = 3
    min_rule_fidelity: Float = 0.85
    plot_sample_rows: Int = 5000
    report: Bool = True

    @model_validator(mode="after")
    def _check(self) -> Self:
        _require(1 <= self.rules_max_depth <= 10, "explain.rules_max_depth must be in [1, 10]")
        _require(self.rules_per_segment >= 1, "explain.rules_per_segment must be >= 1")
        _require(0 <= self.min_rule_fidelity <= 1, "explain.min_rule_fidelity must be in [0, 1]")
        _require(self.plot_sample_rows >= 10, "explain.plot_sample_rows must be >= 10")
        _require(self.max_levels >= 1, "explain.max_levels must be >= 1")
        for name, edges in self.bins.items():
            _require(
                len(edges) >= 1 and list(edges) == sorted(set(edges)),
                f"explain.bins.{name} must be increasing bin edges",
            )
        return self


@dataclass(frozen=True)
class Origin:
    """Where a config was loaded from, so printed commands can reproduce it."""

    config: str
    """The overlay file (``--config``)."""
    overrides: tuple[str, ...] = ()
    """The ``key.path=value`` overrides (``--set``)."""


class AppConfig(_Section):
    _origin: Origin | None = PrivateAttr(default=None)
    spark: SparkConfig = Field(default_factory=SparkConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    generator: GeneratorConfig = Field(default_factory=GeneratorConfig)
    input: InputConfig = Field(default_factory=InputConfig)
    features: FeatureConfig = Field(default_factory=FeatureConfig)
    quality: QualityConfig = Field(default_factory=QualityConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    assign: AssignConfig = Field(default_factory=AssignConfig)
    drift: DriftConfig = Field(default_factory=DriftConfig)
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    naming: NamingConfig = Field(default_factory=NamingConfig)
    explain: ExplainConfig = Field(default_factory=ExplainConfig)
    rfm: RfmConfig = Field(default_factory=RfmConfig)
    b2b: B2bConfig = Field(default_factory=B2bConfig)
    attitudes: AttitudesConfig = Field(default_factory=AttitudesConfig)
    value: ValueConfig = Field(default_factory=ValueConfig)
    identity: IdentityConfig = Field(default_factory=IdentityConfig)
    audiences: AudiencesConfig = Field(default_factory=AudiencesConfig)

    @property
    def origin(self) -> Origin | None:
        """The overlay file and overrides this config was loaded from (None: built in code)."""
        return self._origin

    def __eq__(self, other: object) -> bool:
        """Equal settings are equal configs, wherever they were loaded from."""
        if not isinstance(other, AppConfig):
            return NotImplemented
        return self.__dict__ == other.__dict__

    __hash__ = _Section.__hash__

    def with_origin(self, origin: Origin) -> AppConfig:
        """A copy that remembers where it was loaded from (``load_config`` sets it)."""
        copy = self.model_copy()
        copy._origin = origin
        return copy

    def events_path(self) -> str:
        """Where the events are read from: the configured path or the generator's table."""
        return self.input.events.path or self.storage.table_path("events")

    def customers_path(self) -> str | None:
        """The customers dimension: the configured path, else the generator's table when the
        events are the generator's too (None: no customers dimension)."""
        if self.input.customers.path:
            return self.input.customers.path
        return self.storage.table_path("customers") if self.input.events.path is None else None

    def stitching(self) -> IdentityConfig | None:
        """The identity stitching in force (``identity.enabled``; null: only the bundled sample
        generated with ``generator.identities``), or None: customer ids are used as they are."""
        sample = self.input.events.path is None and self.generator.identities
        edges = self.storage.table_path("identity_edges")
        return resolved_identity(self.identity, sample=sample, sample_edges=edges)

    def consent_path(self) -> str | None:
        """The consent input: ``audiences.consent.path``, else the generator's consent table
        when the events are the generator's (None: no consent input)."""
        return self._sample_or(self.audiences.consent.path, "consent")

    def suppression_path(self) -> str | None:
        """The suppression list: ``audiences.suppression.path``, else the generator's (None:
        no suppression list)."""
        return self._sample_or(self.audiences.suppression.path, "suppression")

    def _sample_or(self, path: str | None, table: str) -> str | None:
        if path:
            return path
        return self.storage.table_path(table) if self.input.events.path is None else None

    def segmentations(self) -> tuple[str, ...]:
        """The model names that write segment_membership (what an audience may name)."""
        return (self.tracking.registered_model, self.rfm.model_name, self.b2b.model_name,
                self.attitudes.model_name)  # fmt: skip

    def audience_model(self, audience: AudienceConfig) -> str:
        """The segmentation an audience selects from (default: tracking.registered_model)."""
        return audience.model_name or self.tracking.registered_model

    def survey_path(self) -> str:
        """The survey table: ``attitudes.survey.path``, else the generator's survey_responses."""
        return self.attitudes.survey.path or self.storage.table_path("survey_responses")

    @model_validator(mode="after")
    def _check(self) -> Self:
        """Rules across sections (each section checks its own fields first)."""
        as_of = self.features.as_of
        _require(
            self.drift.baseline_as_of is None or self.drift.baseline_as_of < as_of,
            "drift.baseline_as_of must be before features.as_of",
        )
        _require(
            self.quality.earliest_event_date < as_of,
            "quality.earliest_event_date must be before features.as_of",
        )
        sensitive = {a.lower() for a in self.explain.sensitive_attributes}
        used = sorted(f for f in self.training.features if f.lower() in sensitive)
        _require(
            not used,
            f"training.features {used} are listed in explain.sensitive_attributes: sensitive "
            "attributes are never clustering features (remove them from training.features)",
        )
        names = {self.tracking.registered_model, self.rfm.model_name, self.b2b.model_name,
                 self.attitudes.model_name, self.value.model_name}  # fmt: skip
        _require(
            len(names) == 5,
            "tracking.registered_model, rfm.model_name, b2b.model_name, attitudes.model_name "
            "and value.model_name must differ: they name segmentations in the shared "
            "segment_membership table and models in the MLflow registry",
        )
        clustered = self.attitudes.attributes.names if self.attitudes.blocks.attributes else ()
        used = sorted(a for a in clustered if a.lower() in sensitive)
        _require(
            not used,
            f"attitudes.attributes {used} are listed in explain.sensitive_attributes: sensitive "
            "attributes are never clustering inputs (remove them, or set attitudes.blocks."
            "attributes to 0 to profile without clustering on them)",
        )
        for audience in self.audiences.definitions:
            model = self.audience_model(audience)
            _require(
                model in self.segmentations(),
                f"audiences.definitions[{audience.name}].model_name {model!r} is not a "
                f"segmentation; use one of {list(self.segmentations())}",
            )
        return self
