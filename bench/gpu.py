"""GPU benchmark: real-size random-weight LTX-Video models, ours against diffusers' on the same GPU.

    python bench/gpu.py                       # 2B at 768x512x121, bf16, CFG (needs an NVIDIA GPU)
    python bench/gpu.py --model 13b           # 13B (ours and diffusers share one copy of the weights)
    python bench/gpu.py --skip-e2e            # only the matmul, transformer-step and VAE rows
    python bench/gpu.py --compile             # plus a compiled transformer-step row; e2e with model.compile
    python bench/gpu.py --tiny --device cpu   # smoke run of every code path on a CPU (numbers meaningless)
    python bench/gpu.py --model mid --device cpu --size 512x320x25 --e2e-steps 4   # mid-size render on a CPU

Rows: the measured dense bf16 matmul peak; seconds per transformer step (one CFG forward of batch 2) with
achieved TFLOP/s and the fraction of that peak (REFERENCE.md's FLOP model: linears + attention); VAE decode
seconds and peak memory above the weights (0.9.5+ architecture). The same random tensors in ours and diffusers'.

End to end (skipped with ``--skip-e2e``): seconds per video of ``ltx_batch.Renderer`` beside diffusers'
``LTXConditionPipeline``, both loading one random checkpoint folder in the diffusers layout written to a
temporary directory (under $TMPDIR: ~7 GB for 2B, ~29 GB for 13B): the real-size transformer, the 0.9.5 VAE,
the 0.9.5+ flow-match scheduler config, and a *small random T5 stand-in* (2 layers, d_model 4096 = the
transformer's caption width, d_ff 1024; the real T5-XXL has 24 layers and d_ff 10240, 4.8B parameters, and
is a small share of a video's time), with the debug checkpoint's offline tokenizer. Same prompt, negative
prompt, size (``--e2e-size``, default ``--size``), steps (``--e2e-steps``, default 30), CFG 3, decode
timestep 0.05 / noise 0.025 and seed on both sides; one warm-up call each (which loads the models), then
``--repeats`` timed calls. Ours is timed twice: writing the MP4 (what a user gets; the random weights make
noise-like frames, which x264 typically encodes more slowly than real video) and writing only the latents
file (no MP4);
diffusers returns frames in memory (``output_type="np"``) and writes nothing. The sides run one after the
other, ours first, each with the GPU to itself; peak memory is each side's ``max_memory_allocated``
(weights included). Below the table: ours per stage (median) and the e2e settings.

Results are appended to bench/RESULTS.md with the date and the GPU's name (not for ``--tiny``).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import itertools
import json
import logging
import os
import shutil
import statistics
import tempfile
import time
import traceback
from pathlib import Path

os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything here is made locally; GPU machines may have no network
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import torch  # noqa: E402

# "mid": the 2B's width with 2 of its 28 blocks, for a full render against diffusers' on a CPU in minutes
SIZES = {"2b": dict(num_attention_heads=32, attention_head_dim=64, num_layers=28),
         "13b": dict(num_attention_heads=32, attention_head_dim=128, num_layers=48),
         "mid": dict(num_attention_heads=32, attention_head_dim=64, num_layers=2)}  # fmt: skip
VAE_095 = dict(
    in_channels=3, out_channels=3, latent_channels=128, block_out_channels=(128, 256, 512, 1024, 2048),
    down_block_types=("LTXVideo095DownBlock3D",) * 4, decoder_block_out_channels=(256, 512, 1024),
    layers_per_block=(4, 6, 6, 2, 2), decoder_layers_per_block=(5, 5, 5, 5), spatio_temporal_scaling=(True,) * 4,
    decoder_spatio_temporal_scaling=(True,) * 3, decoder_inject_noise=(False,) * 4,
    downsample_type=("spatial", "temporal", "spatiotemporal", "spatiotemporal"), upsample_residual=(True,) * 3,
    upsample_factor=(2, 2, 2), timestep_conditioning=True, patch_size=4, patch_size_t=1, resnet_norm_eps=1e-6,
    scaling_factor=1.0, encoder_causal=True, decoder_causal=False, spatial_compression_ratio=32,
    temporal_compression_ratio=8,
)  # fmt: skip


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, repeats: int, warmup: int = 1) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        out.append(time.perf_counter() - t)
    return out


def matmul_peak(device, dtype, n: int) -> float:
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    ts = timed(lambda: a @ b, device, repeats=10, warmup=3)
    return 2 * n**3 / statistics.median(ts) / 1e12


def transformer_flops(cfg, tokens: int, text: int, batch: int) -> float:
    """Linear + attention FLOPs of one forward (REFERENCE.md's model)."""
    d, layers = cfg.inner_dim, cfg.num_layers
    per_token_linear = layers * 2 * (4 + 2 + 8) * d * d  # 2 FLOPs per MAC: self q/k/v/o, cross q/o, FFN 4x (2 GEMMs)
    cross_kv = layers * 2 * 2 * text * d * d  # k, v of the text (cheap)
    attn = layers * (4 * tokens * tokens * d + 4 * tokens * text * d)  # QK^T and AV, self and cross
    return batch * (tokens * per_token_linear + cross_kv + attn)


def transformer_kwargs(args) -> dict:
    size = SIZES[args.model] if not args.tiny else dict(num_attention_heads=4, attention_head_dim=16, num_layers=2)
    return dict(in_channels=128, out_channels=128, caption_channels=4096 if not args.tiny else 64,
                cross_attention_dim=size["num_attention_heads"] * size["attention_head_dim"], **size)  # fmt: skip


def vae_kwargs(args) -> dict:
    cfg = dict(VAE_095)
    if args.tiny:
        cfg.update(block_out_channels=(16, 32, 64, 64, 64), decoder_block_out_channels=(16, 32, 64), latent_channels=16,
                   layers_per_block=(1,) * 5, decoder_layers_per_block=(1,) * 4)  # fmt: skip
    return cfg


def build_transformers(args, device, dtype):
    from diffusers import LTXVideoTransformer3DModel

    from ltx_batch.models.transformer import LTXVideoTransformer, TransformerConfig

    kw = transformer_kwargs(args)
    return shared_pair(LTXVideoTransformer3DModel, kw, lambda: LTXVideoTransformer(TransformerConfig.from_dict(kw)),
                       device, dtype)


def shared_pair(ref_cls, ref_kwargs: dict, ours_factory, device, dtype):
    """diffusers' model and ours holding the very same random tensors on ``device``: both built on meta and
    the numbers drawn on the device (a CPU float32 init of the 13B transformer takes minutes and 52 GB), one
    copy of the weights for both."""
    from ltx_batch.weights.strict import build_on_meta, load_strict

    with torch.device("meta"):
        ref = ref_cls(**ref_kwargs)
    ref.load_state_dict(random_state(ref, device, 0, on_device=True), assign=True)
    ref = ref.to(dtype=dtype).eval()
    ours = build_on_meta(ours_factory)
    load_strict(ours, ref.state_dict(), what=ref_cls.__name__, dtype=dtype, device=device)
    return ours.eval(), ref


def bench_transformer(args, device, dtype, rows):
    from ltx_batch.models.rope import grid_coords, grid_from_pixel_coords, pixel_coords, rope_tables

    ours, ref = build_transformers(args, device, dtype)
    w, h, f = args.size
    lf, lh, lw = (f - 1) // 8 + 1, h // 32, w // 32
    tokens, text, batch = lf * lh * lw, 128, 2
    g = torch.Generator(device="cpu").manual_seed(1)
    x = torch.randn(batch, tokens, 128, generator=g).to(device, dtype)
    ctx = torch.randn(batch, text, ours.config.caption_channels, generator=g).to(device, dtype)
    mask = torch.ones(batch, text, device=device)
    mask[0, 20:] = 0  # the negative prompt is short; the positive fills the length
    t = torch.full((batch,), 700.0, device=device)
    coords = pixel_coords(grid_coords(1, lf, lh, lw, device=device), spatial_ratio=32, temporal_ratio=8,
                          frame_rate=25.0)  # fmt: skip
    rope = rope_tables(grid_from_pixel_coords(coords), ours.config.inner_dim)
    video_coords = coords.expand(batch, -1, -1)
    flops = transformer_flops(ours.config, tokens, text, batch)
    with torch.inference_mode():
        t_ours = timed(lambda: ours(x, ctx, t, mask, rope), device, args.repeats)
        t_ref = timed(lambda: ref(hidden_states=x, encoder_hidden_states=ctx, timestep=t, encoder_attention_mask=mask,
                                  video_coords=video_coords, return_dict=False), device, args.repeats)  # fmt: skip
    rows.append(("transformer step (CFG batch 2)", t_ours, t_ref, flops))
    if args.compile:  # model.compile: the blocks through torch.compile(dynamic=True); two warm-ups pay the compile
        from ltx_batch.models.compile import compile_blocks

        compile_blocks(ours)
        with torch.inference_mode():
            t_comp = timed(lambda: ours(x, ctx, t, mask, rope), device, args.repeats, warmup=2)
        rows.append(("transformer step, ours compiled", t_comp, t_ref, flops))


def bench_vae(args, device, dtype, rows):
    from diffusers import AutoencoderKLLTXVideo

    from ltx_batch.models.vae import VAEConfig, VideoVAE

    cfg = vae_kwargs(args)
    ours_cfg = VAEConfig.from_dict({k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()})
    ours, ref = shared_pair(AutoencoderKLLTXVideo, cfg, lambda: VideoVAE(ours_cfg), device, dtype)
    w, h, f = args.size
    z = torch.randn(1, cfg["latent_channels"], (f - 1) // 8 + 1, h // 32, w // 32, device=device, dtype=dtype)
    temb = torch.tensor([0.05], device=device, dtype=dtype)
    peaks = {}
    with torch.inference_mode():
        for name, fn in (("ours", lambda: ours.decode(z, temb)), ("ref", lambda: ref.decode(z, temb).sample)):
            free_memory(device)
            reset_peak(device)
            before = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
            peaks[name] = timed(fn, device, args.repeats)
            peaks[name + "_mem"] = peak_gib(device) - before / 2**30  # the decode's own memory: weights are shared
    rows.append(("VAE decode", peaks["ours"], peaks["ref"], None))
    if device.type == "cuda":
        rows.append(("VAE decode peak GiB above the weights", [peaks["ours_mem"]], [peaks["ref_mem"]], None))
        # cuDNN's autotuner (off by default) against its heuristics, for both sides: the decoder's Conv3d shapes
        # repeat within a job, so a tuned algorithm would pay its search back; this row says whether it does
        autotune = torch.backends.cudnn.benchmark
        torch.backends.cudnn.benchmark = True
        try:
            with torch.inference_mode():
                t_ours = timed(lambda: ours.decode(z, temb), device, args.repeats, warmup=2)
                t_ref = timed(lambda: ref.decode(z, temb).sample, device, args.repeats, warmup=2)
        finally:
            torch.backends.cudnn.benchmark = autotune
        rows.append(("VAE decode, cudnn.benchmark on", t_ours, t_ref, None))
        rows.append(("VAE decode: ours autotuned vs ours default (ratio: gain)", t_ours, peaks["ours"], None))


# --------------------------------------------------------------------------------------------- end to end

E2E_PROMPT = "A red cat walks on the street at night, slow motion, close up"
E2E_NEGATIVE = "blurry, dark"
E2E_SEED = 7
E2E_RECIPE = dict(guidance_scale=3.0, decode_timestep=0.05, decode_noise_scale=0.025)  # 0.9.5-style, both sides


def t5_standin(args, d_model: int) -> dict:
    """T5 config of the random text encoder: T5-XXL's width where it meets the transformer (d_model = the
    caption width, 64 heads of 64) but 2 layers and a small FFN instead of 24 layers with d_ff 10240, so the
    checkpoint is cheap to make; both sides run the same one, and T5 is a small share of a video's time."""
    if args.tiny:
        return dict(d_model=d_model, d_kv=16, num_heads=4, d_ff=64, num_layers=1)
    return dict(d_model=d_model, d_kv=64, num_heads=64, d_ff=1024, num_layers=2)


def random_state(module: torch.nn.Module, device: torch.device, seed: int, *,
                 on_device: bool = False) -> dict[str, torch.Tensor]:  # fmt: skip
    """bf16 random tensors, on the CPU (``on_device``: left on ``device``), for every entry of ``module``'s
    state dict (the module is built on the meta device, so nothing is initialised twice). Drawn on ``device``:
    a 13B model's numbers take minutes on a CPU. Speed does not depend on the values, but they stay finite and
    of a plausible scale (1/sqrt(fan_in) weights, norm gains near 1, positive latent std) so nothing overflows
    through the layers."""
    g = torch.Generator(device=device).manual_seed(seed)
    out = {}
    for name, like in module.state_dict().items():
        shape = like.shape
        if name.endswith("latents_std"):
            t = 0.5 + torch.rand(shape, generator=g, device=device)
        elif like.ndim <= 1:
            gain = "norm" in name and name.endswith("weight")
            t = (1.0 if gain else 0.0) + (0.1 if gain else 0.05) * torch.randn(shape, generator=g, device=device)
        else:
            t = torch.randn(shape, generator=g, device=device) / like[0].numel() ** 0.5
        t = t.to(torch.bfloat16)
        out[name] = t if on_device else t.cpu()
    return out


def write_checkpoint(root: Path, args, device: torch.device) -> None:
    """A diffusers-layout folder that both ``load_job({"model": {"checkpoint": root}})`` and
    ``LTXConditionPipeline.from_pretrained(root)`` read: random transformer (the rows' size) and 0.9.5 VAE
    written by diffusers' own ``save_pretrained``, the T5 stand-in, the debug checkpoint's tokenizer (an
    offline word-piece vocabulary: no download) and the flow-match scheduler config of the 0.9.5+ releases."""
    from diffusers import AutoencoderKLLTXVideo, LTXVideoTransformer3DModel
    from transformers import T5Config, T5EncoderModel

    from ltx_batch.weights.debug import SCHEDULER
    from ltx_batch.weights.resolve import resolve

    vae_cfg = vae_kwargs(args)
    # the transformer reads and writes the VAE's latents (the tiny VAE has 16 channels, not 128)
    tr_cfg = dict(transformer_kwargs(args), in_channels=vae_cfg["latent_channels"],
                  out_channels=vae_cfg["latent_channels"])  # fmt: skip
    parts = [("transformer", LTXVideoTransformer3DModel, tr_cfg), ("vae", AutoencoderKLLTXVideo, vae_cfg)]
    for seed, (name, cls, cfg) in enumerate(parts):
        with torch.device("meta"):
            model = cls(**cfg)
        model.load_state_dict(random_state(model, device, seed), assign=True)
        model.save_pretrained(str(root / name), safe_serialization=True)  # shards past 10 GB, with an index
        del model  # one component's CPU copy at a time (13B: 26 GB)

    debug = resolve("ltxv-debug").path
    shutil.copytree(debug / "tokenizer", root / "tokenizer")
    vocab = json.loads((debug / "text_encoder" / "config.json").read_text())["vocab_size"]
    t5_cfg = T5Config(vocab_size=vocab, feed_forward_proj="gated-gelu", is_encoder_decoder=False, use_cache=False,
                      dropout_rate=0.0, pad_token_id=0, eos_token_id=1, **t5_standin(args, tr_cfg["caption_channels"]))
    with torch.device("meta"):
        t5 = T5EncoderModel(t5_cfg)
    t5.load_state_dict(random_state(t5, device, len(parts)), assign=True)
    t5.tie_weights()  # the input embedding is the shared one, as in real T5 checkpoints
    t5.save_pretrained(str(root / "text_encoder"), safe_serialization=True)

    (root / "scheduler").mkdir()
    (root / "scheduler" / "scheduler_config.json").write_text(
        json.dumps({"_class_name": "FlowMatchEulerDiscreteScheduler", **SCHEDULER}, indent=2))
    index = {"_class_name": "LTXConditionPipeline",
             "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
             "text_encoder": ["transformers", "T5EncoderModel"], "tokenizer": ["transformers", "T5Tokenizer"],
             "transformer": ["diffusers", "LTXVideoTransformer3DModel"], "vae": ["diffusers", "AutoencoderKLLTXVideo"]}
    (root / "model_index.json").write_text(json.dumps(index, indent=2))


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def e2e_request(args) -> dict:
    w, h, f = args.e2e_size
    return dict(prompt=E2E_PROMPT, negative_prompt=E2E_NEGATIVE, width=w, height=h, num_frames=f)


def time_ours(args, device, ckpt: Path, out: Path):
    """Ours, writing the MP4 and then writing no MP4 (latents file only): two renderers of one checkpoint that
    share the loaded models (the process-wide model cache). Returns both timings, the per-stage seconds of the
    timed MP4 renders, and the peak GiB. The models leave the GPU on return."""
    from ltx_batch import load_job
    from ltx_batch.render import Renderer
    from ltx_batch.stages import models as model_cache

    def renderer(save: str) -> Renderer:
        return Renderer(load_job({
            "name": f"bench-e2e-{save}", "output": str(out / save), "save": [save],
            "model": {"checkpoint": str(ckpt), "dtype": "bfloat16", "device": device.type, "compile": args.compile},
            "recipe": {"pipeline": "condition", "num_inference_steps": args.e2e_steps, **E2E_RECIPE},
        }))  # fmt: skip

    ids = itertools.count()
    stage_seconds: list[dict[str, float]] = []

    # a machine without imageio-ffmpeg (its wheel bundles the ffmpeg binary) times the latents-only renders
    try:
        import imageio_ffmpeg

        can_encode = bool(imageio_ffmpeg.get_ffmpeg_exe())
    except (ImportError, RuntimeError):  # not installed, or no ffmpeg binary for this platform
        can_encode = False
    timed_kind = "mp4" if can_encode else "latents"

    def render(r: Renderer) -> None:
        result = r.render({"id": f"v{next(ids)}", "seed": E2E_SEED, **e2e_request(args)})
        if not result.ok:
            raise RuntimeError(f"ours failed in {result.error_stage}: {result.error}")
        if r.job.save == (timed_kind,):
            stage_seconds.append(result.seconds)

    latents_only = renderer("latents")
    reset_peak(device)
    t_mp4 = t_many = None
    if can_encode:
        with_mp4 = renderer("mp4")
        t_mp4 = timed(lambda: render(with_mp4), device, args.repeats)  # the warm-up call loads the models
        n = max(2, args.repeats)

        def many() -> None:  # a batch user's loop: two videos in flight, the MP4 write beside the next sampling
            requests = ({"id": f"v{next(ids)}", "seed": E2E_SEED, **e2e_request(args)} for _ in range(n))
            failed = [r for r in with_mp4.render_many(requests) if not r.ok]
            if failed:
                raise RuntimeError(f"ours failed in {failed[0].error_stage}: {failed[0].error}")

        t_many = [t / n for t in timed(many, device, repeats=1, warmup=0)]
    t_latents = timed(lambda: render(latents_only), device, args.repeats)
    mem = peak_gib(device)
    model_cache.clear()  # the renderers go with this frame; the cache must let go of the models too
    return t_mp4, t_many, t_latents, stage_seconds[1:], mem  # stage seconds without the warm-up's


def time_diffusers(args, device, dtype, ckpt: Path):
    """``LTXConditionPipeline`` from the same folder, frames returned in memory; timings and peak GiB."""
    import diffusers
    from diffusers import LTXConditionPipeline

    diffusers.utils.logging.disable_progress_bar()
    pipe = LTXConditionPipeline.from_pretrained(str(ckpt), dtype=dtype).to(device)
    pipe.set_progress_bar_config(disable=True)
    request = e2e_request(args)

    def render() -> None:
        frames = pipe(**request, num_inference_steps=args.e2e_steps, output_type="np",
                      generator=torch.Generator().manual_seed(E2E_SEED), **E2E_RECIPE).frames  # fmt: skip
        if frames.shape[1:4] != (request["num_frames"], request["height"], request["width"]):
            raise RuntimeError(f"diffusers returned frames of shape {frames.shape}")

    reset_peak(device)  # the weights already on the GPU stay in the peak, as ours' do
    t = timed(render, device, args.repeats)
    return t, peak_gib(device)


def bench_e2e(args, device, dtype, rows) -> list[str]:
    """Seconds per video, ours (``Renderer``) against ``LTXConditionPipeline``; returns the note lines. The
    sides run one after the other, each with the GPU to itself (a 13B pair would not fit at once)."""
    w, h, f = args.e2e_size
    free_memory(device)  # the transformer and VAE rows' models are gone: start from an empty GPU
    with tempfile.TemporaryDirectory(prefix="ltx-gpu-bench-") as tmp_name:
        tmp = Path(tmp_name)
        os.environ["LTX_BATCH_CACHE"] = str(tmp / "cache")  # the debug checkpoint (for its tokenizer) goes here
        ckpt = tmp / "checkpoint"
        ckpt.mkdir()
        start = time.perf_counter()
        write_checkpoint(ckpt, args, device)
        print(f"end to end: random checkpoint written in {time.perf_counter() - start:.0f} s", flush=True)
        t_mp4, t_many, t_latents, stage_seconds, mem_ours = time_ours(args, device, ckpt, tmp)
        free_memory(device)
        t_ref, mem_ref = time_diffusers(args, device, dtype, ckpt)
        free_memory(device)

    if t_mp4 is not None:
        rows.append(("end to end s/video, ours writes MP4", t_mp4, t_ref, None))
        rows.append(("end to end s/video, ours render_many (MP4, 2 in flight)", t_many, t_ref, None))
    rows.append(("end to end s/video, ours writes no MP4", t_latents, t_ref, None))
    if device.type == "cuda":
        rows.append(("end to end peak GiB", [mem_ours], [mem_ref], None))
    stages = {k: statistics.median(s[k] for s in stage_seconds) for k in stage_seconds[0]}
    sample = stages.get("base_sample")
    t5 = t5_standin(args, transformer_kwargs(args)["caption_channels"])
    return [
        f"end to end: {w}x{h}x{f}, {args.e2e_steps} steps, CFG {E2E_RECIPE['guidance_scale']:g}, decode timestep "
        f"{E2E_RECIPE['decode_timestep']}, seed {E2E_SEED}; random {args.model}{' (tiny)' if args.tiny else ''} "
        f"transformer + 0.9.5 VAE + random T5 stand-in (num_layers {t5['num_layers']}, d_model {t5['d_model']}, "
        f"d_ff {t5['d_ff']}; T5-XXL: 24, 4096, 10240); ours: Renderer with MP4 (noise-like frames: x264 is likely "
        "slower than on real video) or the latents file only; diffusers: LTXConditionPipeline, "
        "output_type='np' (no file).",
        f"ours per stage, median s of the {'MP4' if t_mp4 is not None else 'latents-only (no imageio-ffmpeg here)'} "
        "renders: " + ", ".join(f"{k} {v:.3f}" for k, v in stages.items())
        + (f" (base_sample / steps: {sample / args.e2e_steps:.3f})" if sample else "")
        + "; decode includes writing the output.",
    ]


def main() -> None:
    import diffusers  # its version goes into the results header

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=sorted(SIZES), default="2b")
    ap.add_argument("--size", default="768x512x121", help="WxHxF")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--tiny", action="store_true", help="toy widths: a smoke run of the script itself")
    ap.add_argument("--compile", action="store_true",
                    help="also time our transformer step compiled, and render end to end with model.compile")
    ap.add_argument("--skip-e2e", action="store_true", help="leave out the end-to-end row (it writes a checkpoint)")
    ap.add_argument("--e2e-size", default=None,
                    help="WxHxF of the end-to-end videos (default --size; tiny 192x128x17)")  # fmt: skip
    ap.add_argument("--e2e-steps", type=int, default=None, help="end-to-end sampling steps (default 30; tiny 3)")
    ap.add_argument("--results", default=str(Path(__file__).with_name("RESULTS.md")),
                    help="file the table is appended to (default bench/RESULTS.md)")
    args = ap.parse_args()
    args.size = tuple(int(v) for v in args.size.split("x"))
    e2e_size = args.e2e_size or ("192x128x17" if args.tiny else "x".join(map(str, args.size)))
    args.e2e_size = tuple(int(v) for v in e2e_size.split("x"))
    args.e2e_steps = args.e2e_steps or (3 if args.tiny else 30)
    device = torch.device(args.device)
    dtype = torch.bfloat16
    # a row failing inside the Renderer logs its traceback at DEBUG (stages/base.py): show it here
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("ltx_batch.stages.base").setLevel(logging.DEBUG)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = matmul_peak(device, dtype, 8192 if device.type == "cuda" and not args.tiny else 512)
    print(f"measured bf16 matmul peak: {peak:.0f} TFLOP/s", flush=True)
    rows: list = []

    def row_line(label, ours, ref, flops) -> str:
        mo, mr = statistics.median(ours), statistics.median(ref)
        tflops = f"{flops / mo / 1e12:.0f}" if flops else "-"
        frac = f"{100 * flops / mo / 1e12 / peak:.0f}%" if flops else "-"
        return f"| {label} | {mo:.3f} | {mr:.3f} | {mr / mo:.2f}x | {tflops} | {frac} |"

    notes: list[str] = []
    sections = [bench_transformer, bench_vae] + ([] if args.skip_e2e else [bench_e2e])
    for section in sections:
        done = len(rows)
        try:  # a failing section (say, no MP4 encoder on the machine) keeps the rows already measured
            notes += section(args, device, dtype, rows) or []
        except Exception as e:  # noqa: BLE001 - reported in the table's notes, the other sections still run
            notes.append(f"{section.__name__} failed: {type(e).__name__}: {e}")
            traceback.print_exc()  # device time is scarce: the whole story in one run
            print(notes[-1], flush=True)
        for row in rows[done:]:
            print(row_line(*row), flush=True)
        free_memory(device)  # compiled blocks keep their modules alive in a reference cycle until collected

    lines = [f"## {datetime.date.today()} {name}, {args.model}{' (tiny)' if args.tiny else ''}, "
             f"{'x'.join(map(str, args.size))}, bf16{', model.compile' if args.compile else ''}, torch {torch.__version__}, "
             f"diffusers {diffusers.__version__}",
             f"measured bf16 matmul peak: {peak:.0f} TFLOP/s", "",
             "| row | ours | diffusers | diffusers/ours | ours TFLOP/s | % of peak |", "|---|---|---|---|---|---|"]  # fmt: skip
    lines += [row_line(*row) for row in rows]
    if notes:
        lines += [""] + notes
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.tiny:
        with open(args.results, "a") as fh:
            fh.write("\n" + text)


if __name__ == "__main__":
    main()
