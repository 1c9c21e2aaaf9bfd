"""End-to-end parity: our render against diffusers' pipelines on the same tiny random checkpoints and seeds.

diffusers gets ``generator=torch.Generator().manual_seed(seed)`` per call (a fresh one per pass in
multi-scale, as its docs do); we get the row's seed. Frames are compared in [0, 1] (DESIGN.md tolerance).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ltx_batch import load_job, render_one
from ltx_batch.cli import main as cli_main
from ltx_batch.io.media import decode_video_frames
from ltx_batch.io.video import encode_mp4, read_video
from ltx_batch.stages import models

from ..conftest import frames_close

diffusers = pytest.importorskip("diffusers")
from diffusers import LTXConditionPipeline, LTXImageToVideoPipeline, LTXLatentUpsamplePipeline, LTXPipeline  # noqa: E402
from diffusers.pipelines.ltx.modeling_latent_upsampler import LTXLatentUpsamplerModel  # noqa: E402
from diffusers.pipelines.ltx.pipeline_ltx_condition import LTXVideoCondition  # noqa: E402

PROMPT = "A red cat walks on the street at night"
NEGATIVE = "blurry, dark"
W, H, F = 96, 64, 17
DECODE = dict(decode_timestep=0.05, decode_noise_scale=0.025)


def _job(checkpoint, out: Path, recipe: dict, **model):
    spec = {
        "name": "parity",
        "model": {"checkpoint": str(checkpoint), "dtype": "float32", "device": "cpu", **model},
        "recipe": {**DECODE, **recipe},
        "output": str(out),
        "save": ["frames", "mp4"],
    }
    return load_job(spec)


def _ours(job, row: dict) -> np.ndarray:
    result = render_one(job, {"id": "row", "prompt": PROMPT, "negative_prompt": NEGATIVE, "width": W, "height": H,
                              "num_frames": F, "seed": 7, **row})  # fmt: skip
    assert result.ok, result
    return np.load(Path(job.output) / "frames" / f"{result.id}.npy")


def _gen(seed: int = 7) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def condition_pipe(debug_dir):
    return LTXConditionPipeline.from_pretrained(str(debug_dir), torch_dtype=torch.float32)


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """A PNG and an MP4 written to disk; diffusers gets the pixels we decode from the same files."""
    root = tmp_path_factory.mktemp("media")
    rng = np.random.default_rng(0)
    img = (rng.random((80, 120, 3)) * 255).astype(np.uint8)
    Image.fromarray(img).save(root / "cond.png")
    clip = np.clip(np.linspace(0, 1, 13)[:, None, None, None] + rng.random((13, 48, 64, 3)) * 0.3, 0, 1)
    (root / "clip.mp4").write_bytes(encode_mp4(clip.astype(np.float32), 25))
    return root


def test_text_to_video_cfg_negative(condition_pipe, debug_dir, tmp_path):
    recipe = dict(num_inference_steps=4, guidance_scale=3.0)
    ours = _ours(_job(debug_dir, tmp_path, recipe), {})
    ref = condition_pipe(prompt=PROMPT, negative_prompt=NEGATIVE, width=W, height=H, num_frames=F, generator=_gen(),
                         output_type="np", **recipe, **DECODE).frames[0]  # fmt: skip
    frames_close(ours, ref)
    # a different seed gives a different video: the comparison above is not vacuous
    other = condition_pipe(prompt=PROMPT, negative_prompt=NEGATIVE, width=W, height=H, num_frames=F,
                           generator=_gen(8), output_type="np", **recipe, **DECODE).frames[0]  # fmt: skip
    assert np.abs(other - ref).mean() > 1e-3


def test_rescale_and_distilled_timesteps(condition_pipe, debug_dir, tmp_path):
    recipe = dict(timesteps=[1000, 993, 987, 981, 975, 909, 725, 0.03], guidance_scale=2.0, guidance_rescale=0.7)
    ours = _ours(_job(debug_dir, tmp_path, recipe), {})
    ref = condition_pipe(prompt=PROMPT, negative_prompt=NEGATIVE, width=W, height=H, num_frames=F, generator=_gen(),
                         output_type="np", **recipe, **DECODE).frames[0]  # fmt: skip
    frames_close(ours, ref)


def test_image_to_video_and_later_video_condition(condition_pipe, debug_dir, tmp_path, media):
    recipe = dict(num_inference_steps=4, guidance_scale=3.0, image_cond_noise_scale=0.15)
    conditions = [
        {"uri": str(media / "cond.png"), "frame_index": 0, "strength": 1.0},
        {"uri": str(media / "clip.mp4"), "frame_index": 8, "strength": 0.8},
    ]
    ours = _ours(_job(debug_dir, tmp_path, recipe), {"conditions": conditions})
    video = decode_video_frames((media / "clip.mp4").read_bytes())
    ref = condition_pipe(
        conditions=[LTXVideoCondition(image=Image.open(media / "cond.png"), frame_index=0, strength=1.0),
                    LTXVideoCondition(video=video, frame_index=8, strength=0.8)],
        prompt=PROMPT, negative_prompt=NEGATIVE, width=W, height=H, num_frames=F, generator=_gen(),
        output_type="np", **recipe, **DECODE,
    ).frames[0]  # fmt: skip
    frames_close(ours, ref)


def test_image_at_later_frame_without_guidance(condition_pipe, debug_dir, tmp_path, media):
    recipe = dict(num_inference_steps=3, guidance_scale=1.0, image_cond_noise_scale=0.0)
    conditions = [{"uri": str(media / "cond.png"), "frame_index": 9, "strength": 0.9}]
    ours = _ours(_job(debug_dir, tmp_path, recipe), {"conditions": conditions})
    ref = condition_pipe(
        conditions=[LTXVideoCondition(image=Image.open(media / "cond.png"), frame_index=9, strength=0.9)],
        prompt=PROMPT, negative_prompt=NEGATIVE, width=W, height=H, num_frames=F, generator=_gen(),
        output_type="np", **recipe, **DECODE,
    ).frames[0]  # fmt: skip
    frames_close(ours, ref)


def test_multiscale_adain_tone_map(condition_pipe, debug_dir, debug_upsampler_dir, tmp_path, media):
    # target 192x128 at downscale 0.5: base 96x64, refine 192x128, so no final resize is needed
    ms = dict(downscale=0.5, adain_factor=1.0, tone_map_compression_ratio=0.6,
              refine=dict(num_inference_steps=5, denoise_strength=0.6, guidance_scale=2.0, guidance_rescale=0.5))
    recipe = dict(num_inference_steps=4, guidance_scale=3.0, image_cond_noise_scale=0.1, multiscale=ms)
    job = _job(debug_dir, tmp_path, recipe, upsampler=str(debug_upsampler_dir))
    cond = [{"uri": str(media / "cond.png"), "frame_index": 0}]
    ours = _ours(job, {"width": 192, "height": 128, "conditions": cond})

    image = Image.open(media / "cond.png")
    common = dict(prompt=PROMPT, negative_prompt=NEGATIVE, num_frames=F, image_cond_noise_scale=0.1, **DECODE,
                  conditions=[LTXVideoCondition(image=image, frame_index=0)])  # fmt: skip
    latents = condition_pipe(**common, width=96, height=64, num_inference_steps=4, guidance_scale=3.0,
                             generator=_gen(), output_type="latent").frames  # fmt: skip
    upsampler = LTXLatentUpsamplerModel.from_pretrained(str(debug_upsampler_dir), subfolder="latent_upsampler")
    up = LTXLatentUpsamplePipeline(vae=condition_pipe.vae, latent_upsampler=upsampler)(
        latents=latents, adain_factor=1.0, tone_map_compression_ratio=0.6, output_type="latent").frames
    ref = condition_pipe(**common, width=192, height=128, latents=up, denoise_strength=0.6, num_inference_steps=5,
                         guidance_scale=2.0, guidance_rescale=0.5, generator=_gen(), output_type="np").frames[0]  # fmt: skip
    frames_close(ours, ref)


# --- base pipeline (0.9.0/0.9.1 semantics) on a dynamically shifted scheduler and a noise-injecting VAE ---

VAE_091 = dict(
    in_channels=3, out_channels=3, latent_channels=16, block_out_channels=(16, 32, 64, 64),
    down_block_types=("LTXVideoDownBlock3D",) * 4, decoder_block_out_channels=(16, 32, 64),
    layers_per_block=(1, 1, 1, 1, 1), decoder_layers_per_block=(1, 1, 1, 1),
    spatio_temporal_scaling=(True, True, True, False), decoder_spatio_temporal_scaling=(True, True, True),
    decoder_inject_noise=(False, True, True, True), upsample_residual=(True, True, True), upsample_factor=(2, 2, 2),
    timestep_conditioning=True, patch_size=4, patch_size_t=1, encoder_causal=True, decoder_causal=False,
)  # fmt: skip
SCHEDULER_091 = dict(use_dynamic_shifting=True, base_shift=0.95, max_shift=2.05, base_image_seq_len=1024,
                     max_image_seq_len=4096, shift_terminal=0.1)  # fmt: skip


@pytest.fixture(scope="module")
def base_dir(debug_dir, tmp_path_factory):
    """The debug checkpoint turned 0.9.1-like: dynamic-shifting scheduler and a noise-injecting VAE."""
    from diffusers import AutoencoderKLLTXVideo

    root = tmp_path_factory.mktemp("ckpt091") / "ltx-091-tiny"
    shutil.copytree(debug_dir, root)
    torch.manual_seed(3)
    vae = AutoencoderKLLTXVideo(**VAE_091)
    with torch.no_grad():
        for name, p in vae.named_parameters():  # zero-initialised scales would hide the noise injection
            if "per_channel_scale" in name or "scale_shift_table" in name:
                p.copy_(0.1 * torch.randn_like(p))
        vae.latents_std.copy_(0.5 + torch.rand_like(vae.latents_std))
    shutil.rmtree(root / "vae")
    vae.save_pretrained(str(root / "vae"))
    sched_path = root / "scheduler" / "scheduler_config.json"
    sched = json.loads(sched_path.read_text())
    sched_path.write_text(json.dumps({**sched, **SCHEDULER_091}))
    index = json.loads((root / "model_index.json").read_text())
    (root / "model_index.json").write_text(json.dumps({**index, "_class_name": "LTXPipeline"}))
    return root


def test_base_text_to_video_dynamic_shift_noise_injection(base_dir, tmp_path):
    recipe = dict(num_inference_steps=5, guidance_scale=3.0, guidance_rescale=0.3)
    job = _job(base_dir, tmp_path, recipe)
    assert job.recipe.pipeline == "base" and job.recipe.max_sequence_length == 128  # from the scheduler
    ours = _ours(job, {})
    again = _ours(_job(base_dir, tmp_path / "again", recipe), {})
    np.testing.assert_array_equal(ours, again)  # the injected noise comes from the seed, not the global RNG

    pipe = LTXPipeline.from_pretrained(str(base_dir), torch_dtype=torch.float32)
    torch.manual_seed(7)  # diffusers' decoder draws its injected noise from the global RNG
    ref = pipe(prompt=PROMPT, negative_prompt=NEGATIVE, width=W, height=H, num_frames=F, generator=_gen(),
               output_type="np", **recipe, **DECODE).frames[0]  # fmt: skip
    frames_close(ours, ref)


def test_base_image_to_video(base_dir, tmp_path, media):
    recipe = dict(num_inference_steps=4, guidance_scale=3.0)
    job = _job(base_dir, tmp_path, recipe)
    ours = _ours(job, {"conditions": [{"uri": str(media / "cond.png"), "frame_index": 0}]})
    pipe = LTXImageToVideoPipeline.from_pretrained(str(base_dir), torch_dtype=torch.float32)
    torch.manual_seed(7)
    ref = pipe(image=Image.open(media / "cond.png"), prompt=PROMPT, negative_prompt=NEGATIVE, width=W, height=H,
               num_frames=F, generator=_gen(), output_type="np", **recipe, **DECODE).frames[0]  # fmt: skip
    frames_close(ours, ref)


def test_base_pipeline_refuses_other_conditions(base_dir, tmp_path, media):
    job = _job(base_dir, tmp_path, dict(num_inference_steps=2))
    result = render_one(job, {"id": "x", "prompt": PROMPT, "width": W, "height": H, "num_frames": F,
                              "conditions": [{"uri": str(media / "cond.png"), "frame_index": 8}]})  # fmt: skip
    assert not result.ok and result.error_stage == "base_sample" and "conditions" in result.error
    assert not (tmp_path / "metadata").exists()


def test_cli_render_matches_diffusers_and_writes_a_playable_mp4(condition_pipe, debug_dir, tmp_path, capsys):
    models.clear()
    job_file = tmp_path / "job.yaml"
    job_file.write_text(json.dumps({"model": {"checkpoint": str(debug_dir), "dtype": "float32"},
                                    "recipe": {"num_inference_steps": 3, **DECODE}, "save": ["mp4", "frames"]}))
    out = tmp_path / "out"
    code = cli_main(["render", str(job_file), "--prompt", PROMPT, "--negative-prompt", NEGATIVE, "--id", "cli",
                     "--seed", "11", "--width", str(W), "--height", str(H), "--num-frames", "25",
                     "--output", str(out), "--set", "recipe.frame_rate=24"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    ref = condition_pipe(prompt=PROMPT, negative_prompt=NEGATIVE, width=W, height=H, num_frames=25, frame_rate=24,
                         num_inference_steps=3, generator=_gen(11), output_type="np", **DECODE).frames[0]  # fmt: skip
    frames_close(np.load(out / "frames" / "cli.npy"), ref)
    frames, meta = read_video(str(out / "videos" / "cli.mp4"))
    assert frames.shape == (25, H, W, 3) and meta["fps"] == 24
    metadata = json.loads((out / "metadata" / "cli.json").read_text())
    assert metadata["status"] == "ok" and metadata["seed"] == 11 and metadata["outputs"]["mp4"]["path"] == "videos/cli.mp4"

    # run's rule for a finished id: the same request is done already; another one needs --overwrite
    args = ["render", str(job_file), "--prompt", PROMPT, "--negative-prompt", NEGATIVE, "--id", "cli",
            "--width", str(W), "--height", str(H), "--num-frames", "25", "--output", str(out),
            "--set", "recipe.frame_rate=24"]  # fmt: skip
    written = (out / "videos" / "cli.mp4").stat().st_mtime_ns
    capsys.readouterr()
    assert cli_main([*args, "--seed", "11"]) == 0
    assert "already rendered" in capsys.readouterr().out
    assert (out / "videos" / "cli.mp4").stat().st_mtime_ns == written
    assert cli_main([*args, "--seed", "12"]) == 2
    assert "cli" in capsys.readouterr().err and json.loads((out / "metadata" / "cli.json").read_text())["seed"] == 11
    assert cli_main([*args, "--seed", "12", "--overwrite"]) == 0
    assert json.loads((out / "metadata" / "cli.json").read_text())["seed"] == 12
    # without --id the id hashes the request alone: a recipe tried again renders over its own earlier try
    auto = [a for a in args if a not in ("--id", "cli")]
    assert cli_main([*auto, "--seed", "5"]) == 0
    assert cli_main([*auto, "--seed", "5", "--set", "recipe.num_inference_steps=2"]) == 0
    (auto_meta,) = (out / "metadata").glob("render-*.json")
    assert json.loads(auto_meta.read_text())["recipe"]["num_inference_steps"] == 2


def test_tiled_vae_decode_matches_diffusers_enable_tiling(condition_pipe, debug_dir, tmp_path):
    tiling = dict(tile_height=64, tile_width=64, stride_height=32, stride_width=32)
    recipe = dict(num_inference_steps=2, guidance_scale=1.0, vae_tiling=tiling)
    ours = _ours(_job(debug_dir, tmp_path, recipe), {"width": 128, "height": 96, "num_frames": 9})
    condition_pipe.vae.enable_tiling(tile_sample_min_height=64, tile_sample_min_width=64,
                                     tile_sample_stride_height=32, tile_sample_stride_width=32)  # fmt: skip
    try:
        ref = condition_pipe(prompt=PROMPT, width=128, height=96, num_frames=9, num_inference_steps=2,
                             guidance_scale=1.0, generator=_gen(), output_type="np", **DECODE).frames[0]  # fmt: skip
    finally:
        condition_pipe.vae.disable_tiling()
    frames_close(ours, ref)
