"""Single-file references: presets point at one file of a hub repo (``org/name/file.safetensors``), which
resolves to that file alone; such presets name a text encoder, since single files carry none."""

from __future__ import annotations

from pathlib import Path

import pytest

from ltx_batch.weights import resolve as resolve_mod
from ltx_batch.weights.presets import PRESETS

SINGLE_FILE_PRESETS = sorted(n for n, p in PRESETS.items() if p.checkpoint.endswith(".safetensors"))


def test_single_file_releases_have_presets():
    assert {"ltxv-2b-0.9.0", "ltxv-2b-0.9.6-dev", "ltxv-2b-0.9.6-distilled", "ltxv-13b-0.9.8-dev",
            "ltxv-2b-0.9.8-distilled", "ltxv-13b-0.9.8-dev-fp8", "ltxv-13b-0.9.8-distilled-fp8",
            "ltxv-2b-0.9.8-distilled-fp8", "ltxv-13b-0.9.7-dev-fp8"} <= set(SINGLE_FILE_PRESETS)  # fmt: skip


@pytest.mark.parametrize("name", SINGLE_FILE_PRESETS)
def test_single_file_presets_are_hub_file_refs_with_a_text_encoder(name):
    preset = PRESETS[name]
    assert preset.checkpoint.startswith("Lightricks/LTX-Video/") and resolve_mod._HUB_ID.match(preset.checkpoint)
    assert preset.text_encoder and resolve_mod._HUB_ID.match(preset.text_encoder)
    assert preset.recipe.get("pipeline") == ("base" if name == "ltxv-2b-0.9.0" else "condition")
    assert preset.upsampler is None or resolve_mod._HUB_ID.match(preset.upsampler)


def test_hub_file_ref_downloads_only_that_file(monkeypatch, tmp_path):
    calls = []

    def fake_snapshot(repo, revision=None, allow_patterns=None):
        calls.append((repo, revision, allow_patterns))
        folder = tmp_path / "snap" / "abc123"
        for pattern in allow_patterns:
            if pattern == "ltxv-2b-0.9.6-dev-04-25.safetensors":
                (folder / pattern).parent.mkdir(parents=True, exist_ok=True)
                (folder / pattern).write_bytes(b"x")
        return str(folder)

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot)
    got = resolve_mod.resolve("Lightricks/LTX-Video/ltxv-2b-0.9.6-dev-04-25.safetensors@main")
    assert calls == [("Lightricks/LTX-Video", "main", ["ltxv-2b-0.9.6-dev-04-25.safetensors"])]
    assert got.path == tmp_path / "snap" / "abc123" / "ltxv-2b-0.9.6-dev-04-25.safetensors"
    assert got.revision == "hub-abc123"
    with pytest.raises(ValueError, match="has no file 'nope.safetensors'"):
        resolve_mod.resolve("Lightricks/LTX-Video/nope.safetensors")
    assert not Path("Lightricks").exists()


def test_hub_file_scheduler_reads_only_the_header(monkeypatch):
    """The driver picks a hub single file's default pipeline from its safetensors header, not the weights."""
    import json
    from types import SimpleNamespace

    import huggingface_hub

    from ltx_batch.weights.single_file import hub_file_scheduler_config

    vae = {"encoder_blocks": [["res_x", 1], ["compress_all", {}], ["res_x", 1]], "timestep_conditioning": True}
    calls = []

    def fake_header(self, repo_id, filename, revision=None, **kwargs):
        calls.append((repo_id, filename, revision))
        return SimpleNamespace(metadata={"config": json.dumps({"transformer": {}, "vae": vae})})

    monkeypatch.setattr(huggingface_hub.HfApi, "parse_safetensors_file_metadata", fake_header)
    sched = hub_file_scheduler_config("Lightricks/LTX-Video/ltx-video-2b-v0.9.1.safetensors@abc")
    assert calls == [("Lightricks/LTX-Video", "ltx-video-2b-v0.9.1.safetensors", "abc")]
    assert sched.use_dynamic_shifting and sched.shift_terminal == 0.1  # 0.9.1: the base pipeline's scheduler
    assert resolve_mod.is_hub_file_ref("Lightricks/LTX-Video/ltx-video-2b-v0.9.1.safetensors")
    assert not resolve_mod.is_hub_file_ref("Lightricks/LTX-Video-0.9.1")
    assert not resolve_mod.is_hub_folder_ref("Lightricks/LTX-Video/ltx-video-2b-v0.9.1.safetensors")
