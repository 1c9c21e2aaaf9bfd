"""Strict parsing of nested dicts (YAML/JSON) into frozen dataclasses.

Errors name the dotted path of the bad key (``recipe.multiscale.refine.guidance_scale``) and, for unknown
keys, the allowed ones. Types are checked, not coerced, except the lossless cases users expect from YAML:
an int where a float is wanted, and a list where a tuple is wanted.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Literal, Union


class SpecError(ValueError):
    """An invalid job or request; ``str()`` names the field."""


def _type_name(hint) -> str:
    origin = typing.get_origin(hint)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(hint))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(hint))
    if hint is type(None):
        return "null"
    if dataclasses.is_dataclass(hint):
        return "a mapping"
    return getattr(hint, "__name__", str(hint))


def parse(hint: Any, value: Any, path: str) -> Any:
    """Check ``value`` against the type ``hint`` and build dataclasses; ``path`` names it in errors."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return value
    if dataclasses.is_dataclass(hint):
        return parse_dataclass(hint, value, path)
    if origin in (Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return parse(arg, value, path)
            except SpecError as e:
                errors.append(e)
        if len(errors) == 1:
            raise errors[0]
        raise SpecError(f"{path}: expected {_type_name(hint)}, got {value!r}")
    if origin is Literal:
        if value not in typing.get_args(hint):
            raise SpecError(f"{path}: expected one of {list(typing.get_args(hint))}, got {value!r}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise SpecError(f"{path}: expected a list, got {value!r}")
        args = typing.get_args(hint)
        item = args[0] if args else Any
        return tuple(parse(item, v, f"{path}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise SpecError(f"{path}: expected a mapping, got {value!r}")
        kt, vt = typing.get_args(hint) or (Any, Any)
        return {parse(kt, k, path): parse(vt, v, f"{path}.{k}") for k, v in value.items()}
    if hint is float:
        # YAML reads .nan and .inf as floats; no field means anything with them (and NaN slips past range checks)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise SpecError(f"{path}: expected a finite number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SpecError(f"{path}: expected an integer, got {value!r}")
        return value
    if hint in (str, bool):
        if not isinstance(value, hint):
            raise SpecError(f"{path}: expected {hint.__name__}, got {value!r}")
        return value
    raise TypeError(f"spec parser: unsupported type {hint!r} at {path}")


def check_keys(cls, value: dict, path: str) -> None:
    """A key of ``value`` that is none of ``cls``'s fields is an error naming it and the allowed ones."""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted((k for k in value if k not in fields), key=str)  # YAML keys may be numbers too
    if unknown:
        where = f"{path}." if path else ""
        raise SpecError(f"unknown key {where}{unknown[0]}; allowed keys{' in ' + path if path else ''}: {sorted(fields)}")


def parse_dataclass(cls, value: Any, path: str):
    label = path or "job"
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise SpecError(f"{label}: expected a mapping, got {value!r}")
    check_keys(cls, value, path)
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, v in value.items():
        kwargs[name] = parse(hints[name], v, f"{path}.{name}" if path else name)
    try:
        return cls(**kwargs)
    except SpecError:
        raise
    except (TypeError, ValueError) as e:
        raise SpecError(f"{label}: {e}") from None


def merge(base: dict, override: dict) -> dict:
    """Deep merge of plain dicts: ``override`` wins; nested mappings merge key by key."""
    out = dict(base)
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def set_path(data: dict, dotted: str, value: Any) -> dict:
    """``--set a.b.c=value``: a copy of ``data`` with that key set (intermediate mappings created)."""
    out = merge({}, data)
    node = out
    keys = dotted.split(".")
    for k in keys[:-1]:
        nxt = node.get(k)
        if nxt is None:
            nxt = {}
        elif not isinstance(nxt, dict):
            raise SpecError(f"--set {dotted}: {k} is not a mapping")
        node[k] = dict(nxt)
        node = node[k]
    node[keys[-1]] = value
    return out
