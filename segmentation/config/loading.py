"""Loading: base.yaml + overlay + overrides, ${ENV} values, secrets refused, errors named."""

from __future__ import annotations

import datetime as dt
import os
import re
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    BaseModel,
    ValidationError,
)

from segmentation.config.models import AppConfig, Origin
from segmentation.errors import ConfigError

_SECRET_KEY = re.compile(
    r"(password|passwd|secret|token|credential|access[._-]?key|api[._-]?key|account\.key)",
    re.IGNORECASE,
)


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
    if not overlay_path.is_file():
        raise ConfigError(f"configuration file not found: {overlay_path}")
    base_path = Path(base) if base is not None else overlay_path.parent / "base.yaml"
    if base is None and not base_path.is_file():
        raise ConfigError(
            f"configuration file not found: {base_path}. An overlay ({overlay_path}) is merged "
            "on the base.yaml in its own folder: put the overlay in conf/, beside "
            "conf/base.yaml, or copy conf/base.yaml beside it"
        )
    merged = _read_yaml(base_path)
    if overlay_path.resolve() != base_path.resolve():
        merged = _deep_merge(merged, _read_yaml(overlay_path))
    for item in overrides:
        merged = _deep_merge(merged, _parse_override(item))
    _reject_literal_secrets(merged, "")
    merged = _resolve_env(merged, "")
    try:
        cfg = AppConfig.model_validate(merged)
    except ValidationError as exc:
        error = _config_error(exc, AppConfig)
        if base is None and overlay_path.resolve() == base_path.resolve():
            # An overlay named base.yaml is the base itself, merged on nothing: say so.
            error = ConfigError(f"{error} ({overlay_path} was read as the whole configuration: "
                                "a file named base.yaml is never merged on conf/base.yaml, so "
                                "give an overlay another name)")  # fmt: skip
        raise error from exc
    return cfg.with_origin(Origin(str(path), tuple(overrides)))


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
            got = "an empty value (null)" if value is None else repr(value)
            messages.append(f"config key '{key}' {_EXPECTED[kind]}, got {got}")
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
    except ValueError as exc:  # a well-formed but impossible date, e.g. 2025-02-30
        raise ConfigError(f"configuration file {path} holds an impossible value: {exc}") from exc
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
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except (yaml.YAMLError, ValueError) as exc:  # ValueError: an impossible date (2025-02-30)
        raise ConfigError(
            f"config key '{key.strip()}': {raw!r} is not a valid value ({exc})"
        ) from exc
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
