"""Manifests (Parquet on any fsspec URL) and results tables.

A manifest that breaks the schema (no ``id`` or ``prompt`` column, duplicate ids) fails the whole job before
anything renders (``ManifestError``); a row that breaks a rule fails alone later (``io/rows.py``).
"""

from __future__ import annotations

import posixpath
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ..spec import SpecError

CONDITION_TYPE = pa.list_(pa.struct([("uri", pa.string()), ("frame_index", pa.int32()), ("strength", pa.float32())]))
MANIFEST_SCHEMA = {
    "id": pa.string(),
    "prompt": pa.string(),
    "negative_prompt": pa.string(),
    "width": pa.int64(),
    "height": pa.int64(),
    "num_frames": pa.int64(),
    "frame_rate": pa.float64(),
    "seed": pa.int64(),
    "conditions": CONDITION_TYPE,
}

RESULTS_SCHEMA = pa.schema([
    ("id", pa.string()), ("status", pa.string()), ("error_stage", pa.string()), ("error", pa.string()),
    ("attempts", pa.int32()), ("seed", pa.int64()), ("fingerprint", pa.string()),
    ("paths", pa.map_(pa.string(), pa.string())), ("seconds", pa.map_(pa.string(), pa.float64())),
])  # fmt: skip


class ManifestError(SpecError):
    """The manifest as a whole is unusable (exit 2); the message names the problem."""


def parquet_from_bytes(data: bytes) -> pa.Table:
    """Parquet bytes -> table, decoded on this thread: a manifest is small, and pyarrow's pool is one more set
    of native threads to tear down at exit (with torch loaded that teardown sometimes aborts the process;
    ``cli.entry`` leaves without it)."""
    return pq.read_table(pa.BufferReader(data), use_threads=False)


def manifest_base(url: str) -> str:
    """The folder relative condition URIs resolve against."""
    return posixpath.dirname(url.rstrip("/"))


def read_manifest(url: str, storage_options: dict | None = None) -> list[dict[str, Any]]:
    """All rows of a Parquet manifest as dicts; schema problems raise ``ManifestError``."""
    return read_manifest_table(url, storage_options).to_pylist()


def read_manifest_table(url: str, storage_options: dict | None = None) -> pa.Table:
    """A Parquet manifest as Arrow reads it (its schema: the pass-through columns' types for the results),
    checked for the required columns and duplicate ids."""
    import fsspec

    from .storage import StorageError, retrying

    def fetch() -> bytes:
        with fsspec.open(url, "rb", **(storage_options or {})) as fh:
            return fh.read()

    try:
        # transient failures retried; a denied or failing read is a StorageError naming the URL (exit 1)
        data = retrying("cannot read input", url, fetch)
    except FileNotFoundError:
        raise ManifestError(f"input: manifest {url!r} not found") from None
    except StorageError as e:
        if isinstance(e.__cause__, (IsADirectoryError, NotADirectoryError)):  # the job's mistake, not storage's
            raise ManifestError(f"input: {url!r} is no file; name one Parquet file") from None
        raise
    try:
        table = parquet_from_bytes(data)
    except (pa.ArrowInvalid, OSError) as e:
        raise ManifestError(f"input: {url!r} is not a readable Parquet file: {e}") from None
    missing = [c for c in ("id", "prompt") if c not in table.column_names]
    if missing:
        raise ManifestError(f"manifest {url!r}: missing required column(s) {missing}; columns: {table.column_names}")
    seen: set = set()
    # a row without an id (null or empty) fails alone (validation names the field); it is no duplicate of another
    ids = table.column("id").to_pylist()
    dups = sorted({str(i) for i in ids if i not in (None, "") and (i in seen or seen.add(i))})
    if dups:
        shown = ", ".join(repr(d) for d in dups[:10]) + (f" (+{len(dups) - 10} more)" if len(dups) > 10 else "")
        raise ManifestError(f"manifest {url!r}: duplicate id(s): {shown}")
    return table


def manifest_table(rows: list[dict[str, Any]]) -> pa.Table:
    """Rows -> a Parquet-ready table with the contract's column types (other columns inferred)."""
    columns: dict[str, list] = {}
    for r in rows:
        for k in r:
            columns.setdefault(k, [])
    for k in columns:
        columns[k] = [r.get(k) for r in rows]
    arrays, fields = [], []
    for k, values in columns.items():
        typ = MANIFEST_SCHEMA.get(k)
        try:
            arrays.append(pa.array(values, type=typ) if typ is not None else pa.array(values))
        except (pa.ArrowException, OverflowError, TypeError, ValueError) as e:
            raise ManifestError(_column_problem(k, typ, rows, e)) from None
        fields.append(k)
    return pa.Table.from_arrays(arrays, names=fields)


def _column_problem(name: str, typ: pa.DataType | None, rows: list[dict[str, Any]], error: Exception) -> str:
    """Which row's value keeps column ``name`` from being one Parquet column (the first that fails alone, or,
    for an inferred column, the first whose type differs from the first row's)."""
    want = f"{typ}" if typ is not None else "one type in every row"
    first_type = None
    for r in rows:
        value = r.get(name)
        if value is None:
            continue
        try:
            got = pa.array([value], type=typ).type if typ is not None else pa.array([value]).type
        except (pa.ArrowException, OverflowError, TypeError, ValueError):
            return f"column {name!r}: row {r.get('id')!r} holds {value!r}, which is no {want}"
        if typ is None:
            if first_type is None:
                first_type = got
            elif got != first_type:
                return f"column {name!r}: row {r.get('id')!r} holds {value!r} ({got}), other rows {first_type}"
    return f"column {name!r}: cannot be stored as {want}: {error}"


def write_parquet(table: pa.Table, url: str, storage_options: dict | None = None) -> None:
    import io

    import fsspec

    buf = io.BytesIO()
    pq.write_table(table, buf)
    fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
    parent = posixpath.dirname(path)
    if parent:
        fs.makedirs(parent, exist_ok=True)
    fs.pipe_file(path, buf.getvalue())
