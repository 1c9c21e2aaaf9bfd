"""Speed of our models against diffusers', in one process, on the same weights and inputs.

    python bench/models.py            # the mid-size run (several minutes on 2 CPU cores)
    python bench/models.py --quick    # a smoke run (well under a minute)

Rows (see bench/README.md): the transformer forward (2048 wide, a few blocks, float32 and bfloat16) with a
padded prompt, with the RoPE tables built inside the timed call, and with the padding trimmed as our sampler
does; the VAE decode of the 0.9.5+ architecture; and a small end-to-end render against diffusers'
``LTXConditionPipeline`` on the ``ltxv-debug`` checkpoint. Each row times ours and diffusers' alternately
(after warmup) and prints median and spread in seconds and the ratio diffusers/ours (> 1: we are faster),
plus the largest difference of the outputs, so a speed-up that changed the numbers shows.

diffusers is a benchmark-only reference here, never imported by ``ltx_batch``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

import numpy as np  # noqa: E402
import torch  # noqa: E402

# Fixed input seeds; the weights are random too (speed does not depend on their values).
SEED = 0
THREADS = 2


@dataclass
class Row:
    name: str
    ours: list[float] = field(default_factory=list)
    ref: list[float] = field(default_factory=list)
    diff: float | None = None  # max |ours - diffusers| / max(1, max |diffusers|)
    note: str = ""

    @staticmethod
    def _fmt(ts: list[float]) -> str:
        if not ts:
            return "-"
        return f"{statistics.median(ts):8.3f} [{min(ts):.3f}-{max(ts):.3f}]"

    def line(self) -> str:
        ratio = "-"
        if self.ours and self.ref:
            ratio = f"{statistics.median(self.ref) / statistics.median(self.ours):5.2f}x"
        diff = "-" if self.diff is None else f"{self.diff:.1e}"
        return f"{self.name:<58} {self._fmt(self.ours):>26} {self._fmt(self.ref):>26} {ratio:>7} {diff:>8}  {self.note}"


HEADER = f"{'row':<58} {'ours s: median [min-max]':>26} {'diffusers s: median [min-max]':>26} {'ratio':>7} {'diff':>8}"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def time_pair(
    row: Row, ours: Callable[[], object], ref: Callable[[], object], *, warmup: int, repeats: int
) -> None:
    """Warm both up, then alternate them (who goes first alternates too) so load on the shared cores hits both."""
    for _ in range(warmup):
        ours()
        ref()
    for i in range(repeats):
        order = [(ours, row.ours), (ref, row.ref)]
        for fn, sink in order if i % 2 == 0 else order[::-1]:
            t0 = time.perf_counter()
            fn()
            sink.append(time.perf_counter() - t0)


def rel_diff(ours: torch.Tensor, ref: torch.Tensor) -> float:
    ours, ref = ours.float(), ref.float()
    return (ours - ref).abs().max().item() / max(1.0, ref.abs().max().item())


def print_row(row: Row) -> None:
    print(row.line(), flush=True)


# --------------------------------------------------------------------------------------------- transformer


def bench_transformer(args: argparse.Namespace, rows: list[Row]) -> None:
    from diffusers import LTXVideoTransformer3DModel

    from ltx_batch.models.rope import grid_coords, grid_from_latent_coords, rope_tables
    from ltx_batch.models.transformer import LTXVideoTransformer, TransformerConfig, trim_encoder_padding

    w, h, f = args.size
    lat_f, lat_h, lat_w = (f - 1) // 8 + 1, h // 32, w // 32
    seq = lat_f * lat_h * lat_w
    cfg = dict(
        in_channels=128, out_channels=128, num_attention_heads=32, attention_head_dim=64,
        cross_attention_dim=2048, num_layers=args.blocks, caption_channels=4096,
    )  # fmt: skip
    torch.manual_seed(SEED)
    ref = LTXVideoTransformer3DModel(**cfg).eval()
    with torch.no_grad():  # diffusers initialises the modulation tables near zero; real checkpoints are not
        for name, p in ref.named_parameters():
            if "scale_shift_table" in name:
                p.copy_(torch.randn_like(p) * 0.3)
    ours = LTXVideoTransformer(TransformerConfig.from_dict(dict(ref.config))).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    print(
        f"\ntransformer: {args.blocks} blocks x 2048 wide (32 x 64), {w}x{h}x{f} -> {seq} tokens, batch {args.batch}, "
        f"prompt {args.valid_tokens} of {args.caption_len} tokens (rest padding)",
        flush=True,
    )

    g = torch.Generator().manual_seed(SEED + 1)
    b = args.batch
    hidden = torch.randn(b, seq, 128, generator=g)
    context = torch.randn(b, args.caption_len, 4096, generator=g)
    mask = torch.zeros(b, args.caption_len)
    mask[:, : args.valid_tokens] = 1.0
    timestep = torch.full((b,), 937.0)
    scale = (8 / 25.0, 32, 32)  # LTXPipeline's rope_interpolation_scale at 25 fps
    grid = grid_from_latent_coords(grid_coords(1, lat_f, lat_h, lat_w), scale)

    for dtype in args.dtypes:
        dt = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
        ref.to(dt)
        ours.to(dt)
        x, c = hidden.to(dt), context.to(dt)
        rope = rope_tables(grid, 2048)
        c_trim, m_trim = trim_encoder_padding(c, mask)

        def run_ref(x=x, c=c):
            return ref(x, c, timestep, mask, num_frames=lat_f, height=lat_h, width=lat_w,
                       rope_interpolation_scale=scale, return_dict=False)[0]  # fmt: skip

        def run_ours(x=x, c=c, rope=rope):
            return ours(x, c, timestep, mask, rope)

        def run_ours_tables(x=x, c=c):
            return ours(x, c, timestep, mask, rope_tables(grid, 2048))

        def run_ours_trim(x=x, c=c_trim, m=m_trim, rope=rope):
            return ours(x, c, timestep, m, rope)

        with torch.inference_mode():
            expected = run_ref()
            variants = [
                ("padded mask, tables prebuilt", run_ours),
                ("padded mask, + RoPE tables in the call", run_ours_tables),
                (f"trimmed to {c_trim.shape[1]} tokens{', no mask' if m_trim is None else ''}", run_ours_trim),
            ]
            for label, fn in variants:
                row = Row(f"transformer {dtype} · {label}")
                row.diff = rel_diff(fn(), expected)
                if label.startswith("trimmed"):
                    row.note = "diffusers: padded prompt + mask, as its pipeline runs it"
                time_pair(row, fn, run_ref, warmup=args.warmup, repeats=args.repeats)
                rows.append(row)
                print_row(row)
    del ref, ours


# --------------------------------------------------------------------------------------------- VAE


VAE_095 = dict(
    in_channels=3, out_channels=3, latent_channels=128,
    block_out_channels=(128, 256, 512, 1024, 2048), down_block_types=("LTXVideo095DownBlock3D",) * 4,
    decoder_block_out_channels=(256, 512, 1024), layers_per_block=(4, 6, 6, 2, 2),
    decoder_layers_per_block=(5, 5, 5, 5), spatio_temporal_scaling=(True,) * 4,
    decoder_spatio_temporal_scaling=(True,) * 3, decoder_inject_noise=(False,) * 4,
    downsample_type=("spatial", "temporal", "spatiotemporal", "spatiotemporal"), upsample_residual=(True,) * 3,
    upsample_factor=(2, 2, 2), timestep_conditioning=True, patch_size=4, patch_size_t=1, resnet_norm_eps=1e-6,
    scaling_factor=1.0, encoder_causal=True, decoder_causal=False, spatial_compression_ratio=32,
    temporal_compression_ratio=8,
)  # fmt: skip  (diffusers' scripts/convert_ltx_to_diffusers.py, version "0.9.5"; 0.9.7/0.9.8 are the same)


def bench_vae(args: argparse.Namespace, rows: list[Row]) -> None:
    from diffusers import AutoencoderKLLTXVideo

    from ltx_batch.models.vae import VAEConfig, VideoVAE

    w, h, f = args.vae_size
    torch.manual_seed(SEED)
    ref = AutoencoderKLLTXVideo(**VAE_095).eval()
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if "scale_shift_table" in name:
                p.copy_(torch.randn_like(p) * 0.3)
    ours = VideoVAE(VAEConfig.from_dict(dict(ref.config))).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    # Only the decoder is timed; drop the encoders to save memory.
    ref.encoder = None
    ours.encoder = None
    z_shape = (1, 128, (f - 1) // 8 + 1, h // 32, w // 32)
    print(f"\nVAE decode (0.9.5+ widths 1024/512/256/128 at the output end): {w}x{h}x{f}, latents {z_shape}", flush=True)
    z = torch.randn(z_shape, generator=torch.Generator().manual_seed(SEED + 2))
    t = torch.tensor([0.05])
    for dtype in args.vae_dtypes:
        dt = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
        ref.to(dt)
        ours.to(dt)
        zz = z.to(dt)
        with torch.inference_mode():

            def run_ref():
                return ref.decode(zz, t.to(dt), return_dict=False)[0]

            def run_ours():
                return ours.decode(zz, t.to(dt))

            row = Row(f"VAE decode {dtype} · {w}x{h}x{f}")
            row.diff = rel_diff(run_ours(), run_ref())
            time_pair(row, run_ours, run_ref, warmup=args.warmup, repeats=args.repeats)
        rows.append(row)
        print_row(row)
    del ref, ours


# --------------------------------------------------------------------------------------------- end to end


def bench_render(args: argparse.Namespace, rows: list[Row]) -> None:
    from diffusers import LTXConditionPipeline

    from ltx_batch import load_job
    from ltx_batch.render import Renderer
    from ltx_batch.weights.resolve import resolve

    w, h, f = args.render_size
    steps = args.render_steps
    prompt, negative = "A red cat walks on the street at night", "blurry, dark"
    decode = dict(decode_timestep=0.05, decode_noise_scale=0.025)
    with tempfile.TemporaryDirectory(prefix="ltx-bench-") as tmp:
        os.environ["LTX_BATCH_CACHE"] = str(Path(tmp) / "cache")
        ckpt = resolve("ltxv-debug").path
        print(f"\nend to end: ltxv-debug (tiny random 0.9.5-style checkpoint), {w}x{h}x{f}, {steps} steps, CFG 3, "
              "text encoding + sampling + decode, frames to numpy", flush=True)  # fmt: skip
        job = load_job({
            "name": "bench", "output": str(Path(tmp) / "out"), "save": ["frames"],
            "model": {"checkpoint": str(ckpt), "dtype": "float32", "device": "cpu"},
            "recipe": {"num_inference_steps": steps, "guidance_scale": 3.0, **decode},
        })  # fmt: skip
        renderer = Renderer(job)
        pipe = LTXConditionPipeline.from_pretrained(str(ckpt), dtype=torch.float32)
        pipe.set_progress_bar_config(disable=True)
        counter = iter(range(10**6))

        def run_ours():
            rid = f"row{next(counter)}"
            result = renderer.render({"id": rid, "prompt": prompt, "negative_prompt": negative, "width": w,
                                      "height": h, "num_frames": f, "seed": 7})  # fmt: skip
            if not result.ok:
                raise RuntimeError(f"render failed: {result}")
            return np.load(Path(job.output) / "frames" / f"{rid}.npy")

        def run_ref():
            return pipe(prompt=prompt, negative_prompt=negative, width=w, height=h, num_frames=f,
                        num_inference_steps=steps, guidance_scale=3.0, generator=torch.Generator().manual_seed(7),
                        output_type="np", **decode).frames[0]  # fmt: skip

        row = Row(f"render (ltxv-debug) · {w}x{h}x{f}, {steps} steps")
        row.diff = float(np.abs(run_ours().astype(np.float64) - run_ref().astype(np.float64)).max())
        row.note = "diff in [0, 1] pixels; includes frame writing for ours"
        time_pair(row, run_ours, run_ref, warmup=args.warmup, repeats=args.repeats)
        rows.append(row)
        print_row(row)


# --------------------------------------------------------------------------------------------- main


def bf16_is_fast() -> tuple[bool, str]:
    """bfloat16 is worth timing when a 2048-wide matmul in bf16 is not much slower than in float32."""
    a = torch.randn(1024, 2048)
    b = torch.randn(2048, 2048)
    speed = {}
    for dt in (torch.float32, torch.bfloat16):
        x, y = a.to(dt), b.to(dt)
        for _ in range(2):
            x @ y
        t0 = time.perf_counter()
        for _ in range(5):
            x @ y
        speed[dt] = (time.perf_counter() - t0) / 5
    ratio = speed[torch.float32] / speed[torch.bfloat16]
    return ratio > 0.8, f"bf16 matmul {ratio:.2f}x float32's speed"


def size(text: str) -> tuple[int, int, int]:
    w, h, f = (int(v) for v in text.lower().split("x"))
    return w, h, f


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes, 1 block, 2 repeats: a smoke run")
    p.add_argument("--only", choices=["transformer", "vae", "render"], action="append",
                   help="run only these sections (repeatable)")  # fmt: skip
    p.add_argument("--repeats", type=int, default=None, help="timed runs per side (default 5, quick 2)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs per side first")
    p.add_argument("--blocks", type=int, default=None, help="transformer blocks (default 2, quick 1)")
    p.add_argument("--batch", type=int, default=1, help="transformer batch (2 = a CFG pair)")
    p.add_argument("--size", type=size, default=None, help="transformer video WxHxF (default 768x512x25)")
    p.add_argument("--caption-len", type=int, default=128, help="padded prompt length")
    p.add_argument("--valid-tokens", type=int, default=40, help="real prompt tokens, the rest is padding")
    p.add_argument("--dtypes", default=None, help="transformer dtypes, comma separated (default float32,bfloat16)")
    p.add_argument("--vae-size", type=size, default=None, help="VAE output WxHxF (default 128x128x9)")
    p.add_argument("--vae-dtypes", default="float32", help="VAE dtypes, comma separated")
    p.add_argument("--render-size", type=size, default=None, help="end-to-end WxHxF (default 192x128x25)")
    p.add_argument("--render-steps", type=int, default=None, help="end-to-end steps (default 8, quick 3)")
    args = p.parse_args(argv)
    q = args.quick
    args.repeats = args.repeats or (2 if q else 5)
    args.blocks = args.blocks or (1 if q else 2)
    args.size = args.size or ((256, 256, 9) if q else (768, 512, 25))
    args.vae_size = args.vae_size or ((64, 64, 9) if q else (128, 128, 9))
    args.render_size = args.render_size or ((96, 64, 9) if q else (192, 128, 25))
    args.render_steps = args.render_steps or (3 if q else 8)
    args.dtypes = (args.dtypes or "float32,bfloat16").split(",")
    args.vae_dtypes = args.vae_dtypes.split(",")
    args.only = args.only or ["transformer", "vae", "render"]
    if args.valid_tokens > args.caption_len:
        p.error("--valid-tokens must not exceed --caption-len")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(THREADS)
    import diffusers

    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    fast_bf16, bf16_note = bf16_is_fast()
    print(f"torch {torch.__version__}, diffusers {diffusers.__version__}, python {sys.version.split()[0]}")
    print(f"cpu: {cpu_model()} ({os.cpu_count()} logical cpus, capability {torch.backends.cpu.get_cpu_capability()})")
    print(f"torch threads: {torch.get_num_threads()} (torch.set_num_threads({THREADS})), inference_mode, "
          f"warmup {args.warmup}, repeats {args.repeats}; {bf16_note}")  # fmt: skip
    if not fast_bf16 and "bfloat16" in args.dtypes:
        print("bfloat16 is slow on this CPU: skipping the bfloat16 transformer rows")
        args.dtypes = [d for d in args.dtypes if d != "bfloat16"]
    rows: list[Row] = []
    print(HEADER)
    sections = {"transformer": bench_transformer, "vae": bench_vae, "render": bench_render}
    for name in ("transformer", "vae", "render"):
        if name in args.only:
            sections[name](args, rows)
    print("\nsummary (ratio = diffusers median / ours median; > 1 means ours is faster; diff = max |ours - diffusers| "
          "relative to max(1, max |diffusers|))")  # fmt: skip
    print(HEADER)
    for row in rows:
        print_row(row)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
