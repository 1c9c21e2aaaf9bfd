"""The record a row travels as between stages (its tensor columns are packed by ``stages.tensors``).

A record is a flat dict of plain values (Ray Data batches it into columns):

- ``id`` (str), ``row`` (JSON of the validated row, pass-through columns included), ``fingerprint`` (str)
- ``error_stage`` / ``error`` (str; empty while the row is alive; set once, then later stages pass it through)
- ``attempts`` (int), ``timings`` (JSON {stage: seconds}), ``outputs`` (JSON {kind: path}, set by decode)
- ``snapshots`` (JSON {component: revision}): the checkpoint snapshot each stage's models came from
- tensor columns, each a safetensors blob (bytes): ``text`` (embeddings and masks), ``latents``;
  ``generator`` holds the pass generator's state (``torch.Generator.get_state()``), so the random stream
  continues exactly in the next actor.

Blobs keep bfloat16 intact (numpy has no bfloat16) and are a few MB per video; decoded frames never travel.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from ..io.rows import ConditionSpec, Row

TEXT, LATENTS, GENERATOR = "text", "latents", "generator"
JSON_COLUMNS = ("timings", "snapshots", "outputs")  # JSON objects: "{}" when empty, never b""


def blank(column: str) -> str | bytes:
    """A column's empty value: what a failed stage leaves in its outputs."""
    return "{}" if column in JSON_COLUMNS else b""


def _jsonable(value: Any) -> Any:
    """Pass-through values JSON has no type for: arrays as lists, times as ISO 8601, bytes as base64 (decodable,
    where ``str`` gives Python's ``b'...'``), the rest (decimals) as text."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def _record(row_id: str | None, row_json: str, fingerprint: str) -> dict[str, Any]:
    return {
        "id": row_id, "row": row_json, "fingerprint": fingerprint, "error_stage": "", "error": "", "attempts": 0,
        "timings": "{}", "snapshots": "{}", TEXT: b"", LATENTS: b"", GENERATOR: b"", "outputs": "{}",
    }  # fmt: skip


def new_record(row: Row, fingerprint: str) -> dict[str, Any]:
    return _record(row.id, json.dumps({**row.as_dict(), "extra": row.extra}, default=_jsonable), fingerprint)


def failed_record(row_id: Any, stage: str, error: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """A row that failed before it became a ``Row`` (validation): it still yields a result, with its
    pass-through columns (``extra``). A row without an id keeps None (a null in the results table), so it
    is not mistaken for a row whose id is the text "None"; such records never leave the driver."""
    rid = None if row_id is None else str(row_id)
    rec = _record(rid, json.dumps({"id": rid, "extra": extra or {}}, default=_jsonable), "")
    rec.update(error_stage=stage, error=error)
    return rec


def row_of(record: dict[str, Any]) -> Row:
    data = json.loads(record["row"])
    conditions = tuple(ConditionSpec(c["uri"], c["frame_index"], c["strength"]) for c in data.pop("conditions"))
    extra = data.pop("extra")
    return Row(**data, conditions=conditions, extra=extra)


def add_timing(record: dict[str, Any], stage: str, seconds: float) -> None:
    timings = json.loads(record["timings"])
    timings[stage] = round(timings.get(stage, 0.0) + seconds, 4)
    record["timings"] = json.dumps(timings)


def add_snapshots(record: dict[str, Any], snapshots: dict[str, str]) -> None:
    if snapshots:
        record["snapshots"] = json.dumps({**json.loads(record["snapshots"]), **snapshots}, sort_keys=True)


def alive(record: dict[str, Any]) -> bool:
    return not record["error_stage"]
