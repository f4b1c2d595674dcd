"""The configuration's keys and their descriptions, for the generated reference (`make docs`).

Every key of the pydantic models in ``segmentation.config`` (``walk``), with its default as
``conf/base.yaml`` sets it, and its description as ``conf/base.yaml`` writes it
(``yaml_descriptions``): the comment block directly above the key (same indentation, no blank
line in between) plus the comment at the end of its line. The YAML comments are the one place
a key is described; ``tools/docs_reference.py`` renders them.
"""

from __future__ import annotations

import datetime as dt
import inspect
import re
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from segmentation.config import load_config

BASE_YAML = Path(__file__).resolve().parents[1] / "conf" / "base.yaml"

# --- conf/base.yaml's comments ---------------------------------------------------------------

_KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][\w.]*)\s*:(?P<rest>.*)$")
_COMMENT_LINE = re.compile(r"^(?P<indent> *)#(?P<text>.*)$")


def _inline_comment(rest: str) -> str:
    """The comment at the end of a key's line (a ``#`` outside quotes, after a space)."""
    quote = ""
    for i, ch in enumerate(rest):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch == "#" and (i == 0 or rest[i - 1].isspace()):
            return rest[i + 1 :].strip()
    return ""


def yaml_descriptions(text: str) -> dict[str, str]:
    """Dotted key path -> its description: the comment block directly above the key (at the
    key's indentation, no blank line in between), then its end-of-line comment."""
    descriptions: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    block: list[str] = []
    block_indent = -1
    for line in text.splitlines():
        comment = _COMMENT_LINE.match(line)
        if comment:
            indent = len(comment["indent"])
            if indent != block_indent:
                block, block_indent = [], indent
            block.append(comment["text"].strip())
            continue
        key = _KEY_LINE.match(line)
        if key:
            indent = len(key["indent"])
            while stack and stack[-1][0] >= indent:
                stack.pop()
            stack.append((indent, key["key"]))
            above = block if block_indent == indent else []
            parts = [*above, _inline_comment(key["rest"])]
            described = " ".join(p for p in parts if p)
            if described:
                descriptions[".".join(k for _, k in stack)] = " ".join(described.split())
        block, block_indent = [], -1
    return descriptions


# --- the models ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Key:
    """One configuration key: where it is, what it holds, what it says."""

    path: str
    """Dotted path; ``[]`` marks the entries of a list of mappings (``rfm.segments[].r``)."""
    annotation: Any
    owner: type[BaseModel]
    """The model class that declares the field (for descriptions shared by subclasses)."""
    field: str
    model: type[BaseModel] | None
    """The section's model when the key holds a section (or a list of them)."""
    is_list: bool
    default: Any
    """The default in plain data (``conf/base.yaml`` merged on the models' defaults)."""
    required: bool


def unwrap(tp: Any) -> Any:
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def optional(tp: Any) -> tuple[Any, bool]:
    """``X | None`` -> (X, True)."""
    tp = unwrap(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return unwrap(args[0]), True
    return tp, False


def _declaring_class(model: type[BaseModel], field: str) -> type[BaseModel]:
    for cls in reversed(model.__mro__):
        if is_model(cls) and field in inspect.get_annotations(cls):
            return cls
    return model


def walk(model: type[BaseModel], defaults: Any, prefix: str = "") -> Iterator[Key]:
    """Every key under ``model`` in declaration order, sections before their keys."""
    for name, info in model.model_fields.items():
        yaml_name = info.alias or name
        path = f"{prefix}.{yaml_name}" if prefix else yaml_name
        inner, _ = optional(info.annotation)
        item = unwrap(typing.get_args(inner)[0]) if typing.get_origin(inner) is tuple else None
        sub = inner if is_model(inner) else (item if is_model(item) else None)
        default = defaults.get(yaml_name) if isinstance(defaults, Mapping) else None
        yield Key(
            path=path,
            annotation=info.annotation,
            owner=_declaring_class(model, name),
            field=name,
            model=sub,
            is_list=sub is not None and sub is item,
            default=default if isinstance(defaults, Mapping) else _field_default(info),
            required=info.is_required(),
        )
        if sub is inner:
            yield from walk(sub, default, path)
        elif sub is not None:  # a list of sections: its entries' keys, with the models' defaults
            yield from walk(sub, None, f"{path}[]")


def _field_default(info: Any) -> Any:
    """A list entry's field default, as plain data (no base.yaml value applies to it)."""
    if info.is_required():
        return None
    return _plain(info.get_default(call_default_factory=True))


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def base_defaults() -> dict[str, Any]:
    """``conf/base.yaml`` loaded as every job loads it, as plain data (YAML names)."""
    cfg = load_config(BASE_YAML)
    return typing.cast(dict[str, Any], cfg.model_dump(mode="json", by_alias=True))


def describe(keys: list[Key], comments: Mapping[str, str]) -> dict[str, str]:
    """Each key's description: its own comment, else, for a field a shared section class
    declares (``training.*`` and ``attitudes.clustering.*``), a pointer to where it is."""
    out = {k.path: comments[k.path] for k in keys if k.path in comments}
    for k in keys:
        if k.path in out:
            continue
        twin = next(
            (o for o in keys if o.path in comments and o.field == k.field
             and o.path != k.path and _shared(o.owner, k.owner)),
            None,
        )  # fmt: skip
        if twin is not None:
            out[k.path] = f"As `{twin.path}`: {comments[twin.path]}"
        elif k.path.rpartition(".")[0].endswith("[]"):  # an entry of a list: described there
            out[k.path] = f"Described with `{k.path.rpartition('.')[0].removesuffix('[]')}`."
    return out


def _shared(a: type[BaseModel], b: type[BaseModel]) -> bool:
    """One class declares the field for both (one subclasses the other)."""
    return issubclass(a, b) or issubclass(b, a)
