"""Multi-scale on Ray, split into pools or fused: the same frames as in-process ``render``."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ltx_batch import load_job, render_one
from ltx_batch.io.manifest import manifest_table, write_parquet

from ..conftest import frames_close

pytestmark = pytest.mark.usefixtures("ray_local")


@pytest.mark.parametrize("fusion", [
    {},  # without GPUs: every stage in one actor (all_stages)
    {"all_stages": False},  # five pools
    {"base_refine": True, "all_stages": False},
    {"refine_decode": True, "all_stages": False},
    {"base_refine": True, "refine_decode": True, "all_stages": False},
])
def test_fused_multiscale_run_matches_render(tmp_path, fusion):
    write_parquet(manifest_table([{"id": "m", "prompt": "a harbour at dawn", "seed": 5}]),
                  str(tmp_path / "manifest.parquet"))  # fmt: skip
    spec = {
        "model": {"preset": "ltxv-debug", "upsampler": "ltxv-debug-upsampler", "dtype": "float32", "device": "cpu"},
        "recipe": {"num_inference_steps": 2, "multiscale": {"downscale": 0.5, "adain_factor": 1.0,
                                                             "refine": {"num_inference_steps": 3, "denoise_strength": 0.5}}},
        "defaults": {"width": 128, "height": 128, "num_frames": 9},
        "input": str(tmp_path / "manifest.parquet"),
        "save": ["frames"],
        "pools": {"fusion": fusion},
    }  # fmt: skip
    summary = load_job({**spec, "output": str(tmp_path / "run")}).run()
    assert (summary.ok, summary.failed) == (1, 0), summary.failures
    if not fusion:  # the CPU default really ran every stage in one actor
        from ray.util.state import list_actors

        names = {a.class_name for a in list_actors(limit=10_000, raise_on_missing_output=False)}
        assert any("TextEncodeBaseSampleLatentUpsampleRefineDecodeStage" in n for n in names), names
    assert render_one(load_job({**spec, "output": str(tmp_path / "render")}), {"id": "m", "prompt": "a harbour at dawn",
                                                                               "seed": 5}).ok  # fmt: skip
    frames_close(np.load(tmp_path / "run" / "frames" / "m.npy"), np.load(tmp_path / "render" / "frames" / "m.npy"),
                 max_tol=1e-5, mean_tol=1e-6)  # fmt: skip
    # every component's snapshot reaches the metadata, whichever actors loaded them; the same as render's
    snaps = [json.loads((tmp_path / d / "metadata" / "m.json").read_text())["model"]["snapshots"] for d in ("run", "render")]
    assert set(snaps[0]) == {"text_encoder", "transformer", "vae", "upsampler"} and snaps[0] == snaps[1], snaps
    assert snaps[0]["upsampler"] != snaps[0]["vae"]  # the upsampler's own checkpoint, not the main one
