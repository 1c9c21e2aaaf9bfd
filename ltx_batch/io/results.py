"""Run results: ``results/{run_id}.parquet`` (one row per manifest row) and ``runs/{run_id}/job.json``.

Results columns: id, status (ok | failed | skipped), error_stage, error, attempts, seed, fingerprint,
paths (kind -> key under output), seconds (stage -> seconds), then the manifest's pass-through columns
(dataset labels) under their own names, or as ``extra.<name>`` where a name is one of the columns before.
The job file holds the resolved job without its storage options, plus the run summary.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from .manifest import RESULTS_SCHEMA, parquet_from_bytes
from .rows import id_order
from .storage import Storage


# A driver-side record's row number in the manifest (rows that end on the driver: their id may be null or
# shared with a valid row, so it cannot say which manifest row they were)
MANIFEST_ROW = "_manifest_row"


@dataclass
class PassThrough:
    """The manifest's columns outside the contract, as Arrow read them, and each valid id's manifest row. The
    results take these columns from here by row (the records carry them as JSON, and through Python values
    a ``time64[ns]`` would lose its nanoseconds), so each arrives with the manifest's type and value."""

    table: pa.Table  # the pass-through columns only
    rows: dict[str, int] = field(default_factory=dict)  # valid row id -> manifest row number

    def columns_for(self, results: list[dict[str, Any]]) -> tuple[list[str], list[pa.ChunkedArray]]:
        """The columns in ``results``' order (null where a result has no manifest row)."""
        at = [r["manifest_row"] if r["manifest_row"] is not None else self.rows.get(r["id"]) for r in results]
        taken = self.table.take(pa.array(at, pa.int64()))
        return taken.column_names, taken.columns


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def result_row(record: dict[str, Any]) -> dict[str, Any]:
    record = {k: _plain(v) for k, v in record.items()}
    status = record.get("status") or ("failed" if record["error_stage"] else "ok")
    row = json.loads(record["row"])
    return {
        "id": None if record["id"] is None else str(record["id"]),
        "status": status,
        "error_stage": record["error_stage"] or None,
        "error": record["error"] or None,
        "attempts": int(record.get("attempts") or 0),
        "seed": row.get("seed"),
        "fingerprint": record.get("fingerprint") or None,
        "paths": json.loads(record.get("outputs") or "{}") if status != "failed" else {},
        "seconds": json.loads(record.get("timings") or "{}"),
        "extra": row.get("extra") or {},
        "manifest_row": record.get(MANIFEST_ROW),
    }


def extra_columns(rows: list[dict[str, Any]]) -> tuple[list[str], list[pa.Array]]:
    """The pass-through columns of ``rows`` from the values the records carry (their union, in first-seen
    order; missing values null), each typed as Arrow infers it, or as JSON text when that fails (a column of
    empty lists only, say). Without the manifest (``PassThrough``) at hand, this is what is left."""
    names: dict[str, None] = {}
    for r in rows:
        names.update(dict.fromkeys(r["extra"]))
    out_names, arrays = [], []
    for name in names:
        values = [r["extra"].get(name) for r in rows]
        try:
            array = pa.array(values)
            pq.write_table(pa.table({name: array.slice(0, 1)}), io.BytesIO())  # a type Parquet can hold?
        except (pa.ArrowException, TypeError, OverflowError, ValueError):  # a struct of no fields, a uint64 >= 2**63
            array = pa.array([None if v is None else json.dumps(v, default=str) for v in values], pa.string())
        out_names.append(name)
        arrays.append(array)
    return out_names, arrays


def write_results(storage: Storage, job, summary, records: list[dict[str, Any]], *,
                  extras: PassThrough | None = None) -> None:  # fmt: skip
    """Fill ``summary`` from ``records`` and write the results table and the run's job file. The pass-through
    columns come from ``extras`` (the manifest's, from ``pipeline.plan``) when given, else from the values
    the records carried as JSON."""
    rows = [result_row(r) for r in records]
    rows.sort(key=lambda r: id_order(r["id"]))
    summary.ok = sum(r["status"] == "ok" for r in rows)
    summary.failed = sum(r["status"] == "failed" for r in rows)
    summary.skipped = sum(r["status"] == "skipped" for r in rows)
    totals: dict[str, float] = {}
    for r in rows:
        if r["status"] == "ok":
            for stage, s in r["seconds"].items():
                totals[stage] = round(totals.get(stage, 0.0) + s, 3)
    summary.stage_seconds = totals
    summary.failures = [{"id": r["id"], "error_stage": r["error_stage"], "error": r["error"]}
                        for r in rows if r["status"] == "failed"]  # fmt: skip
    table = pa.Table.from_pylist(
        [{**r, "paths": list(r["paths"].items()), "seconds": list(r["seconds"].items())} for r in rows],
        schema=RESULTS_SCHEMA,
    )
    for name, array in zip(*(extras.columns_for(rows) if extras is not None else extra_columns(rows))):
        table = table.append_column(f"extra.{name}" if name in RESULTS_SCHEMA.names else name, array)
    buf = io.BytesIO()
    pq.write_table(table, buf)
    key = f"results/{summary.run_id}.parquet"
    storage.write_bytes(key, buf.getvalue())
    summary.results_path = storage.url(key)
    run = {"job": job.to_dict(), "summary": summary.as_dict()}
    storage.write_bytes(f"runs/{summary.run_id}/job.json", json.dumps(run, indent=2, default=str).encode())


def read_results(storage: Storage, run_id: str | None = None) -> tuple[str, list[dict[str, Any]]]:
    """The rows of one run's results (the latest run when ``run_id`` is None)."""
    names = sorted(n for n in storage.listdir("results") if n.endswith(".parquet"))
    if not names:
        raise FileNotFoundError(f"no results under {storage.url('results')}")
    name = f"{run_id}.parquet" if run_id else names[-1]
    if name not in names:
        latest = ", ".join(n.removesuffix(".parquet") for n in names[-5:])
        raise FileNotFoundError(f"no run {run_id!r} under {storage.url('results')} (latest runs: {latest})")
    table = parquet_from_bytes(storage.read_bytes(f"results/{name}"))
    rows = table.to_pylist()
    for r in rows:
        r["paths"] = dict(r["paths"] or [])
        r["seconds"] = dict(r["seconds"] or [])
    return name.removesuffix(".parquet"), rows
