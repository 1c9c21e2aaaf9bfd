"""GPU benchmark: real-size random-weight LTX-Video models, ours against diffusers' on the same GPU.

    python bench/gpu.py                       # 2B at 768x512x121, bf16, CFG (needs an NVIDIA GPU)
    python bench/gpu.py --model 13b           # 13B (needs ~40 GB free)
    python bench/gpu.py --tiny --device cpu   # smoke run of every code path on a CPU (numbers meaningless)

Rows: the measured dense bf16 matmul peak; seconds per transformer step (one CFG forward of batch 2) with
achieved TFLOP/s and the fraction of that peak (REFERENCE.md's FLOP model: linears + attention); VAE decode
seconds and peak memory (0.9.5+ architecture). Same random weights in ours and diffusers'. Results are
appended to bench/RESULTS.md with the date and the GPU's name. (Not yet here: the end-to-end seconds per
video beside ``LTXConditionPipeline``; ``bench/models.py`` has that row at CPU sizes.)
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402

SIZES = {"2b": dict(num_attention_heads=32, attention_head_dim=64, num_layers=28),
         "13b": dict(num_attention_heads=32, attention_head_dim=128, num_layers=48)}  # fmt: skip
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
    per_token_linear = layers * (4 * d * d + 2 * d * d + 2 * 4 * d * d * 2)  # self qkvo, cross qo, FFN 4x
    cross_kv = layers * 2 * text * d * d * 2  # k, v of the text (cheap)
    attn = layers * (4 * tokens * tokens * d + 4 * tokens * text * d)
    return batch * (2 * tokens * per_token_linear / 2 + cross_kv + attn)


def build_transformers(args, device, dtype):
    from diffusers import LTXVideoTransformer3DModel

    from ltx_batch.models.transformer import LTXVideoTransformer, TransformerConfig

    size = SIZES[args.model] if not args.tiny else dict(num_attention_heads=4, attention_head_dim=16, num_layers=2)
    kw = dict(in_channels=128, out_channels=128, caption_channels=4096 if not args.tiny else 64,
              cross_attention_dim=size["num_attention_heads"] * size["attention_head_dim"], **size)  # fmt: skip
    torch.manual_seed(0)
    ref = LTXVideoTransformer3DModel(**kw).to(device=device, dtype=dtype).eval()
    ours = LTXVideoTransformer(TransformerConfig.from_dict(kw)).to(device=device, dtype=dtype).eval()
    ours.load_state_dict(ref.state_dict())
    return ours, ref


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


def bench_vae(args, device, dtype, rows):
    from diffusers import AutoencoderKLLTXVideo

    from ltx_batch.models.vae import VAEConfig, VideoVAE

    cfg = dict(VAE_095)
    if args.tiny:
        cfg.update(block_out_channels=(16, 32, 64, 64, 64), decoder_block_out_channels=(16, 32, 64), latent_channels=16,
                   layers_per_block=(1,) * 5, decoder_layers_per_block=(1,) * 4)  # fmt: skip
    torch.manual_seed(0)
    ref = AutoencoderKLLTXVideo(**cfg).to(device=device, dtype=dtype).eval()
    ours = VideoVAE(VAEConfig.from_dict({k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()}))
    ours = ours.to(device=device, dtype=dtype).eval()
    ours.load_state_dict(ref.state_dict())
    w, h, f = args.size
    z = torch.randn(1, cfg["latent_channels"], (f - 1) // 8 + 1, h // 32, w // 32, device=device, dtype=dtype)
    temb = torch.tensor([0.05], device=device, dtype=dtype)
    peaks = {}
    with torch.inference_mode():
        for name, fn in (("ours", lambda: ours.decode(z, temb)), ("ref", lambda: ref.decode(z, temb).sample)):
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            peaks[name] = timed(fn, device, max(1, args.repeats // 2))
            peaks[name + "_mem"] = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else 0.0
    rows.append(("VAE decode", peaks["ours"], peaks["ref"], None))
    if device.type == "cuda":
        rows.append(("VAE decode peak GiB", [peaks["ours_mem"]], [peaks["ref_mem"]], None))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=sorted(SIZES), default="2b")
    ap.add_argument("--size", default="768x512x121", help="WxHxF")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--tiny", action="store_true", help="toy widths: a smoke run of the script itself")
    args = ap.parse_args()
    args.size = tuple(int(v) for v in args.size.split("x"))
    device = torch.device(args.device)
    dtype = torch.bfloat16
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = matmul_peak(device, dtype, 8192 if device.type == "cuda" and not args.tiny else 512)
    rows: list = []
    bench_transformer(args, device, dtype, rows)
    bench_vae(args, device, dtype, rows)

    lines = [f"## {datetime.date.today()} {name}, {args.model}{' (tiny)' if args.tiny else ''}, "
             f"{'x'.join(map(str, args.size))}, bf16, torch {torch.__version__}",
             f"measured bf16 matmul peak: {peak:.0f} TFLOP/s", "",
             "| row | ours | diffusers | diffusers/ours | ours TFLOP/s | % of peak |", "|---|---|---|---|---|---|"]  # fmt: skip
    for label, ours, ref, flops in rows:
        mo, mr = statistics.median(ours), statistics.median(ref)
        tflops = f"{flops / mo / 1e12:.0f}" if flops else "-"
        frac = f"{100 * flops / mo / 1e12 / peak:.0f}%" if flops else "-"
        lines.append(f"| {label} | {mo:.3f} | {mr:.3f} | {mr / mo:.2f}x | {tflops} | {frac} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.tiny:
        with open(Path(__file__).with_name("RESULTS.md"), "a") as fh:
            fh.write("\n" + text)


if __name__ == "__main__":
    main()
