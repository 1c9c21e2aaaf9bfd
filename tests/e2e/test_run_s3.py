"""``ltx-batch run`` on a real local Ray against a real S3 endpoint (moto's server on loopback)."""

from __future__ import annotations

import io
import json
import tempfile

import numpy as np
import pytest
from PIL import Image

from ltx_batch import load_job, render_one
from ltx_batch.cli import main as cli_main
from ltx_batch.io.manifest import manifest_table, parquet_from_bytes, write_parquet
from ltx_batch.io.video import read_video

from ..conftest import frames_close

pytestmark = pytest.mark.usefixtures("ray_local")

BUCKET = "ltx-e2e"


@pytest.fixture(scope="module")
def bucket(s3fs_client):
    s3fs_client.mkdir(BUCKET)
    img = (np.random.default_rng(1).random((40, 60, 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    s3fs_client.pipe(f"{BUCKET}/in/media/card.png", buf.getvalue())
    rows = [
        {"id": "good-1", "prompt": "a cat on a street", "seed": 3},
        {"id": "good-2", "prompt": "the card comes alive", "frame_rate": 24,
         "conditions": [{"uri": "media/card.png", "frame_index": 0, "strength": 1.0}]},
        {"id": "bad-size", "prompt": "odd width", "width": 100},
        {"id": "../evil", "prompt": "tries to escape the output prefix"},
        {"id": "no-media", "prompt": "missing file", "conditions": [{"uri": "media/missing.png", "frame_index": 0}]},
    ]  # fmt: skip
    write_parquet(manifest_table(rows), f"s3://{BUCKET}/in/manifest.parquet")
    return s3fs_client


@pytest.fixture()
def job_file(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text(json.dumps({
        "name": "e2e",
        "model": {"preset": "ltxv-debug", "dtype": "float32", "device": "cpu"},
        "recipe": {"num_inference_steps": 2},
        "defaults": {"width": 64, "height": 64, "num_frames": 9},
        "input": f"s3://{BUCKET}/in/manifest.parquet",
        "save": ["mp4", "latents", "frames"],
        "pools": {s: {"num_cpus": 1} for s in ("text_encode", "base_sample", "decode")},
    }))  # fmt: skip
    return path


def _results(fs, prefix):
    fs.invalidate_cache()
    names = sorted(fs.ls(f"{BUCKET}/{prefix}/results"))
    table = parquet_from_bytes(fs.cat(names[-1]))
    return {r["id"]: r for r in table.to_pylist()}


def test_run_renders_good_rows_fails_bad_ones_and_resumes(bucket, job_file, tmp_path, capsys):
    fs = bucket
    out = f"s3://{BUCKET}/out/run1"
    assert cli_main(["run", str(job_file), "--output", out]) == 3  # some rows failed
    capsys.readouterr()

    results = _results(fs, "out/run1")
    assert set(results) == {"good-1", "good-2", "bad-size", "../evil", "no-media"}
    assert results["good-1"]["status"] == "ok" and results["good-2"]["status"] == "ok"
    assert (results["bad-size"]["error_stage"], "width") == ("validate", results["bad-size"]["error"][:5])
    assert results["../evil"]["error_stage"] == "validate" and results["../evil"]["error"].startswith("id")
    assert results["no-media"]["error_stage"] == "base_sample"
    assert "conditions[0].uri" in results["no-media"]["error"] and "FileNotFoundError" in results["no-media"]["error"]

    # everything written lives under the output prefix (or is the test's own input)
    keys = [k for k in fs.find(BUCKET)]
    assert all(k.startswith((f"{BUCKET}/out/run1/", f"{BUCKET}/in/")) for k in keys), keys
    for rid, rate in (("good-1", 25), ("good-2", 24)):
        with tempfile.NamedTemporaryFile(suffix=".mp4") as fh:
            fh.write(fs.cat(f"{BUCKET}/out/run1/videos/{rid}.mp4"))
            fh.flush()
            frames, meta = read_video(fh.name)
        assert frames.shape == (9, 64, 64, 3) and meta["fps"] == rate
        meta = json.loads(fs.cat(f"{BUCKET}/out/run1/metadata/{rid}.json"))
        assert meta["status"] == "ok" and meta["outputs"]["latents"]["path"] == f"latents/{rid}.safetensors"
        assert "AWS" not in json.dumps(meta) and "testing" not in json.dumps(meta)
        # every stage's seconds, the writing stage's included (written before the metadata itself)
        assert {"text_encode", "base_sample", "decode"} <= set(meta["seconds"]), meta["seconds"]
        assert all(v > 0 for v in meta["seconds"].values()), meta["seconds"]
    assert not fs.exists(f"{BUCKET}/out/run1/videos/bad-size.mp4")

    # the same row renders the same through run (Ray actors) and render (in-process)
    local = load_job(str(job_file), output=str(tmp_path / "local"))
    assert render_one(local, {"id": "good-1", "prompt": "a cat on a street", "seed": 3}).ok
    frames_close(np.load(io.BytesIO(fs.cat(f"{BUCKET}/out/run1/frames/good-1.npy"))),
                 np.load(tmp_path / "local" / "frames" / "good-1.npy"), max_tol=1e-5, mean_tol=1e-6)

    # re-run: finished rows are skipped and their objects untouched; failed rows are tried again
    fs.invalidate_cache()
    before = {k: fs.info(k)["ETag"] for k in fs.find(f"{BUCKET}/out/run1/videos")}
    assert cli_main(["run", str(job_file), "--output", out]) == 3
    again = _results(fs, "out/run1")
    assert again["good-1"]["status"] == "skipped" and again["good-2"]["status"] == "skipped"
    assert again["no-media"]["status"] == "failed"
    assert {k: fs.info(k)["ETag"] for k in fs.find(f"{BUCKET}/out/run1/videos")} == before

    # a changed recipe over finished rows is an error naming them, unless --overwrite
    capsys.readouterr()
    code = cli_main(["run", str(job_file), "--output", out, "--set", "recipe.num_inference_steps=3"])
    err = capsys.readouterr().err
    assert code == 2 and "good-1" in err and "--overwrite" in err


def test_status_reports_the_latest_run(bucket, job_file, capsys):
    out = f"s3://{BUCKET}/out/status"
    cli_main(["run", str(job_file), "--output", out])
    capsys.readouterr()
    assert cli_main(["status", out]) == 3
    text = capsys.readouterr().out
    assert "2 ok, 3 failed" in text and "bad-size" in text


def test_an_output_that_cannot_be_written_fails_before_rendering(bucket, job_file, capsys):
    """No such bucket: exit 1 naming the URL, before Ray renders anything (not after every row did)."""
    out = "s3://ltx-no-such-bucket/out"
    assert cli_main(["run", str(job_file), "--output", out]) == 1
    err = capsys.readouterr().err
    assert f"cannot write {out}/runs/" in err and "rows done" not in err, err
