"""A manifest too big to put row by row goes in as chunks, cut into one-row blocks as the stages take them."""

from __future__ import annotations

import pytest

from ltx_batch import load_job, pipeline
from ltx_batch.io.manifest import manifest_table, write_parquet
from ltx_batch.io.results import read_results
from ltx_batch.io.storage import Storage

pytestmark = pytest.mark.usefixtures("ray_local")


def test_a_chunked_manifest_streams_one_row_per_block_through_split_pools(tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "ROWS_PUT_ONE_BY_ONE", 2)  # a "big" manifest at test size
    monkeypatch.setattr(pipeline, "CHUNK_ROWS", 3)
    rows = [{"id": f"r{i}", "prompt": f"a paper boat number {i}", "seed": i} for i in range(7)]
    write_parquet(manifest_table(rows), str(tmp_path / "m.parquet"))
    job = load_job({
        "model": {"preset": "ltxv-debug", "dtype": "float32", "device": "cpu"},
        "recipe": {"num_inference_steps": 1},
        "defaults": {"width": 64, "height": 64, "num_frames": 9},
        "input": str(tmp_path / "m.parquet"), "output": str(tmp_path / "out"),
        "pools": {"fusion": {"all_stages": False}},  # rows must cross from stage to stage one by one
    })  # fmt: skip

    blocks = pipeline.input_rows([{"id": r["id"]} for r in rows])
    assert sorted(len(b["id"]) for b in blocks.iter_batches(batch_size=None)) == [1] * 7  # one row per block

    summary = job.run()
    assert (summary.ok, summary.failed) == (7, 0), summary.failures
    _, results = read_results(Storage(str(tmp_path / "out")))
    assert sorted(r["id"] for r in results) == [f"r{i}" for i in range(7)]  # each row once
