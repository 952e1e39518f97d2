"""What a stage may read of the config, and the digest of exactly that.

A stage declares the config keys it reads as dotted paths (`curate`, `seed`,
`entities.wordnet.path`). It runs against a `ConfigView` that answers those paths and raises
`UndeclaredConfigKey` for anything else, and its config digest covers the same paths. So a setting
that shapes a stage's output is in its fingerprint by construction: reading it without declaring it
fails the first time the code runs (every stage runs in the test suite), instead of leaving a stale
output marked done.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
from pydantic import BaseModel

Tree = dict[str, "Tree | None"]  # None: the whole subtree is declared


class UndeclaredConfigKey(RuntimeError):
    """A stage read a config key it does not declare: a bug in the stage's declaration."""


def declared_tree(paths: tuple[str, ...]) -> Tree:
    """Dotted paths as a nested dict; a path declared whole swallows any deeper path under it."""
    tree: Tree = {}
    for path in sorted(paths, key=lambda p: p.count(".")):
        node = tree
        *parents, leaf = path.split(".")
        for name in parents:
            child = node.setdefault(name, {})
            if child is None:
                break
            node = child
        else:
            node[leaf] = None
    return tree


class ConfigView:
    """Read-only access to the declared part of a config (or of one of its sections)."""

    __slots__ = ("_allowed", "_model", "_owner", "_where")

    def __init__(self, model: Any, allowed: Tree, owner: str, where: str = "") -> None:
        self._model = model
        self._allowed = allowed
        self._owner = owner
        self._where = where

    def __getattr__(self, name: str) -> Any:
        path = f"{self._where}.{name}" if self._where else name
        if name not in self._allowed:
            raise UndeclaredConfigKey(
                f"stage {self._owner} read config key {path!r} without declaring it "
                f"(add it to the stage's `reads` in kgclip/pipeline.py)"
            )
        value = getattr(self._model, name)
        sub = self._allowed[name]
        if sub is None or value is None:
            return value
        return ConfigView(value, sub, self._owner, path)

    def __repr__(self) -> str:
        return f"ConfigView({self._owner}: {self._where or '<config>'})"


def view(config: BaseModel, paths: tuple[str, ...], owner: str) -> Any:
    """The config as the stage `owner` may see it. Typed Any so stage code keeps its Config hints."""
    return ConfigView(config, declared_tree(paths), owner)


def reads_hash(config: BaseModel, paths: tuple[str, ...]) -> str:
    """Digest of the values at the declared paths: what re-runs a stage when a setting changes."""
    return _digest({path: _value(config, path) for path in paths})


def reads_digests(config: BaseModel, paths: tuple[str, ...]) -> dict[str, str]:
    """One digest per declared path, so `status` can say which setting changed."""
    return {path: _digest(_value(config, path)) for path in paths}


def _value(config: BaseModel, path: str) -> Any:
    value: Any = config
    for name in path.split("."):
        value = None if value is None else getattr(value, name)
    return _plain(value)


def _digest(data: Any) -> str:
    return hashlib.sha256(orjson.dumps(data, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return _outputs_only(value, value.model_dump(mode="json"))
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def _outputs_only(model: BaseModel, dumped: dict[str, Any]) -> dict[str, Any]:
    """The dump without the fields marked as changing how, not what, a stage writes
    (`json_schema_extra={"fingerprint": False}`), at any depth."""
    for name, info in type(model).model_fields.items():
        extra = info.json_schema_extra
        if isinstance(extra, dict) and extra.get("fingerprint") is False:
            dumped.pop(name, None)
        elif isinstance(getattr(model, name), BaseModel) and isinstance(dumped.get(name), dict):
            _outputs_only(getattr(model, name), dumped[name])
    return dumped
