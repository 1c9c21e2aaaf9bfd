"""``ltx-batch submit`` against a real Ray head on 127.0.0.1 (Jobs API), and the Python job API."""

from __future__ import annotations

import json
import tempfile

import pytest

from ltx_batch import load_job
from ltx_batch.cli import main as cli_main
from ltx_batch.io.manifest import manifest_table, parquet_from_bytes, write_parquet

BUCKET = "ltx-submit"


@pytest.fixture(scope="module")
def job_spec(s3fs_client):
    s3fs_client.mkdir(BUCKET)
    rows = [{"id": "a", "prompt": "a boat on a lake", "seed": 1}, {"id": "b", "prompt": "snow on a mountain"}]
    write_parquet(manifest_table(rows), f"s3://{BUCKET}/in/manifest.parquet")
    return {
        "name": "submit-e2e",
        "model": {"preset": "ltxv-debug", "dtype": "float32", "device": "cpu"},
        "recipe": {"num_inference_steps": 2},
        "defaults": {"width": 64, "height": 64, "num_frames": 9},
        "input": f"s3://{BUCKET}/in/manifest.parquet",
        "output": f"s3://{BUCKET}/out/submitted",
        "pools": {s: {"num_cpus": 1} for s in ("text_encode", "base_sample", "decode")},
    }


def _latest_results(fs, prefix):
    fs.invalidate_cache()
    name = sorted(fs.ls(f"{BUCKET}/{prefix}/results"))[-1]
    return {r["id"]: r for r in parquet_from_bytes(fs.cat(name)).to_pylist()}


def test_submit_runs_to_completion_and_is_idempotent(ray_cluster, s3fs_client, job_spec, tmp_path, capsys,
                                                     monkeypatch):  # fmt: skip
    job_file = tmp_path / "job.json"
    job_file.write_text(json.dumps(job_spec))
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    tempfile.tempdir = None  # read TMPDIR again
    try:
        assert cli_main(["submit", str(job_file), "--address", ray_cluster, "--wait"]) == 0
    finally:
        tempfile.tempdir = None
    # the uploaded working directory (it holds the storage options) is not left behind on this machine
    assert not any((tmp_path / "tmp").glob("ltx-batch-submit-*"))
    first_id = capsys.readouterr().out.splitlines()[0]
    assert first_id.startswith("ltx-batch-submit-e2e-")
    results = _latest_results(s3fs_client, "out/submitted")
    assert {r["status"] for r in results.values()} == {"ok"}
    videos = {k: s3fs_client.info(k)["ETag"] for k in s3fs_client.find(f"{BUCKET}/out/submitted/videos")}
    assert len(videos) == 2

    # the same work again: a new submission id (retry suffix) that renders nothing
    assert cli_main(["submit", str(job_file), "--address", ray_cluster, "--wait"]) == 0
    second_id = capsys.readouterr().out.splitlines()[0]
    assert second_id == first_id + "-r1"
    assert {r["status"] for r in _latest_results(s3fs_client, "out/submitted").values()} == {"skipped"}
    s3fs_client.invalidate_cache()
    assert {k: s3fs_client.info(k)["ETag"] for k in s3fs_client.find(f"{BUCKET}/out/submitted/videos")} == videos


def test_submit_refuses_local_paths(ray_cluster, job_spec, tmp_path, capsys):
    job_file = tmp_path / "job.json"
    job_file.write_text(json.dumps({**job_spec, "output": str(tmp_path / "out")}))
    assert cli_main(["submit", str(job_file), "--address", ray_cluster]) == 2
    assert "output" in capsys.readouterr().err


def test_python_api_runs_a_job(ray_cluster, s3fs_client, job_spec):
    job = load_job({**job_spec, "output": f"s3://{BUCKET}/out/api"})
    summary = job.run()
    assert (summary.ok, summary.failed, summary.skipped) == (2, 0, 0)
    assert summary.results_path.endswith(".parquet") and s3fs_client.exists(summary.results_path)
    again = job.run()
    assert (again.ok, again.skipped) == (0, 2)
