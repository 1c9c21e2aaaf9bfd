"""Scheduled dataset generation: a growing manifest rendered into the same output renders only new rows."""

from __future__ import annotations

import pytest

from ltx_batch import load_job
from ltx_batch.io.manifest_sources import build_manifest

pytestmark = pytest.mark.usefixtures("ray_local")


def test_growing_manifest_renders_only_new_rows(tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a lighthouse in fog\n")
    manifest = tmp_path / "manifest.parquet"
    spec = {
        "name": "nightly",
        "model": {"preset": "ltxv-debug", "dtype": "float32", "device": "cpu"},
        "recipe": {"num_inference_steps": 1},
        "defaults": {"width": 64, "height": 64, "num_frames": 9},
        "input": str(manifest),
        "output": str(tmp_path / "dataset"),
        "save": ["mp4", "frames"],
    }
    build_manifest(str(prompts), str(manifest))
    night1 = load_job(spec).run()
    assert (night1.ok, night1.skipped) == (1, 0)
    first_video = next((tmp_path / "dataset" / "videos").iterdir())
    stamp = first_video.stat().st_mtime_ns

    prompts.write_text(prompts.read_text() + "waves at night\n")  # the nightly source grows
    build_manifest(str(prompts), str(manifest))
    night2 = load_job(spec).run()
    assert (night2.ok, night2.skipped, night2.failed) == (1, 1, 0)
    assert first_video.stat().st_mtime_ns == stamp  # the old row's objects were not rewritten
    assert len(list((tmp_path / "dataset" / "videos").iterdir())) == 2
    assert len(list((tmp_path / "dataset" / "results").iterdir())) == 2
