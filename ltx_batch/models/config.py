"""Strict construction of frozen model configs from checkpoint config dicts.

Every model takes one frozen dataclass. Checkpoints carry their config as JSON (diffusers' ``config.json``,
or the ``config`` entry of a single-file checkpoint's metadata); ``config_from_dict`` turns such a dict into
the dataclass and refuses keys it does not know, so a checkpoint whose architecture we do not implement
fails with a message naming the key instead of silently loading into the wrong shape.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, TypeVar

T = TypeVar("T")

# Bookkeeping keys diffusers writes into every config.json; they carry no architecture.
_DIFFUSERS_META = frozenset({"_class_name", "_diffusers_version", "_name_or_path", "_use_default_values"})


class ConfigError(ValueError):
    """A checkpoint config we cannot build a model from; the message names the key."""


def config_from_dict(cls: type[T], raw: dict[str, Any], *, ignore: frozenset[str] = frozenset(), where: str = "") -> T:
    """Build ``cls`` from ``raw``. Unknown keys are an error unless listed in ``ignore``.

    ``ignore`` is for keys that exist in published configs but do not change the computation we run
    (for example training-only switches); each model module lists its own with a reason.
    """
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    label = where or cls.__name__
    unknown = sorted(k for k in raw if k not in names and k not in ignore and k not in _DIFFUSERS_META)
    if unknown:
        raise ConfigError(f"{label}: unknown config key(s) {unknown}; known keys: {sorted(names)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for k, v in raw.items():
        if k not in names:
            continue
        hint = hints.get(k)
        # JSON has no tuples: lists become tuples so the frozen config stays hashable.
        if isinstance(v, list):
            v = tuple(tuple(x) if isinstance(x, list) else x for x in v)
        if hint is float and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        kwargs[k] = v
    try:
        return cls(**kwargs)
    except TypeError as e:  # a required field is missing
        raise ConfigError(f"{label}: {e}") from None
