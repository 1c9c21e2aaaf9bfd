"""Manifest rows: validation and seeds (the manifest contract in DESIGN.md).

``validate_row`` turns one raw mapping (a Parquet row, or a ``render`` request) into a ``Row`` or raises
``RowError`` naming the field; a bad row fails alone. Columns outside the contract pass through to the
metadata and results (dataset labels).
"""

from __future__ import annotations

import hashlib
import math
import os
import posixpath
import re
from dataclasses import dataclass, field
from typing import Any

ID_PATTERN = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
KNOWN_COLUMNS = ("id", "prompt", "negative_prompt", "width", "height", "num_frames", "frame_rate", "seed", "conditions")
SEED_LIMIT = 2**63
# Upper bounds that only stop typos from exhausting memory at render time: 8192 px is twice 4K's width,
# 2049 frames (8k+1) are ~85 s at 24 fps, and no MP4 plays at more than 1000 frames per second.
MAX_SIDE = 8192
MAX_FRAMES = 2049
MAX_FRAME_RATE = 1000.0

# condition media are told apart by extension (io.media reads them)
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
VIDEO_EXTENSIONS = {".mp4", ".mov", ".webm", ".mkv", ".avi", ".m4v"}


def media_kind(uri: str) -> str:
    ext = os.path.splitext(uri.split("?", 1)[0])[1].lower()
    if ext in IMAGE_EXTENSIONS:
        return "image"
    if ext in VIDEO_EXTENSIONS:
        return "video"
    raise ValueError(f"unknown media type {ext or '(none)'!r}; images: {sorted(IMAGE_EXTENSIONS)}, videos: {sorted(VIDEO_EXTENSIONS)}")


def id_label(row_id: str | None) -> str:
    """A row's id as the console and the report show it (a manifest row may have none)."""
    return "(no id)" if row_id is None else row_id


def id_order(row_id: str | None) -> tuple[bool, str]:
    """The order of rows in the results, ``status`` and the report: by id, rows without one last."""
    return row_id is None, row_id or ""


def side_problem(value: int) -> str | None:
    """Why a width or height is invalid, or None."""
    if value <= 0 or value % 32 or value > MAX_SIDE:
        return f"must be a positive multiple of 32 up to {MAX_SIDE}, got {value}"
    return None


def frames_problem(value: int) -> str | None:
    if value < 1 or (value - 1) % 8 or value > MAX_FRAMES:
        return f"must be 8k+1 (1, 9, 17, ..., 121, 161, ... up to {MAX_FRAMES}), got {value}"
    return None


def frame_rate_problem(value: float) -> str | None:
    if not 0 < value <= MAX_FRAME_RATE:
        return f"must be > 0 and <= {MAX_FRAME_RATE:g}, got {value}"
    return None


class RowError(ValueError):
    """A row that cannot render; ``field`` names the column."""

    def __init__(self, field_name: str, message: str):
        super().__init__(f"{field_name}: {message}")
        self.field = field_name


@dataclass(frozen=True, slots=True)
class ConditionSpec:
    uri: str  # absolute URI (relative ones are resolved against the manifest's folder)
    frame_index: int
    strength: float = 1.0

    @property
    def kind(self) -> str:
        return media_kind(self.uri)


@dataclass(frozen=True, kw_only=True, slots=True)
class Row:
    id: str
    prompt: str
    negative_prompt: str = ""
    width: int
    height: int
    num_frames: int
    frame_rate: float
    seed: int
    conditions: tuple[ConditionSpec, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)  # pass-through columns

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "prompt": self.prompt, "negative_prompt": self.negative_prompt, "width": self.width,
            "height": self.height, "num_frames": self.num_frames, "frame_rate": self.frame_rate, "seed": self.seed,
            "conditions": [{"uri": c.uri, "frame_index": c.frame_index, "strength": c.strength} for c in self.conditions],
        }  # fmt: skip


def derived_seed(row_id: str) -> int:
    return int.from_bytes(hashlib.sha256(row_id.encode()).digest()[:8], "big") & (SEED_LIMIT - 1)


def _missing(value: Any) -> bool:
    """None, NaN (also numpy's float32 NaN, which is no ``float``) or pandas' NA: the column is empty."""
    if value is None or type(value).__name__ == "NAType":  # pandas.NA, without importing pandas
        return True
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):  # numpy scalars
        value = value.item()
    return isinstance(value, float) and math.isnan(value)


def _as_int(name: str, value: Any) -> int:
    """Ints, and floats holding whole numbers (pandas writes nullable int columns as float)."""
    if isinstance(value, bool):
        raise RowError(name, f"expected an integer, got {value!r}")
    if hasattr(value, "item"):  # numpy scalars
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if not isinstance(value, int):
        raise RowError(name, f"expected an integer, got {value!r}")
    return value


def _as_float(name: str, value: Any) -> float:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RowError(name, f"expected a number, got {value!r}")
    return float(value)


def resolve_uri(uri: str, base: str | None) -> str:
    """A condition URI; relative ones resolve against ``base`` (the manifest's folder URL)."""
    if "://" in uri or uri.startswith("/") or base is None:
        return uri
    if "://" in base:
        scheme, rest = base.split("://", 1)
        joined = posixpath.normpath(posixpath.join(rest, uri))
        if joined == ".." or joined.startswith("../"):  # above the bucket: "s3://../x.png" names nothing
            raise ValueError(f"relative URI {uri!r} climbs above {base!r}")
        return f"{scheme}://{joined}"
    return posixpath.normpath(posixpath.join(base, uri))


def _conditions(raw: Any, num_frames: int, base: str | None) -> tuple[ConditionSpec, ...]:
    if _missing(raw):
        return ()
    if hasattr(raw, "tolist"):
        raw = raw.tolist()
    if not isinstance(raw, (list, tuple)):
        raise RowError("conditions", f"expected a list of {{uri, frame_index, strength}}, got {type(raw).__name__}")
    out = []
    for i, item in enumerate(raw):
        where = f"conditions[{i}]"
        if not isinstance(item, dict):
            raise RowError(where, f"expected a mapping with uri, frame_index, strength, got {item!r}")
        unknown = sorted(set(item) - {"uri", "frame_index", "strength"})
        if unknown:
            raise RowError(where, f"unknown key(s) {unknown}; allowed: uri, frame_index, strength")
        uri = item.get("uri")
        if not isinstance(uri, str) or not uri:
            raise RowError(f"{where}.uri", "a non-empty string is required")
        try:
            media_kind(uri)
        except ValueError as e:
            raise RowError(f"{where}.uri", str(e)) from None
        index = 0 if _missing(item.get("frame_index")) else _as_int(f"{where}.frame_index", item["frame_index"])
        if not 0 <= index < num_frames:
            raise RowError(f"{where}.frame_index", f"{index} is outside the video's frames [0, {num_frames})")
        strength = 1.0 if _missing(item.get("strength")) else _as_float(f"{where}.strength", item["strength"])
        if not 0.0 <= strength <= 1.0:
            raise RowError(f"{where}.strength", f"must be in [0, 1], got {strength}")
        try:
            uri = resolve_uri(uri, base)
        except ValueError as e:
            raise RowError(f"{where}.uri", str(e)) from None
        out.append(ConditionSpec(uri, index, strength))
    return tuple(out)


def validate_id(value: Any) -> str:
    # fullmatch: with match(), "$" also matches before a trailing newline, so "abc\n" would pass
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value) or value in (".", ".."):
        raise RowError("id", f"must match [A-Za-z0-9._-]{{1,128}} and not be '.' or '..', got {value!r}")
    return value


def validate_row(raw: dict[str, Any], *, defaults: dict[str, Any], frame_rate: float,
                 base_uri: str | None = None) -> Row:  # fmt: skip
    """A raw mapping -> ``Row``. ``defaults`` (``RowDefaults.as_dict()``) fill the optional columns a row leaves
    empty: width/height/num_frames, and negative_prompt and seed where given; ``frame_rate`` is the recipe's."""
    row_id = validate_id(raw.get("id"))
    prompt = raw.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise RowError("prompt", "a non-empty string is required")
    negative = raw.get("negative_prompt")
    if _missing(negative):
        negative = defaults.get("negative_prompt") or ""
    elif not isinstance(negative, str):
        raise RowError("negative_prompt", f"expected a string, got {negative!r}")

    def pick(name: str) -> Any:
        value = raw.get(name)
        return defaults[name] if _missing(value) else value

    width, height = _as_int("width", pick("width")), _as_int("height", pick("height"))
    for name, v in (("width", width), ("height", height)):
        if problem := side_problem(v):
            raise RowError(name, problem)
    num_frames = _as_int("num_frames", pick("num_frames"))
    if problem := frames_problem(num_frames):
        raise RowError("num_frames", problem)
    rate = frame_rate if _missing(raw.get("frame_rate")) else _as_float("frame_rate", raw["frame_rate"])
    if problem := frame_rate_problem(rate):
        raise RowError("frame_rate", problem)
    seed = raw.get("seed")
    if _missing(seed):
        seed = defaults.get("seed")
    seed = derived_seed(row_id) if _missing(seed) else _as_int("seed", seed)
    if not 0 <= seed < SEED_LIMIT:
        raise RowError("seed", f"must satisfy 0 <= seed < 2**63, got {seed}")
    conditions = _conditions(raw.get("conditions"), num_frames, base_uri)
    extra = {k: v for k, v in raw.items() if k not in KNOWN_COLUMNS}
    return Row(id=row_id, prompt=prompt, negative_prompt=negative, width=width, height=height,
               num_frames=num_frames, frame_rate=rate, seed=seed, conditions=conditions, extra=extra)  # fmt: skip
