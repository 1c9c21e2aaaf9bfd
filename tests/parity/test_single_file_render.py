"""End to end: a single-file checkpoint (+ ``model.text_encoder``) renders the frames its diffusers-layout twin
renders, with the scheduler and default pipeline of its release.

- 0.9.5 style: the ``ltxv-debug`` weights rewritten as a single file (condition pipeline);
- 0.9.1 style: a tiny timestep-aware, noise-injecting 0.9.1 VAE beside the debug transformer, against a
  diffusers folder holding the dynamically shifted scheduler diffusers' conversion writes (base pipeline).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ltx_batch import load_job, render_one
from ltx_batch.models.vae import VAEConfig, VideoVAE
from ltx_batch.weights.single_file import RELEASES, vae_config_dict

from .single_file_data import (
    LT_SCHEDULER_LEGACY,
    LT_SCHEDULER_NEW,
    file_state,
    lt_transformer,
    model_config,
    randomize,
    write_single_file,
)

ROW = {"id": "row", "prompt": "A red cat walks on the street at night", "negative_prompt": "blurry", "width": 96,
       "height": 64, "num_frames": 17, "seed": 7}  # fmt: skip
_COMMON = {"_class_name": "CausalVideoAutoencoder", "dims": 3, "in_channels": 3, "out_channels": 3, "latent_channels": 16,
           "scaling_factor": 1.0, "norm_layer": "pixel_norm", "patch_size": 4, "latent_log_var": "uniform",
           "use_quant_conv": False, "causal_decoder": False, "timestep_conditioning": True,
           "encoder_base_channels": 16, "decoder_base_channels": 8}  # fmt: skip
_UP = ["compress_all", {"residual": True, "multiplier": 2}]


def _res(n, noise=None):
    return ["res_x", {"num_layers": n} if noise is None else {"num_layers": n, "inject_noise": noise}]


# ltxv-debug's VAE (weights/debug.py) in Lightricks' schema: its last two downsamplers keep the width
LT_DEBUG_VAE = {**_COMMON,
                "encoder_blocks": [_res(1), ["compress_space_res", {"multiplier": 2}], _res(1),
                                   ["compress_time_res", {"multiplier": 2}], _res(1),
                                   ["compress_all_res", {"multiplier": 1}], _res(1),
                                   ["compress_all_res", {"multiplier": 1}], _res(1)],
                "decoder_blocks": [_res(1, False), _UP, _res(1, False), _UP, _res(1, False), _UP, _res(1, False)]}
LT_091_VAE = {**_COMMON,
              "encoder_blocks": [_res(1), ["compress_all", {}], ["res_x_y", 1], _res(1), ["compress_all", {}],
                                 ["res_x_y", 1], _res(1), ["compress_all", {}], _res(1), _res(1)],
              "decoder_blocks": [_res(1, True), _UP, _res(1, True), _UP, _res(1, True), _UP, _res(1, False)]}  # fmt: skip
LT_DEBUG_TRANSFORMER = dict(in_channels=16, heads=2, head_dim=16, layers=2, caption=32)


def _same_frames(ours: np.ndarray, ref: np.ndarray) -> None:
    # Same weights, same code; CPU conv kernels still round differently with the weights' memory alignment
    # (safetensors hands out tensors at file offsets), so "same" is float32 rounding, not bits.
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).max() <= 1e-5


def _render(checkpoint, out: Path, **model) -> tuple[np.ndarray, str]:
    job = load_job({"name": "sf", "model": {"checkpoint": str(checkpoint), "dtype": "float32", "device": "cpu", **model},
                    "recipe": {"num_inference_steps": 3, "guidance_scale": 3.0, "decode_timestep": 0.05,
                               "decode_noise_scale": 0.025},
                    "output": str(out), "save": ["frames"]})  # fmt: skip
    result = render_one(job, dict(ROW))
    assert result.ok, result
    return np.load(out / "frames" / "row.npy"), job.recipe.pipeline


def test_single_file_renders_as_its_diffusers_folder(debug_dir, tmp_path):
    debug_vae = json.loads((debug_dir / "vae" / "config.json").read_text())
    expected = {k: tuple(v) if isinstance(v, list) else v for k, v in debug_vae.items()
                if k not in ("_class_name", "spatial_compression_ratio", "temporal_compression_ratio")}  # fmt: skip
    assert vae_config_dict(LT_DEBUG_VAE) == expected
    tr = load_file(str(debug_dir / "transformer" / "diffusion_pytorch_model.safetensors"))
    vae = load_file(str(debug_dir / "vae" / "diffusion_pytorch_model.safetensors"))
    config = model_config(LT_DEBUG_VAE, lt_transformer(**LT_DEBUG_TRANSFORMER, causal=True), LT_SCHEDULER_NEW)
    single = write_single_file(tmp_path / "ltxv-tiny.safetensors",
                               file_state(transformer=tr, vae=vae, lt_vae=LT_DEBUG_VAE, prefix=""), config)  # fmt: skip

    ours, pipeline = _render(single, tmp_path / "single", text_encoder=str(debug_dir))
    ref, ref_pipeline = _render(debug_dir, tmp_path / "folder")
    assert pipeline == ref_pipeline == "condition"
    _same_frames(ours, ref)


def test_091_single_file_renders_with_the_base_pipeline(debug_dir, tmp_path):
    d_vae = vae_config_dict(LT_091_VAE)
    with torch.device("meta"):
        meta = VideoVAE(VAEConfig.from_dict(d_vae)).state_dict()
    vae = randomize(meta, "e2e-091")
    tr = load_file(str(debug_dir / "transformer" / "diffusion_pytorch_model.safetensors"))

    folder = tmp_path / "ltx-091"  # the same weights in the diffusers layout
    shutil.copytree(debug_dir / "transformer", folder / "transformer")
    (folder / "vae").mkdir(parents=True)
    (folder / "vae" / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKLLTXVideo", **d_vae}))
    save_file(vae, str(folder / "vae" / "diffusion_pytorch_model.safetensors"))
    (folder / "scheduler").mkdir()
    sched = {"_class_name": "FlowMatchEulerDiscreteScheduler", **dataclasses.asdict(RELEASES["0.9.1"].scheduler_config())}
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(sched))

    config = model_config(LT_091_VAE, lt_transformer(**LT_DEBUG_TRANSFORMER), LT_SCHEDULER_LEGACY)
    single = write_single_file(tmp_path / "ltx-video-tiny-v0.9.1.safetensors",
                               file_state(transformer=tr, vae=vae, lt_vae=LT_091_VAE), config)  # fmt: skip
    ours, pipeline = _render(single, tmp_path / "single", text_encoder=str(debug_dir))
    ref, ref_pipeline = _render(folder, tmp_path / "folder", text_encoder=str(debug_dir))
    assert pipeline == ref_pipeline == "base"
    _same_frames(ours, ref)
