"""The driver's plan without Ray: invalid rows, finished rows (one bulk metadata read), changed recipes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ltx_batch import load_job
from ltx_batch.fingerprint import fingerprint
from ltx_batch.io.manifest import manifest_table, write_parquet
from ltx_batch.io.metadata import metadata_key, read_metadata_many
from ltx_batch.io.rows import validate_row
from ltx_batch.io.storage import Storage
from ltx_batch.pipeline import FingerprintMismatch, plan

ROWS = [{"id": "new", "prompt": "a"}, {"id": "bad", "prompt": "b", "width": 33},
        {"id": "done", "prompt": "c"}, {"id": "retry", "prompt": "d"}]  # fmt: skip


def _job(tmp_path, steps=2):
    write_parquet(manifest_table(ROWS), str(tmp_path / "m.parquet"))
    return load_job({"model": {"preset": "ltxv-debug", "device": "cpu"}, "recipe": {"num_inference_steps": steps},
                     "input": str(tmp_path / "m.parquet"), "output": str(tmp_path / "out")})  # fmt: skip


def _finish(storage, job, raw, status="ok"):
    row = validate_row(raw, defaults={"width": job.defaults.width, "height": job.defaults.height,
                                      "num_frames": job.defaults.num_frames}, frame_rate=job.recipe.frame_rate)  # fmt: skip
    meta = {"id": row.id, "status": status, "fingerprint": fingerprint(job, row),
            "outputs": {"mp4": {"path": f"videos/{row.id}.mp4"}}}  # fmt: skip
    storage.write_bytes(metadata_key(row.id), json.dumps(meta).encode())


def test_plan_skips_finished_rows_and_fails_invalid_ones(tmp_path):
    job = _job(tmp_path)
    storage = Storage(job.output)
    _finish(storage, job, ROWS[2])
    _finish(storage, job, ROWS[3], status="failed")  # not finished: rendered again
    todo, done, _ = plan(job, storage)
    assert sorted(r["id"] for r in todo) == ["new", "retry"]
    by_id = {r["id"]: r for r in done}
    assert by_id["bad"]["error_stage"] == "validate" and "width" in by_id["bad"]["error"]
    assert by_id["done"]["status"] == "skipped" and json.loads(by_id["done"]["outputs"]) == {"mp4": "videos/done.mp4"}


def test_a_changed_recipe_names_the_finished_rows(tmp_path):
    storage = Storage(str(tmp_path / "out"))
    _finish(storage, _job(tmp_path, steps=2), ROWS[2])
    changed = _job(tmp_path, steps=3)
    with pytest.raises(FingerprintMismatch, match="done"):
        plan(changed, storage)
    todo, _, _ = plan(changed, storage, overwrite=True)
    assert sorted(r["id"] for r in todo) == ["done", "new", "retry"]


def test_bulk_metadata_read_omits_missing_rows(tmp_path):
    for root in (str(tmp_path / "local"), "memory://ltx-plan-test/out"):
        storage = Storage(root)
        storage.write_bytes(metadata_key("a"), b'{"status": "ok"}')
        assert read_metadata_many(storage, ["a", "missing"]) == {"a": {"status": "ok"}}
        assert read_metadata_many(storage, []) == {}


def test_bulk_read_takes_keys_literally_and_skips_torn_metadata(tmp_path):
    storage = Storage(str(tmp_path / "out[1]?"))  # glob characters in the output root
    storage.write_bytes(metadata_key("a"), b'{"status": "ok"}')
    storage.write_bytes(metadata_key("torn"), b'{"status": "o')
    assert read_metadata_many(storage, ["a", "torn", "missing"]) == {"a": {"status": "ok"}}
    assert read_metadata_many(storage, ["a", "torn"], chunk=1) == {"a": {"status": "ok"}}


def test_pass_through_columns_reach_the_results_table(tmp_path):
    from ltx_batch.io.results import read_results, write_results
    from ltx_batch.pipeline import RunSummary

    rows = [{"id": "a", "prompt": "x", "label": "cat", "score": 0.5, "status": "keep", "tags": ["a"]},
            {"id": "bad", "prompt": "y", "width": 33, "label": "dog", "score": None, "status": "drop",
             "tags": ["b", "c"]},
            {"id": "c", "prompt": "z", "label": None, "score": 2.0, "status": None, "tags": None}]  # fmt: skip
    write_parquet(manifest_table(rows), str(tmp_path / "m.parquet"))
    job = load_job({"model": {"preset": "ltxv-debug", "device": "cpu"}, "input": str(tmp_path / "m.parquet"),
                    "output": str(tmp_path / "out")})  # fmt: skip
    storage = Storage(job.output)
    todo, done, _ = plan(job, storage)
    for record in todo:  # as the decode stage leaves a rendered row
        record["outputs"] = json.dumps({"mp4": f"videos/{record['id']}.mp4"})
    summary = RunSummary(run_id="r1", output=job.output, total=3)
    write_results(storage, job, summary, todo + done)
    _, results = read_results(storage, "r1")
    by_id = {r["id"]: r for r in results}
    assert [by_id[i]["label"] for i in ("a", "bad", "c")] == ["cat", "dog", None]  # the invalid row keeps its labels
    assert [by_id[i]["score"] for i in ("a", "bad", "c")] == [0.5, None, 2.0]
    # a label named like a results column keeps both: the run's status and the manifest's value
    assert by_id["bad"]["status"] == "failed" and by_id["bad"]["extra.status"] == "drop"
    assert by_id["a"]["status"] == "ok" and by_id["a"]["extra.status"] == "keep"
    assert [by_id[i]["tags"] for i in ("a", "bad", "c")] == [["a"], ["b", "c"], None]


def test_pass_through_columns_keep_the_manifest_types(tmp_path):
    """Timestamps, decimals, bytes and unsigned integers cross Ray as JSON text; the results table takes their
    values and types from the manifest (nanoseconds and the decimal's scale included)."""
    import datetime
    import decimal

    import pyarrow as pa
    import pyarrow.parquet as pq

    from ltx_batch.io.results import write_results
    from ltx_batch.pipeline import RunSummary

    when = datetime.datetime(2026, 11, 24, 12, 30)
    table = pa.table({"id": ["a", "bad"], "prompt": ["x", "y"], "width": pa.array([None, 33], pa.int64()),
                      "made": pa.array([when, when], pa.timestamp("us")),
                      "price": pa.array([decimal.Decimal("1.25"), None], pa.decimal128(5, 2)),
                      "blob": pa.array([b"\x00\xff", b"\x01"], pa.binary()),
                      "ns": pa.array([1_700_000_000_123_456_789, None], pa.timestamp("ns", tz="UTC")),
                      "count": pa.array([2**63 + 5, 1], pa.uint64()),
                      "clock": pa.array([1_000_000_123, None], pa.time64("ns"))})  # fmt: skip
    pq.write_table(table, tmp_path / "m.parquet")
    job = load_job({"model": {"preset": "ltxv-debug", "device": "cpu"}, "input": str(tmp_path / "m.parquet"),
                    "output": str(tmp_path / "out")})  # fmt: skip
    storage = Storage(job.output)
    todo, done, extras = plan(job, storage)
    summary = RunSummary(run_id="r1", output=job.output, total=2)
    write_results(storage, job, summary, todo + done, extras=extras)
    got = pq.read_table(tmp_path / "out" / "results" / "r1.parquet")
    assert got.schema.field("made").type == pa.timestamp("us") and got.schema.field("blob").type == pa.binary()
    assert got.schema.field("price").type == pa.decimal128(5, 2)
    assert got.schema.field("ns").type == pa.timestamp("ns", tz="UTC") and got.schema.field("count").type == pa.uint64()
    assert got.column("ns").cast(pa.int64()).to_pylist() == [1_700_000_000_123_456_789, None]
    assert got.column("count").to_pylist() == [2**63 + 5, 1]
    assert got.column("clock").cast(pa.int64()).to_pylist() == [1_000_000_123, None]  # Python's time: us only
    by_id = {r["id"]: r for r in got.to_pylist()}
    assert by_id["a"]["made"] == when and by_id["a"]["blob"] == b"\x00\xff"
    assert by_id["a"]["price"] == decimal.Decimal("1.25") and by_id["bad"]["blob"] == b"\x01"  # invalid rows too
    # what the records (and so metadata/{id}.json) carry: JSON that decodes back to the values
    extra = json.loads(todo[0]["row"])["extra"]
    assert extra["blob"] == "AP8=" and extra["made"] == "2026-11-24T12:30:00" and extra["price"] == "1.25"


def test_rows_without_an_id_fail_alone_not_as_duplicates(tmp_path):
    rows = [{"id": None, "prompt": "a"}, {"id": None, "prompt": "b"}, {"id": "ok", "prompt": "c"}]
    write_parquet(manifest_table(rows), str(tmp_path / "m.parquet"))
    job = load_job({"model": {"preset": "ltxv-debug", "device": "cpu"}, "input": str(tmp_path / "m.parquet"),
                    "output": str(tmp_path / "out")})  # fmt: skip
    todo, done, _ = plan(job, Storage(job.output))
    assert [r["id"] for r in todo] == ["ok"]
    assert len(done) == 2 and all(r["error_stage"] == "validate" and "id" in r["error"] for r in done)


def test_empty_ids_fail_alone_too_and_validate_names_a_missing_one(tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ltx_batch.cli import main

    pq.write_table(pa.table({"id": ["", "", None, "ok"], "prompt": ["a", "b", "c", "d"]}), tmp_path / "m.parquet")
    job = load_job({"model": {"preset": "ltxv-debug", "device": "cpu"}, "input": str(tmp_path / "m.parquet"),
                    "output": str(tmp_path / "out")})  # fmt: skip
    todo, done, _ = plan(job, Storage(job.output))  # not "duplicate id(s): " for the whole manifest
    assert [r["id"] for r in todo] == ["ok"] and sorted(str(r["id"]) for r in done) == ["", "", "None"]
    assert main(["validate", "--input", str(tmp_path / "m.parquet"), str(Path(__file__).resolve().parents[2] / "jobs" / "demo.yaml")]) == 3
    err = capsys.readouterr().err
    assert "1 valid, 3 invalid" in err and "(no id): id:" in err and "'': id:" in err


def test_failed_rows_are_reported_when_the_results_cannot_be_written(tmp_path, monkeypatch, caplog):
    """Storage down past the retries at the end of a run: the error still lists every failed row."""
    from ltx_batch.io import storage as storage_mod
    from ltx_batch.io.storage import StorageError
    from ltx_batch.pipeline import run_job

    rows = [{"id": "w", "prompt": "x", "width": 33}, {"id": "f", "prompt": "y", "num_frames": 16}]
    write_parquet(manifest_table(rows), str(tmp_path / "m.parquet"))
    job = load_job({"model": {"preset": "ltxv-debug", "device": "cpu"}, "input": str(tmp_path / "m.parquet"),
                    "output": str(tmp_path / "out")})  # fmt: skip
    real = storage_mod.Storage._write

    def down(self, key, data):
        if key.startswith("results/"):
            raise ConnectionRefusedError("storage is down")
        return real(self, key, data)

    monkeypatch.setattr(storage_mod.Storage, "_write", down)
    monkeypatch.setattr(storage_mod, "RETRY_SECONDS", 0.0)
    with pytest.raises(StorageError, match="cannot write .*results/"):
        run_job(job, progress=False)  # both rows fail validation: no Ray needed
    text = caplog.text
    assert "results not written; 0 ok, 2 failed" in text
    assert "failed w [validate]: width" in text and "failed f [validate]: num_frames" in text


def test_pass_through_columns_of_rows_without_a_usable_id(tmp_path, capsys):
    """A null id must neither take another row's labels nor degrade a typed column, nor read as the id "None"."""
    import datetime

    import pyarrow as pa
    import pyarrow.parquet as pq

    from ltx_batch.io.results import write_results
    from ltx_batch.pipeline import RunSummary

    when = datetime.datetime(2026, 1, 2)
    table = pa.table({"id": ["None", None, "ok"], "prompt": ["x", "y", "z"], "label": ["mine", "theirs", "third"],
                      "ts": pa.array([when] * 3, pa.timestamp("us")),
                      "big": pa.array([2**63, 1, 2], pa.uint64())})  # fmt: skip
    pq.write_table(table, tmp_path / "m.parquet")
    job = load_job({"model": {"preset": "ltxv-debug", "device": "cpu"}, "input": str(tmp_path / "m.parquet"),
                    "output": str(tmp_path / "out")})  # fmt: skip
    storage = Storage(job.output)
    todo, done, extras = plan(job, storage)
    write_results(storage, job, RunSummary(run_id="r1", output=job.output, total=3), todo + done, extras=extras)
    got = pq.read_table(tmp_path / "out" / "results" / "r1.parquet")
    assert got.schema.field("ts").type == pa.timestamp("us")
    labels = sorted((r["status"], r["label"]) for r in got.to_pylist())
    assert labels == [("failed", "theirs"), ("ok", "mine"), ("ok", "third")]
    assert got.column("id").to_pylist() == ["None", "ok", None]  # a null stays null, sorted last
    from ltx_batch.cli import main
    from ltx_batch.report import write_report

    assert main(["status", job.output]) == 3
    assert "failed (no id) [validate]: id" in capsys.readouterr().out
    html = (tmp_path / "out" / write_report(storage, RunSummary(run_id="r1", output=job.output)).rsplit("/", 1)[-1])
    assert "<td>(no id)</td>" in html.read_text()
    assert got.schema.field("big").type == pa.uint64()  # beyond int64: kept as the manifest's uint64
    assert got.column("big").to_pylist() == [2**63, 2, 1]  # ids "None", "ok", null


def test_without_the_manifest_pass_through_values_are_inferred_then_json_text():
    import pyarrow as pa

    from ltx_batch.io.results import extra_columns

    rows = [{"extra": {"empty": {}, "n": "7", "big": 2**63}}, {"extra": {"empty": {}, "n": "8", "big": 1}}]
    got = dict(zip(*extra_columns(rows)))
    assert got["n"].to_pylist() == ["7", "8"]
    assert got["empty"].type == pa.string() and got["empty"].to_pylist() == ["{}", "{}"]  # no Parquet type
    assert got["big"].to_pylist() == [str(2**63), "1"]  # beyond int64: JSON text
