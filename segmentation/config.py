"""Typed configuration: ``conf/base.yaml`` plus an overlay plus ``--set`` overrides.

Every job loads its configuration here, once, into frozen pydantic (v2) models; nothing
downstream reads YAML, dictionaries or ``sys.argv``, and other modules only read attributes.

The models use pydantic rather than hand-written coercion so that types, defaults, the YAML
``return`` alias and the cross-field rules are declared next to the fields they concern, and a
well-kept library does the validation and reports each problem with its exact location
(``('rfm', 'segments', 0, 'r', 1)``). That location is turned into the key's full dotted path
(``rfm.segments[0].r[1]``) in one place, :func:`_config_error`, so every unknown key, wrong type
or impossible setting becomes a :class:`~segmentation.errors.ConfigError` naming the key.

Scalars are strict where YAML is unambiguous: a flag must be a YAML boolean, a count an integer
(not a float or a boolean), a number an integer or a float (not a boolean), a date a date or
``YYYY-MM-DD``. A string setting takes any scalar (``run_key: 2024`` is ``"2024"``). Lists
become tuples and mappings are read-only; assigning to a field raises. Copy a config with
``cfg.model_copy(update={...})``, which does not re-check it (:func:`validate` does). A section
built in code (``B2bTier("Small")``, positional values in field order as before) is checked
too, and raises pydantic's ``ValidationError``.

Typical usage example:

    cfg = load_config("conf/local.yaml", overrides=["training.k_max=7"])
    cfg.training.k_max  # 7
"""

from __future__ import annotations

import datetime as dt
import os
import re
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, NoReturn, Self, TypeVar

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    model_validator,
)

from segmentation.errors import ConfigError

EventFormat = Literal["delta", "parquet", "csv", "json"]
Algorithm = Literal["kmeans", "bisecting_kmeans"]
Transform = Literal["log1p", "none"]

V = TypeVar("V")


class _FrozenDict(dict[str, V]):
    """A read-only dict (pickles and compares like a dict): config mappings are never mutated."""

    def _read_only(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("configuration mappings are read-only")

    __setitem__ = __delitem__ = __ior__ = _read_only
    clear = pop = popitem = setdefault = update = _read_only

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(frozenset(self.items()))

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (dict(self),))


def _lax_str(value: Any) -> Any:
    """A string setting takes any YAML scalar, as text (``2024`` -> ``"2024"``)."""
    return str(value) if isinstance(value, bool | int | float | dt.date) else value


def _iso_date(value: Any) -> Any:
    """``YYYY-MM-DD`` text (quoted in YAML) or a YAML date; anything else fails as a date."""
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value.strip())
        except ValueError:
            return value
    return value


def _str_keys(value: Any) -> Any:
    return {str(k): v for k, v in value.items()} if isinstance(value, Mapping) else value


Str = Annotated[str, BeforeValidator(_lax_str), Strict()]
Int = Annotated[int, Strict()]  # not a bool, not a float
Float = Annotated[float, Strict()]  # an int or a float, not a bool; always a float
Bool = Annotated[bool, Strict()]
Date = Annotated[dt.date, BeforeValidator(_iso_date), Strict()]
FrozenMap = Annotated[Mapping[str, V], BeforeValidator(_str_keys), AfterValidator(_FrozenDict)]


def _require(ok: bool, message: str) -> None:
    """A cross-field rule; the message names the key(s) in full and says how to fix them."""
    if not ok:
        raise ValueError(message)


class _Section(BaseModel):
    """Base of every config model: frozen, unknown keys rejected, an empty YAML section is {}."""

    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())

    def __init__(self, *args: Any, **data: Any) -> None:
        # Positional values in field order, as the former dataclasses took them (B2bTier("Small")).
        # Errors stay pydantic's ValidationError here: pydantic also calls this for nested
        # sections, and prefixes their error locations with the parent's.
        names = list(type(self).model_fields)
        if len(args) > len(names):
            raise TypeError(f"{type(self).__name__} takes at most {len(names)} positional values")
        for name, value in zip(names, args, strict=False):
            if name in data:
                raise TypeError(f"{type(self).__name__} got two values for {name!r}")
            data[name] = value
        super().__init__(**data)

    @model_validator(mode="before")
    @classmethod
    def _empty_is_defaults(cls, data: Any) -> Any:
        return {} if data is None else data


class SparkConfig(_Section):
    master: Str | None = "local[*]"
    app_name: Str = "customer-segmentation"
    shuffle_partitions: Int = 8
    ui_enabled: Bool = False
    conf: FrozenMap[Str] = Field(default_factory=_FrozenDict)
    # Local Delta jar files for machines without network (empty: resolved from Maven).
    delta_jars: tuple[Str, ...] = ()

    @model_validator(mode="after")
    def _check(self) -> Self:
        _require(self.shuffle_partitions >= 1, "spark.shuffle_partitions must be >= 1")
        return self


class StorageConfig(_Section):
    warehouse: Str = "warehouse"
    run_key: Str | None = None

    def table_path(self, name: str) -> str:
        """Location of the output table ``name`` under the warehouse root."""
        return join_path(self.warehouse, name)


class TrackingConfig(_Section):
    tracking_uri: Str = "sqlite:///mlflow.db"
    artifact_location: Str = "mlartifacts"
    experiment: Str = "customer-segmentation"
    registered_model: Str = "customer_segments"
    alias: Str = "champion"
    promote: Bool = False


class GeneratorConfig(_Section):
    customers: Int = 20000
    events: Int = 1_000_000
    seed: Int = 42
    start_date: Date = dt.date(2023, 1, 1)
    end_date: Date = dt.date(2025, 12, 31)
    partitions: Int | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        _require(self.customers >= 1, "generator.customers must be >= 1")
        _require(self.events >= self.customers, "generator.events must be >= generator.customers")
        _require(
            self.end_date > self.start_date,
            "generator.end_date must be after generator.start_date",
        )
        _require(
            self.partitions is None or self.partitions >= 1, "generator.partitions must be >= 1"
        )
        return self


class EventColumns(_Section):
    customer_id: Str = "customer_id"
    event_time: Str = "event_time"
    amount: Str = "amount"
    event_type: Str | None = "event_type"
    category: Str | None = "category"
    channel: Str | None = "channel"
    device: Str | None = "device"
    quantity: Str | None = "quantity"
    discount: Str | None = "discount"
    event_id: Str | None = "event_id"

    REQUIRED: ClassVar[tuple[str, ...]] = ("customer_id", "event_time", "amount")

    def mapped(self) -> dict[str, str]:
        """Canonical name -> the user's column name, for every column that is mapped."""
        return {
            name: getattr(self, name)
            for name in type(self).model_fields
            if getattr(self, name) is not None
        }

    @model_validator(mode="after")
    def _check(self) -> Self:
        for required in self.REQUIRED:
            _require(
                bool(getattr(self, required)),
                f"input.events.columns.{required} must name a column (it is required)",
            )
        return self


class EventTypes(_Section):
    model_config = ConfigDict(populate_by_name=True)

    order: tuple[Str, ...] = ("order", "purchase", "sale")
    # `return` is a keyword: the YAML key "return" maps here.
    return_: tuple[Str, ...] = Field(default=("return", "refund"), alias="return")
    visit: tuple[Str, ...] = ("visit", "view", "session")


class EventSourceConfig(_Section):
    path: Str | None = None
    format: EventFormat = "delta"
    options: FrozenMap[Str] = Field(default_factory=_FrozenDict)
    columns: EventColumns = Field(default_factory=EventColumns)
    timestamp_format: Str | None = None
    event_types: EventTypes = Field(default_factory=EventTypes)


class CustomersSourceConfig(_Section):
    """The customers dimension: one row per customer with descriptive attributes."""

    path: Str | None = None
    format: EventFormat = "delta"
    options: FrozenMap[Str] = Field(default_factory=_FrozenDict)
    customer_id: Str = "customer_id"


class InputConfig(_Section):
    events: EventSourceConfig = Field(default_factory=EventSourceConfig)
    customers: CustomersSourceConfig = Field(default_factory=CustomersSourceConfig)


class FeatureConfig(_Section):
    as_of: Date = dt.date(2025, 12, 31)
    windows_days: tuple[Int, ...] = (30, 90, 365)
    trend_window_days: Int = 90
    categories: tuple[Str, ...] | None = None
    channels: tuple[Str, ...] | None = None
    devices: tuple[Str, ...] | None = None
    max_levels: Int = 12

    @model_validator(mode="after")
    def _check(self) -> Self:
        w = self.windows_days
        _require(len(w) >= 1, "features.windows_days must list at least one window")
        _require(all(d >= 1 for d in w), "features.windows_days must all be >= 1 day")
        _require(self.trend_window_days >= 1, "features.trend_window_days must be >= 1 day")
        _require(self.max_levels >= 1, "features.max_levels must be >= 1")
        return self


class QualityConfig(_Section):
    earliest_event_date: Date = dt.date(1990, 1, 1)
    max_days_after_as_of: Int = 366
    max_reject_share: Float = 0.05

    @model_validator(mode="after")
    def _check(self) -> Self:
        _require(
            0 <= self.max_reject_share <= 1,
            "quality.max_reject_share must be in [0, 1] (a share of input rows)",
        )
        _require(self.max_days_after_as_of >= 0, "quality.max_days_after_as_of must be >= 0")
        return self


class TrainingConfig(_Section):
    algorithm: Algorithm = "kmeans"
    k_min: Int = 2
    k_max: Int = 10
    seed: Int = 42
    max_iter: Int = 40
    n_init: Int = 3
    selection_sample_rows: Int = 20000
    min_segment_share: Float = 0.02
    silhouette_tolerance: Float = 0.03
    features: tuple[Str, ...] = ()
    default_transform: Transform = "log1p"
    transforms: FrozenMap[Transform] = Field(default_factory=_FrozenDict)
    match_max_distance: Float = 1.0

    def transform_for(self, feature: str) -> Transform:
        """The skew transform applied to ``feature`` before scaling."""
        return self.transforms.get(feature, self.default_transform)

    @model_validator(mode="after")
    def _check(self) -> Self:
        _require(self.k_min >= 2, "training.k_min must be >= 2")
        _require(
            self.k_max >= self.k_min,
            f"training.k_max ({self.k_max}) must be >= k_min ({self.k_min})",
        )
        _require(self.max_iter >= 1, "training.max_iter must be >= 1")
        _require(self.n_init >= 1, "training.n_init must be >= 1")
        _require(self.selection_sample_rows >= 10, "training.selection_sample_rows must be >= 10")
        _require(0 <= self.min_segment_share < 1, "training.min_segment_share must be in [0, 1)")
        _require(self.silhouette_tolerance >= 0, "training.silhouette_tolerance must be >= 0")
        _require(len(self.features) >= 1, "training.features must list at least one feature column")
        _require(len(set(self.features)) == len(self.features), "training.features has duplicates")
        _require(self.match_max_distance >= 0, "training.match_max_distance must be >= 0")
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


class RfmSegment(_Section):
    """A named cell range of the RFM map: inclusive [low, high] score ranges."""

    name: Str
    r: tuple[Int, ...] = (1, 5)
    f: tuple[Int, ...] = (1, 5)
    m: tuple[Int, ...] = (1, 5)


def _rfm(name: str, r: tuple[int, int], f: tuple[int, int]) -> RfmSegment:
    return RfmSegment(name=name, r=r, f=f)


# The widely used R x F map (the "RFM segments" grid), with Lost split off Hibernating.
DEFAULT_RFM_SEGMENTS = (
    _rfm("Champions", (5, 5), (4, 5)),
    _rfm("Loyal", (3, 4), (4, 5)),
    _rfm("Potential loyalists", (4, 5), (2, 3)),
    _rfm("New", (5, 5), (1, 1)),
    _rfm("Promising", (4, 4), (1, 1)),
    _rfm("Need attention", (3, 3), (3, 3)),
    _rfm("About to sleep", (3, 3), (1, 2)),
    _rfm("Can't lose them", (1, 2), (5, 5)),
    _rfm("At risk", (1, 2), (3, 4)),
    _rfm("Lost", (1, 1), (1, 1)),
    _rfm("Hibernating", (1, 2), (1, 2)),
)


class RfmConfig(_Section):
    enabled: Bool = True
    model_name: Str = "rfm"
    version: Int = 1
    recency_feature: Str = "recency_days"
    frequency_feature: Str = "frequency"
    monetary_feature: Str = "monetary_total"
    quantile_accuracy: Int = 10000
    segments: tuple[RfmSegment, ...] = DEFAULT_RFM_SEGMENTS

    @model_validator(mode="after")
    def _check(self) -> Self:
        _require(self.quantile_accuracy >= 100, "rfm.quantile_accuracy must be >= 100")
        _require(len(self.segments) >= 1, "rfm.segments must list at least one segment")
        for i, seg in enumerate(self.segments):
            for score in ("r", "f", "m"):
                lo_hi = getattr(seg, score)
                _require(
                    len(lo_hi) == 2 and 1 <= lo_hi[0] <= lo_hi[1] <= 5,
                    f"rfm.segments[{i}].{score} ({seg.name}) must be [low, high] with "
                    f"1 <= low <= high <= 5, got {list(lo_hi)}",
                )
        uncovered = [
            (r, f, m)
            for r in range(1, 6)
            for f in range(1, 6)
            for m in range(1, 6)
            if not any(
                s.r[0] <= r <= s.r[1] and s.f[0] <= f <= s.f[1] and s.m[0] <= m <= s.m[1]
                for s in self.segments
            )
        ]
        cells = ", ".join(f"r={r} f={f} m={m}" for r, f, m in uncovered[:5])
        _require(
            not uncovered,
            f"rfm.segments leave {len(uncovered)} score cell(s) without a segment (e.g. "
            f"{cells}): every customer must get one; add a catch-all segment last",
        )
        return self


class B2bTier(_Section):
    """A tier rule: every criterion given must hold (null: no constraint)."""

    name: Str
    min_spend: Float | None = None
    min_employees: Int | None = None
    industries: tuple[Str, ...] | None = None


DEFAULT_B2B_TIERS = (
    B2bTier(name="Strategic", min_spend=20000.0),
    B2bTier(name="Strategic", min_spend=5000.0, min_employees=1000),
    B2bTier(name="Large", min_spend=5000.0),
    B2bTier(name="Large", min_employees=250),
    B2bTier(name="Medium", min_spend=1000.0),
    B2bTier(name="Medium", min_employees=50),
    B2bTier(name="Small"),
)


class B2bConfig(_Section):
    enabled: Bool = True
    model_name: Str = "b2b_tiers"
    version: Int = 1
    business_column: Str = "is_business"
    employees_column: Str | None = "employee_count"
    industry_column: Str | None = "industry"
    spend_feature: Str = "monetary_365d"
    tiers: tuple[B2bTier, ...] = DEFAULT_B2B_TIERS

    @model_validator(mode="after")
    def _check(self) -> Self:
        _require(len(self.tiers) >= 1, "b2b.tiers must list at least one tier")
        last = self.tiers[-1]
        _require(
            (last.min_spend, last.min_employees, last.industries) == (None, None, None),
            f"b2b.tiers: the last tier ({last.name}) must have no criteria, so that every "
            "business account gets a tier",
        )
        return self


class AppConfig(_Section):
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
    explain: ExplainConfig = Field(default_factory=ExplainConfig)
    rfm: RfmConfig = Field(default_factory=RfmConfig)
    b2b: B2bConfig = Field(default_factory=B2bConfig)

    def events_path(self) -> str:
        """Where the events are read from: the configured path or the generator's table."""
        return self.input.events.path or self.storage.table_path("events")

    def customers_path(self) -> str | None:
        """The customers dimension: the configured path, else the generator's table when the
        events are the generator's too (None: no customers dimension)."""
        if self.input.customers.path:
            return self.input.customers.path
        return self.storage.table_path("customers") if self.input.events.path is None else None

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
        names = {self.tracking.registered_model, self.rfm.model_name, self.b2b.model_name}
        _require(
            len(names) == 3,
            "tracking.registered_model, rfm.model_name and b2b.model_name must differ: they "
            "name segmentations in the shared segment_membership table",
        )
        return self


_SECRET_KEY = re.compile(
    r"(password|passwd|secret|token|credential|access[._-]?key|api[._-]?key|account\.key)",
    re.IGNORECASE,
)


def join_path(root: str, name: str) -> str:
    """Join a table name to a root that may be a local path or a URI (s3a://, abfss://...)."""
    return root.rstrip("/") + "/" + name


def load_config(
    path: str | Path = "conf/local.yaml",
    *,
    overrides: Sequence[str] = (),
    base: str | Path | None = None,
) -> AppConfig:
    """Load ``base.yaml`` (next to ``path`` unless given), merge ``path`` and the overrides.

    Args:
        path: the overlay file, e.g. ``conf/local.yaml``; ``conf/base.yaml`` itself is allowed.
        overrides: ``key.path=value`` strings; values are parsed as YAML scalars or lists.
        base: the base file; default ``base.yaml`` in the overlay's directory.

    Raises:
        ConfigError: a file is missing or unreadable, a key is unknown, a value has the wrong
            type, or a setting is impossible (the message names the key).
    """
    overlay_path = Path(path)
    base_path = Path(base) if base is not None else overlay_path.parent / "base.yaml"
    merged = _read_yaml(base_path)
    if overlay_path.resolve() != base_path.resolve():
        merged = _deep_merge(merged, _read_yaml(overlay_path))
    for item in overrides:
        merged = _deep_merge(merged, _parse_override(item))
    _reject_literal_secrets(merged, "")
    merged = _resolve_env(merged, "")
    try:
        return AppConfig.model_validate(merged)
    except ValidationError as exc:
        raise _config_error(exc, AppConfig) from exc


def validate(cfg: AppConfig) -> None:
    """Check a config built or copied in code (``model_copy`` does not re-check).

    Raises:
        ConfigError: a value has the wrong type or a setting is impossible.
    """
    try:
        AppConfig.model_validate(cfg.model_dump(by_alias=True))
    except ValidationError as exc:
        raise _config_error(exc, AppConfig) from exc


# pydantic error types -> what the key must be (the rest of the message is the key and value).
_EXPECTED = {
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be a string",
    "date_type": "must be a date as YYYY-MM-DD",
    "date_parsing": "must be a date as YYYY-MM-DD",
    "date_from_datetime_parsing": "must be a date as YYYY-MM-DD",
    "date_from_datetime_inexact": "must be a date as YYYY-MM-DD",
    "tuple_type": "must be a list",
    "list_type": "must be a list",
    "dict_type": "must be a mapping",
    "mapping_type": "must be a mapping",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
}


def _config_error(exc: ValidationError, root: type[BaseModel]) -> ConfigError:
    """The one translation of pydantic's errors into ConfigError messages naming full keys.

    Locations are relative to ``root`` (``AppConfig`` when loading). Several problems are
    reported on one line, separated by ``; ``.
    """
    messages = []
    for err in exc.errors(include_url=False):
        loc, kind, value = err["loc"], err["type"], err.get("input")
        key = _dotted(loc)
        if kind == "value_error":  # a cross-field rule: its message already names the keys
            messages.append(str(err.get("ctx", {}).get("error", err["msg"])))
        elif kind == "extra_forbidden":
            model = _type_at(root, loc[:-1])
            fields = model.model_fields if _is_model(model) else {}
            known = ", ".join(sorted(f.alias or name for name, f in fields.items()))
            messages.append(f"unknown config key '{key}' (known keys here: {known})")
        elif kind == "missing":
            messages.append(f"config key '{key}' is required")
        elif kind == "literal_error":
            choices = list(typing.get_args(_type_at(root, loc)))
            expected = choices or err.get("ctx", {}).get("expected")
            messages.append(f"config key '{key}' must be one of {expected}, got {value!r}")
        elif kind in _EXPECTED:
            messages.append(f"config key '{key}' {_EXPECTED[kind]}, got {value!r}")
        else:
            messages.append(f"config key '{key}' is invalid: {err['msg']}, got {value!r}")
    return ConfigError("; ".join(messages))


def _dotted(loc: tuple[int | str, ...]) -> str:
    """``('rfm', 'segments', 0, 'r')`` -> ``rfm.segments[0].r``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<root>"


def _type_at(root: type[BaseModel], loc: tuple[int | str, ...]) -> Any:
    """The declared type at ``loc`` under ``root`` (a model class for a section), or None."""
    tp: Any = root
    for part in loc:
        tp = _unwrap(tp)
        if _is_model(tp):
            by_key = {f.alias or n: f for n, f in tp.model_fields.items()}
            field = by_key.get(str(part)) or tp.model_fields.get(str(part))
            tp = field.annotation if field else None
        elif typing.get_origin(tp) is tuple and isinstance(part, int):
            tp = typing.get_args(tp)[0]
        elif typing.get_origin(tp) is Mapping:
            tp = typing.get_args(tp)[1]
        else:
            return None
    return _unwrap(tp)


def _is_model(tp: Any) -> typing.TypeGuard[type[BaseModel]]:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _unwrap(tp: Any) -> Any:
    """``Annotated[X, ...]`` and ``X | None`` -> ``X``."""
    while True:
        if typing.get_origin(tp) is Annotated:
            tp = typing.get_args(tp)[0]
        elif isinstance(tp, type(int | None)) or typing.get_origin(tp) is typing.Union:
            tp = next(a for a in typing.get_args(tp) if a is not type(None))
        else:
            return tp


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"configuration file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"configuration file {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"configuration file {path} must hold a mapping at the top level")
    return data


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _reject_literal_secrets(data: Any, where: str) -> None:
    """Credentials come from the environment (``${VAR}``) or the platform, never from config."""
    if isinstance(data, Mapping):
        for key, value in data.items():
            full = f"{where}.{key}" if where else str(key)
            if isinstance(value, str) and _SECRET_KEY.search(str(key)):
                if value and not _ENV_REF.fullmatch(value.strip()):
                    raise ConfigError(
                        f"config key '{full}' holds a credential: put it in an environment "
                        f"variable and write '${{VARIABLE}}' instead (or use the platform's "
                        "credentials, e.g. instance roles)"
                    )
            _reject_literal_secrets(value, full)
    tracking = data.get("tracking") if isinstance(data, Mapping) else None
    uri = tracking.get("tracking_uri") if isinstance(tracking, Mapping) else None
    if not where and isinstance(uri, str) and re.search(r"://[^/@:]+:[^/@]+@", uri):
        raise ConfigError(
            "config key 'tracking.tracking_uri' embeds a password: set "
            "MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN) in "
            "the environment instead"
        )


def _resolve_env(data: Any, where: str) -> Any:
    """Replace ``${VAR}`` in string values with the environment variable's value."""
    if isinstance(data, Mapping):
        return {k: _resolve_env(v, f"{where}.{k}" if where else str(k)) for k, v in data.items()}
    if isinstance(data, list):
        return [_resolve_env(v, where) for v in data]
    if isinstance(data, str):

        def value(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in os.environ:
                raise ConfigError(
                    f"config key '{where}' refers to environment variable {name}, which is not set"
                )
            return os.environ[name]

        return _ENV_REF.sub(value, data)
    return data


def _parse_override(item: str) -> dict[str, Any]:
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r} must look like key.path=value")
    value = yaml.safe_load(raw) if raw.strip() else None
    nested: dict[str, Any] = {}
    cursor = nested
    parts = key.strip().split(".")
    for part in parts[:-1]:
        cursor = cursor.setdefault(part, {})
    cursor[parts[-1]] = value
    return nested


def _deep_merge(left: Mapping[str, Any], right: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(left)
    for key, value in right.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping) and key != "conf":
            out[key] = _deep_merge(out[key], value)
        elif key == "conf" and isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


def to_dict(cfg: Any) -> dict[str, Any]:
    """The resolved config as plain data (dates as ISO strings), with secrets masked.

    YAML names are used (``return``, not ``return_``), so the result loads back as a config.
    """

    def plain(value: Any, key: str = "") -> Any:
        if isinstance(value, Mapping):
            return {str(k): plain(v, str(k)) for k, v in value.items()}
        if isinstance(value, tuple | list):
            return [plain(v) for v in value]
        if isinstance(value, dt.date):
            return value.isoformat()
        if isinstance(value, str) and key and _SECRET_KEY.search(key):
            return "***"
        return value

    result = plain(cfg.model_dump(by_alias=True))
    if "tracking" in result:
        result["tracking"]["tracking_uri"] = mask_uri(result["tracking"]["tracking_uri"])
    return typing.cast(dict[str, Any], result)


def mask_uri(uri: str) -> str:
    """Hide a password embedded in a URI (``scheme://user:pass@host``)."""
    return re.sub(r"(://[^:/@]+):[^@/]+@", r"\1:***@", uri)


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": "1"}``, for MLflow params."""
    out: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, name))
        else:
            out[name] = str(value)
    return out
