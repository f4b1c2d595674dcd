"""Typed configuration: ``conf/base.yaml`` plus an overlay plus ``--set`` overrides.

Every job loads its configuration here, once, into frozen dataclasses; nothing downstream reads
YAML, dictionaries or ``sys.argv``. Unknown keys, wrong types and impossible settings are
rejected with a message naming the key.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from segmentation.errors import ConfigError

DeltaBackend = Literal["auto", "spark", "embedded"]
EventFormat = Literal["delta", "parquet", "csv", "json"]
Algorithm = Literal["kmeans", "bisecting_kmeans"]
Transform = Literal["log1p", "none"]


@dataclass(frozen=True)
class SparkConfig:
    master: str | None = "local[*]"
    app_name: str = "customer-segmentation"
    shuffle_partitions: int = 8
    ui_enabled: bool = False
    conf: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class StorageConfig:
    warehouse: str = "warehouse"
    delta_backend: DeltaBackend = "auto"

    def table_path(self, name: str) -> str:
        """Location of the output table ``name`` under the warehouse root."""
        return join_path(self.warehouse, name)


@dataclass(frozen=True)
class TrackingConfig:
    tracking_uri: str = "sqlite:///mlflow.db"
    artifact_location: str = "mlartifacts"
    experiment: str = "customer-segmentation"
    registered_model: str = "customer_segments"
    alias: str = "champion"
    promote: bool = False


@dataclass(frozen=True)
class GeneratorConfig:
    customers: int = 20000
    events: int = 1_000_000
    seed: int = 42
    start_date: dt.date = dt.date(2023, 1, 1)
    end_date: dt.date = dt.date(2025, 12, 31)
    partitions: int | None = None


@dataclass(frozen=True)
class EventColumns:
    customer_id: str = "customer_id"
    event_time: str = "event_time"
    amount: str = "amount"
    event_type: str | None = "event_type"
    category: str | None = "category"
    channel: str | None = "channel"
    device: str | None = "device"
    quantity: str | None = "quantity"
    discount: str | None = "discount"
    event_id: str | None = "event_id"

    REQUIRED: typing.ClassVar[tuple[str, ...]] = ("customer_id", "event_time", "amount")

    def mapped(self) -> dict[str, str]:
        """Canonical name -> the user's column name, for every column that is mapped."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if getattr(self, f.name) is not None
        }


@dataclass(frozen=True)
class EventTypes:
    order: tuple[str, ...] = ("order", "purchase", "sale")
    # `return` is a keyword: the YAML key "return" maps here.
    return_: tuple[str, ...] = ("return", "refund")
    visit: tuple[str, ...] = ("visit", "view", "session")


@dataclass(frozen=True)
class EventSourceConfig:
    path: str | None = None
    format: EventFormat = "delta"
    options: Mapping[str, str] = field(default_factory=dict)
    columns: EventColumns = field(default_factory=EventColumns)
    timestamp_format: str | None = None
    event_types: EventTypes = field(default_factory=EventTypes)


@dataclass(frozen=True)
class CustomersSourceConfig:
    """The customers dimension: one row per customer with descriptive attributes."""

    path: str | None = None
    format: EventFormat = "delta"
    options: Mapping[str, str] = field(default_factory=dict)
    customer_id: str = "customer_id"


@dataclass(frozen=True)
class InputConfig:
    events: EventSourceConfig = field(default_factory=EventSourceConfig)
    customers: CustomersSourceConfig = field(default_factory=CustomersSourceConfig)


@dataclass(frozen=True)
class FeatureConfig:
    as_of: dt.date = dt.date(2025, 12, 31)
    windows_days: tuple[int, ...] = (30, 90, 365)
    trend_window_days: int = 90
    categories: tuple[str, ...] | None = None
    channels: tuple[str, ...] | None = None
    devices: tuple[str, ...] | None = None
    max_levels: int = 12


@dataclass(frozen=True)
class QualityConfig:
    earliest_event_date: dt.date = dt.date(1990, 1, 1)
    max_days_after_as_of: int = 366
    max_reject_share: float = 0.05


@dataclass(frozen=True)
class TrainingConfig:
    algorithm: Algorithm = "kmeans"
    k_min: int = 2
    k_max: int = 10
    seed: int = 42
    max_iter: int = 40
    n_init: int = 3
    selection_sample_rows: int = 20000
    min_segment_share: float = 0.02
    silhouette_tolerance: float = 0.03
    features: tuple[str, ...] = ()
    default_transform: Transform = "log1p"
    transforms: Mapping[str, Transform] = field(default_factory=dict)
    match_max_distance: float = 1.0

    def transform_for(self, feature: str) -> Transform:
        """The skew transform applied to ``feature`` before scaling."""
        return self.transforms.get(feature, self.default_transform)


@dataclass(frozen=True)
class AssignConfig:
    reuse_features: bool = False


@dataclass(frozen=True)
class DriftConfig:
    baseline_as_of: dt.date | None = None
    psi_threshold: float = 0.25
    psi_bins: int = 10


@dataclass(frozen=True)
class ExplainConfig:
    """Profiles' composition, rule explanations, pictures and the HTML report of a training."""

    composition_attributes: tuple[str, ...] = (
        "country", "age", "gender", "os", "is_business", "industry", "employee_count",
    )  # fmt: skip
    sensitive_attributes: tuple[str, ...] = ("age", "gender")
    bins: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    max_levels: int = 12
    rules_max_depth: int = 5
    rules_per_segment: int = 3
    min_rule_fidelity: float = 0.85
    plot_sample_rows: int = 5000
    report: bool = True


@dataclass(frozen=True)
class RfmSegment:
    """A named cell range of the RFM map: inclusive [low, high] score ranges."""

    name: str
    r: tuple[int, ...] = (1, 5)
    f: tuple[int, ...] = (1, 5)
    m: tuple[int, ...] = (1, 5)


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


@dataclass(frozen=True)
class RfmConfig:
    enabled: bool = True
    model_name: str = "rfm"
    version: int = 1
    recency_feature: str = "recency_days"
    frequency_feature: str = "frequency"
    monetary_feature: str = "monetary_total"
    quantile_accuracy: int = 10000
    segments: tuple[RfmSegment, ...] = DEFAULT_RFM_SEGMENTS


@dataclass(frozen=True)
class B2bTier:
    """A tier rule: every criterion given must hold (null: no constraint)."""

    name: str
    min_spend: float | None = None
    min_employees: int | None = None
    industries: tuple[str, ...] | None = None


DEFAULT_B2B_TIERS = (
    B2bTier("Strategic", min_spend=20000.0),
    B2bTier("Strategic", min_spend=5000.0, min_employees=1000),
    B2bTier("Large", min_spend=5000.0),
    B2bTier("Large", min_employees=250),
    B2bTier("Medium", min_spend=1000.0),
    B2bTier("Medium", min_employees=50),
    B2bTier("Small"),
)


@dataclass(frozen=True)
class B2bConfig:
    enabled: bool = True
    model_name: str = "b2b_tiers"
    version: int = 1
    business_column: str = "is_business"
    employees_column: str | None = "employee_count"
    industry_column: str | None = "industry"
    spend_feature: str = "monetary_365d"
    tiers: tuple[B2bTier, ...] = DEFAULT_B2B_TIERS


@dataclass(frozen=True)
class AppConfig:
    spark: SparkConfig = field(default_factory=SparkConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    input: InputConfig = field(default_factory=InputConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    assign: AssignConfig = field(default_factory=AssignConfig)
    drift: DriftConfig = field(default_factory=DriftConfig)
    explain: ExplainConfig = field(default_factory=ExplainConfig)
    rfm: RfmConfig = field(default_factory=RfmConfig)
    b2b: B2bConfig = field(default_factory=B2bConfig)

    def events_path(self) -> str:
        """Where the events are read from: the configured path or the generator's table."""
        return self.input.events.path or self.storage.table_path("events")

    def customers_path(self) -> str | None:
        """The customers dimension: the configured path, else the generator's table when the
        events are the generator's too (None: no customers dimension)."""
        if self.input.customers.path:
            return self.input.customers.path
        return self.storage.table_path("customers") if self.input.events.path is None else None


# Names in YAML that differ from the Python field name.
_YAML_ALIASES = {"return": "return_"}
_PY_TO_YAML = {v: k for k, v in _YAML_ALIASES.items()}
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
    cfg = _build(AppConfig, merged, "")
    validate(cfg)
    return cfg


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
    uri = data.get("tracking", {}).get("tracking_uri") if isinstance(data, Mapping) else None
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


def _build(cls: type, data: Any, where: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"config key '{where or '<root>'}' must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for raw_key, value in data.items():
        key = _YAML_ALIASES.get(str(raw_key), str(raw_key))
        full = f"{where}.{raw_key}" if where else str(raw_key)
        if key not in names:
            known = ", ".join(sorted(_PY_TO_YAML.get(n, n) for n in names))
            raise ConfigError(f"unknown config key '{full}' (known keys here: {known})")
        kwargs[key] = _coerce(hints[key], value, full)
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        return _coerce(non_none[0], value, where)
    if dataclasses.is_dataclass(tp):
        return _build(typing.cast(type, tp), value, where)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"config key '{where}' must be one of {list(args)}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"config key '{where}' must be a list, got {value!r}")
        return tuple(_coerce(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin in (Mapping, dict) or tp is Mapping:
        if not isinstance(value, Mapping):
            raise ConfigError(f"config key '{where}' must be a mapping, got {value!r}")
        val_tp = args[1] if args else str
        return {str(k): _coerce(val_tp, v, f"{where}.{k}") for k, v in value.items()}
    if tp is dt.date:
        if isinstance(value, dt.date):
            return value
        try:
            return dt.date.fromisoformat(str(value))
        except ValueError:
            raise ConfigError(
                f"config key '{where}' must be a date as YYYY-MM-DD, got {value!r}"
            ) from None
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{where}' must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key '{where}' must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"config key '{where}' must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if isinstance(value, Mapping | list):
            raise ConfigError(f"config key '{where}' must be a string, got {value!r}")
        return str(value)
    return value


def validate(cfg: AppConfig) -> None:
    """Reject impossible settings, naming the key and the fix."""
    t, g, f = cfg.training, cfg.generator, cfg.features
    checks: list[tuple[bool, str]] = [
        (cfg.spark.shuffle_partitions >= 1, "spark.shuffle_partitions must be >= 1"),
        (t.k_min >= 2, "training.k_min must be >= 2"),
        (t.k_max >= t.k_min, f"training.k_max ({t.k_max}) must be >= k_min ({t.k_min})"),
        (t.max_iter >= 1, "training.max_iter must be >= 1"),
        (t.n_init >= 1, "training.n_init must be >= 1"),
        (t.selection_sample_rows >= 10, "training.selection_sample_rows must be >= 10"),
        (0 <= t.min_segment_share < 1, "training.min_segment_share must be in [0, 1)"),
        (t.silhouette_tolerance >= 0, "training.silhouette_tolerance must be >= 0"),
        (len(t.features) >= 1, "training.features must list at least one feature column"),
        (len(set(t.features)) == len(t.features), "training.features has duplicates"),
        (g.customers >= 1, "generator.customers must be >= 1"),
        (g.events >= g.customers, "generator.events must be >= generator.customers"),
        (g.end_date > g.start_date, "generator.end_date must be after generator.start_date"),
        (g.partitions is None or g.partitions >= 1, "generator.partitions must be >= 1"),
        (len(f.windows_days) >= 1, "features.windows_days must list at least one window"),
        (all(w >= 1 for w in f.windows_days), "features.windows_days must all be >= 1 day"),
        (f.trend_window_days >= 1, "features.trend_window_days must be >= 1 day"),
        (f.max_levels >= 1, "features.max_levels must be >= 1"),
        (
            0 <= cfg.quality.max_reject_share <= 1,
            "quality.max_reject_share must be in [0, 1] (a share of input rows)",
        ),
        (t.match_max_distance >= 0, "training.match_max_distance must be >= 0"),
        (cfg.drift.psi_threshold > 0, "drift.psi_threshold must be > 0"),
        (2 <= cfg.drift.psi_bins <= 100, "drift.psi_bins must be in [2, 100]"),
        (
            cfg.drift.baseline_as_of is None or cfg.drift.baseline_as_of < f.as_of,
            "drift.baseline_as_of must be before features.as_of",
        ),
        (cfg.quality.max_days_after_as_of >= 0, "quality.max_days_after_as_of must be >= 0"),
        (
            cfg.quality.earliest_event_date < f.as_of,
            "quality.earliest_event_date must be before features.as_of",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    _validate_explain(cfg)
    for key, cols in (("input.events.columns", cfg.input.events.columns),):
        for required in EventColumns.REQUIRED:
            if not getattr(cols, required):
                raise ConfigError(f"{key}.{required} must name a column (it is required)")


def _validate_explain(cfg: AppConfig) -> None:
    e, rfm, b2b = cfg.explain, cfg.rfm, cfg.b2b
    sensitive = {a.lower() for a in e.sensitive_attributes}
    used = sorted(f for f in cfg.training.features if f.lower() in sensitive)
    if used:
        raise ConfigError(
            f"training.features {used} are listed in explain.sensitive_attributes: sensitive "
            "attributes are never clustering features (remove them from training.features)"
        )
    checks = [
        (1 <= e.rules_max_depth <= 10, "explain.rules_max_depth must be in [1, 10]"),
        (e.rules_per_segment >= 1, "explain.rules_per_segment must be >= 1"),
        (0 <= e.min_rule_fidelity <= 1, "explain.min_rule_fidelity must be in [0, 1]"),
        (e.plot_sample_rows >= 10, "explain.plot_sample_rows must be >= 10"),
        (e.max_levels >= 1, "explain.max_levels must be >= 1"),
        (rfm.quantile_accuracy >= 100, "rfm.quantile_accuracy must be >= 100"),
        (len(rfm.segments) >= 1, "rfm.segments must list at least one segment"),
        (len(b2b.tiers) >= 1, "b2b.tiers must list at least one tier"),
        (
            len({cfg.tracking.registered_model, rfm.model_name, b2b.model_name}) == 3,
            "tracking.registered_model, rfm.model_name and b2b.model_name must differ: they "
            "name segmentations in the shared segment_membership table",
        ),
    ]
    for name, edges in e.bins.items():
        checks.append(
            (
                len(edges) >= 1 and list(edges) == sorted(set(edges)),
                f"explain.bins.{name} must be increasing bin edges",
            )
        )
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    for i, seg in enumerate(rfm.segments):
        for score in ("r", "f", "m"):
            lo_hi = getattr(seg, score)
            if len(lo_hi) != 2 or not 1 <= lo_hi[0] <= lo_hi[1] <= 5:
                raise ConfigError(
                    f"rfm.segments[{i}].{score} ({seg.name}) must be [low, high] with "
                    f"1 <= low <= high <= 5, got {list(lo_hi)}"
                )
    uncovered = [
        (r, f, m)
        for r in range(1, 6)
        for f in range(1, 6)
        for m in range(1, 6)
        if not any(
            s.r[0] <= r <= s.r[1] and s.f[0] <= f <= s.f[1] and s.m[0] <= m <= s.m[1]
            for s in rfm.segments
        )
    ]
    if uncovered:
        cells = ", ".join(f"r={r} f={f} m={m}" for r, f, m in uncovered[:5])
        raise ConfigError(
            f"rfm.segments leave {len(uncovered)} score cell(s) without a segment (e.g. "
            f"{cells}): every customer must get one; add a catch-all segment last"
        )
    last = b2b.tiers[-1]
    if (last.min_spend, last.min_employees, last.industries) != (None, None, None):
        raise ConfigError(
            f"b2b.tiers: the last tier ({last.name}) must have no criteria, so that every "
            "business account gets a tier"
        )


def to_dict(cfg: Any) -> dict[str, Any]:
    """The resolved config as plain data (dates as ISO strings), with secrets masked."""

    def plain(value: Any, key: str = "") -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {
                _PY_TO_YAML.get(f.name, f.name): plain(getattr(value, f.name), f.name)
                for f in dataclasses.fields(value)
            }
        if isinstance(value, Mapping):
            return {str(k): plain(v, str(k)) for k, v in value.items()}
        if isinstance(value, tuple | list):
            return [plain(v) for v in value]
        if isinstance(value, dt.date):
            return value.isoformat()
        if isinstance(value, str) and key and _SECRET_KEY.search(key):
            return "***"
        return value

    result = plain(cfg)
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
