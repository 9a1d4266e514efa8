"""Loading, overriding, saving and describing configurations (the schema is `zerotir.config.schema`)."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from zerotir.config.schema import BUILTIN_CONFIGS, Config, ConfigError


# ---------------------------------------------------------------------------------------------- conversion


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check/convert one value to the declared type; raise ConfigError naming `key` otherwise."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                pass
        raise ConfigError(f"config key '{key}': expected {_type_name(tp)}, got {value!r}")
    if origin is list:
        (item_tp,) = typing.get_args(tp) or (Any,)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}': expected a list, got {value!r}")
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config key '{key}': expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"config key '{key}': expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "3e-4" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"config key '{key}': expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"config key '{key}': expected a string, got {value!r}")
    raise ConfigError(f"config key '{key}': unsupported type {_type_name(tp)}")


def _merge_into(obj: Any, data: dict, prefix: str) -> None:
    if not isinstance(data, dict):
        raise ConfigError(f"config section '{prefix.rstrip('.') or '<root>'}': expected a mapping, got {data!r}")
    hints = typing.get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    for k, v in data.items():
        key = f"{prefix}{k}"
        if k not in names:
            near = [n for n in names if n.startswith(str(k)[:3])]
            hint = f" (did you mean {', '.join(sorted(near))}?)" if near else ""
            raise ConfigError(f"unknown config key '{key}'{hint}")
        current = getattr(obj, k)
        if dataclasses.is_dataclass(current):
            _merge_into(current, v, key + ".")
        else:
            setattr(obj, k, _coerce(v, hints[k], key))


def config_from_dict(data: dict | None) -> Config:
    """Build a Config from a (possibly partial) nested mapping; unknown keys and wrong types are errors."""
    cfg = Config()
    _merge_into(cfg, data or {}, "")
    return cfg


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"override '{item}': expected key=value, e.g. algo.name=grpo")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override '{item}': empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply dotted `key=value` overrides (values parsed as YAML scalars/lists) in place and return cfg."""
    for item in overrides:
        path, value = _parse_override(item)
        nested: Any = value
        for part in reversed(path):
            nested = {part: nested}
        # A string given where a number/list is expected stays a string and fails type checking with the key named.
        _merge_into(cfg, nested, "")
    return cfg


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config (or the defaults when path is None), then apply dotted overrides."""
    data: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            # A bare name ("toy", "paper") selects a preset shipped in zerotir/configs/.
            builtin = BUILTIN_CONFIGS / f"{p.stem}.yaml"
            if len(p.parts) == 1 and p.suffix in ("", ".yaml") and builtin.is_file():
                p = builtin
            else:
                raise ConfigError(f"config file not found: {path}")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark else ""
            raise ConfigError(f"config file {path}:{where} is not valid YAML ({getattr(e, 'problem', e)})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path}: top level must be a mapping of sections")
    cfg = config_from_dict(data)
    return apply_overrides(cfg, overrides or [])


def config_to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


def field_docs(cls: type) -> dict[str, str]:
    """The attribute docstrings of a config dataclass (the string literal under each field)."""
    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for prev, node in zip(body, body[1:]):
        if isinstance(prev, ast.AnnAssign) and isinstance(prev.target, ast.Name):
            if isinstance(node, ast.Expr) and isinstance(getattr(node, "value", None), ast.Constant):
                docs[prev.target.id] = str(node.value.value)
    return docs


def describe_config(cfg: Config | None = None) -> str:
    """Every key with its value and docstring, one per line: the reference users read."""
    cfg = cfg or Config()
    lines = []
    for sec in dataclasses.fields(cfg):
        section = getattr(cfg, sec.name)
        docs = field_docs(type(section))
        lines.append(f"[{sec.name}]")
        for f in dataclasses.fields(section):
            lines.append(f"  {sec.name}.{f.name} = {getattr(section, f.name)!r}  # {docs.get(f.name, '')}")
    return "\n".join(lines)
