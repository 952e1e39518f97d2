"""A config written out in full: every key with its value (defaults included), each commented with
its meaning, as TOML that loads back to the same config (`kgclip config show NAME --resolved`)."""

from __future__ import annotations

import inspect
import json
import math
import re
import textwrap
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from kgclip.config import Config

WIDTH = 100
BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def describe(model: type[BaseModel], name: str) -> str:
    """A key's meaning: its description, else the one it has in a parent class (a backend's
    `timeout_s`), else, for a section, the first paragraph of its class's docstring."""
    for cls in model.__mro__:
        field = getattr(cls, "model_fields", {}).get(name)
        if field is not None and field.description:
            return field.description
    section = _model_of(model.model_fields[name])
    if section is not None:
        return docstring(section)
    return ""


def docstring(model: type[BaseModel]) -> str:
    doc = inspect.getdoc(model) or ""
    if model.__doc__ is None or doc == inspect.getdoc(BaseModel):
        return ""
    return " ".join(doc.split("\n\n")[0].split())


def _model_of(field: FieldInfo) -> type[BaseModel] | None:
    """The section class a field holds (itself, optional, or as list items), or None."""
    todo = [field.annotation]
    while todo:
        tp = todo.pop()
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            return tp
        todo.extend(getattr(tp, "__args__", ()))
    return None


def resolved_toml(cfg: Config, source: str) -> str:
    lines = [
        f"# The config {source}, resolved: every key with its value, defaults included, and its",
        "# meaning above it; `(default: ...)` marks a value the config sets. Keys that are unset show",
        "# commented out. Loads back as it is: `kgclip harvest THIS_FILE -w WORKDIR`.",
    ]
    _table(cfg, [], lines)
    return "\n".join(lines) + "\n"


def _table(model: BaseModel, path: list[str], lines: list[str], array: bool = False) -> None:
    """A section's keys, then its sections (TOML puts a table's keys before its sub-tables)."""
    cls = type(model)
    later: list[tuple[str, Any]] = []
    if path:
        header = ".".join(_key(p) for p in path)
        lines += ["", f"[[{header}]]" if array else f"[{header}]"]
    for name, field in cls.model_fields.items():
        value = getattr(model, name)
        if isinstance(value, BaseModel) or (
            isinstance(value, list) and value and all(isinstance(v, BaseModel) for v in value)
        ):
            later.append((name, value))
            continue
        meaning = describe(cls, name)
        if value is None:
            section = _model_of(field) is not None
            lines += _comment(meaning)
            lines.append(f"# [{'.'.join([*path, name])}] (unset)" if section else f"# {_key(name)} = (unset)")
            continue
        default = field.get_default(call_default_factory=True)
        if default is not PydanticUndefined and _plain(default) != _plain(value):
            was = "unset" if default is None else _value(default)
            meaning = f"{meaning} (default: {was})".strip()
        if isinstance(value, dict) and value:
            later.append((name, (meaning, value)))
            continue
        lines += _comment(meaning)
        lines += _assign(name, value)
    for name, value in later:
        before = len(lines)
        if isinstance(value, tuple):  # a dict of settings, as its own table
            meaning, entries = value
            lines += ["", f"[{'.'.join(_key(p) for p in [*path, name])}]"]
            for key, item in entries.items():
                lines += _assign(str(key), item)
        else:
            meaning = describe(cls, name)
            for item in value if isinstance(value, list) else [value]:
                _table(item, [*path, name], lines, array=isinstance(value, list))
        # the meaning goes just above the (first) header, after the blank line
        lines[before + 1 : before + 1] = _comment(meaning)


def _assign(key: str, value: Any) -> list[str]:
    """`key = value`; a long array one item a line."""
    line = f"{_key(key)} = {_value(value)}"
    if len(line) <= WIDTH or not isinstance(value, (list, tuple)):
        return [line]
    return [f"{_key(key)} = [", *(f"    {_value(v)}," for v in value), "]"]


def _comment(text: str) -> list[str]:
    if not text:
        return []
    return textwrap.wrap(text, WIDTH - 2, initial_indent="# ", subsequent_indent="# ") or []


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    return str(value)  # Path


def _key(key: str) -> str:
    return key if BARE_KEY.match(key) else _string(key)


def _string(text: str) -> str:
    # JSON's escapes are TOML's (control characters as \u00XX; nothing else escaped with ensure_ascii off)
    return json.dumps(text, ensure_ascii=False)


def _value(value: Any) -> str:
    value = _plain(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no TOML for {value!r}")
