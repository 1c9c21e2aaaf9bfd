"""Speed of our models against diffusers', in one process, on the same weights and inputs.

    python bench/models.py            # the mid-size run (about 10 minutes on 2 CPU cores)
    python bench/models.py --quick    # a smoke run (about a minute)

Rows (see bench/README.md): the transformer forward (2048 wide, a few blocks, float32 and bfloat16) with a
padded prompt, with the RoPE tables built inside the timed call, with the padding trimmed as our sampler
does, and with our CPU oneDNN linear switched off; the VAE decode of the 0.9.5+ architecture; and a small
end-to-end render against diffusers' ``LTXConditionPipeline`` on the ``ltxv-debug`` checkpoint. Each row
times ours and diffusers' alternately (after warmup) and prints median and spread in seconds, the ratio
diffusers/ours (> 1: we are faster) of the medians and of the minima, and the largest difference of the
outputs, so a speed-up that changed the numbers shows.

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

SEED = 0  # inputs and weights are random (speed does not depend on their values) but fixed
THREADS = 2

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclass
class Row:
    name: str
    ours: list[float] = field(default_factory=list)
    ref: list[float] = field(default_factory=list)
    diff: float | None = None  # see print_summary
    note: str = ""

    @staticmethod
    def _fmt(ts: list[float]) -> str:
        return f"{statistics.median(ts):7.3f} [{min(ts):.3f}-{max(ts):.3f}]" if ts else "-"

    def _ratio(self, stat: Callable[[list[float]], float]) -> str:
        return f"{stat(self.ref) / stat(self.ours):.2f}x" if self.ours and self.ref else "-"

    def line(self) -> str:
        diff = "-" if self.diff is None else f"{self.diff:.1e}"
        return (
            f"{self.name:<46} {self._fmt(self.ours):>24} {self._fmt(self.ref):>24} "
            f"{self._ratio(statistics.median):>7} {self._ratio(min):>7} {diff:>8}  {self.note}"
        )


HEADER = (
    f"{'row':<46} {'ours s: median [min-max]':>24} {'diffusers s: med [min-max]':>24} "
    f"{'ratio':>7} {'r(min)':>7} {'diff':>8}"
)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
clock = CLOCKS["wall"]


def time_pair(row: Row, ours: Callable[[], object], ref: Callable[[], object], *, warmup: int, repeats: int) -> None:
    """Warm both up, then alternate them (who goes first alternates too) so load on the shared cores hits both."""
    for _ in range(warmup):
        ours()
        ref()
    for i in range(repeats):
        order = [(ours, row.ours), (ref, row.ref)]
        for fn, sink in order if i % 2 == 0 else order[::-1]:
            t0 = clock()
            fn()
            sink.append(clock() - t0)


def rel_diff(ours: torch.Tensor, ref: torch.Tensor) -> float:
    ours, ref = ours.float(), ref.float()
    return (ours - ref).abs().max().item() / max(1.0, ref.abs().max().item())


def shared_copy(ref: torch.nn.Module, build: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    """Our model holding diffusers' very tensors (built on the meta device, strict load with ``assign``): the
    same weights by construction and no second copy in memory (until a dtype cast makes one)."""
    with torch.device("meta"):
        ours = build()
    ours.load_state_dict(ref.state_dict(), strict=True, assign=True)
    return ours.eval()


def randomise_modulation(model: torch.nn.Module) -> None:
    """diffusers initialises the modulation tables near zero; real checkpoints are not."""
    g = torch.Generator().manual_seed(SEED + 7)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "scale_shift_table" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)


def print_row(row: Row) -> None:
    print(row.line(), flush=True)


# --------------------------------------------------------------------------------------------- transformer


def bench_transformer(args: argparse.Namespace, rows: list[Row]) -> None:
    from diffusers import LTXVideoTransformer3DModel

    from ltx_batch.models import transformer_blocks
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
    randomise_modulation(ref)
    ours = shared_copy(ref, lambda: LTXVideoTransformer(TransformerConfig.from_dict(dict(ref.config))))
    b = args.batch
    print(
        f"\ntransformer: {args.blocks} blocks x 2048 wide (32 heads x 64), {w}x{h}x{f} -> {seq} tokens, batch {b}, "
        f"prompt {args.valid_tokens} real + {args.caption_len - args.valid_tokens} padding tokens",
        flush=True,
    )
    g = torch.Generator().manual_seed(SEED + 1)
    hidden = torch.randn(b, seq, 128, generator=g)
    context = torch.randn(b, args.caption_len, 4096, generator=g)
    mask = torch.zeros(b, args.caption_len)
    mask[:, : args.valid_tokens] = 1.0
    timestep = torch.full((b,), 937.0)  # sigma * 1000, float32 as the samplers pass it
    scale = (8 / 25.0, 32, 32)  # LTXPipeline's rope_interpolation_scale at 25 fps
    grid = grid_from_latent_coords(grid_coords(1, lat_f, lat_h, lat_w), scale)

    for dtype in args.dtypes:
        ref.to(DTYPES[dtype])
        ours.to(DTYPES[dtype])
        x, c = hidden.to(DTYPES[dtype]), context.to(DTYPES[dtype])
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

        def run_ours_eager_linear(x=x, c=c, rope=rope):
            transformer_blocks.ONEDNN_CPU_LINEAR = False
            try:
                return ours(x, c, timestep, mask, rope)
            finally:
                transformer_blocks.ONEDNN_CPU_LINEAR = True

        trimmed = f"trimmed ({c_trim.shape[1]} tokens{', no mask' if m_trim is None else ''})"
        variants = [
            ("padded + mask", run_ours, "RoPE tables prebuilt (our design)"),
            ("padded + mask, + RoPE tables", run_ours_tables, "ours builds the tables inside the timed call"),
            (trimmed, run_ours_trim, "our sampler's input; diffusers: padded + mask"),
            ("padded + mask, eager Linear", run_ours_eager_linear, "ONEDNN_CPU_LINEAR off: plain nn.Linear"),
        ]
        with torch.inference_mode():
            expected = run_ref()
            for label, fn, note in variants:
                row = Row(f"transformer {dtype} · {label}", note=note)
                row.diff = rel_diff(fn(), expected)
                time_pair(row, fn, run_ref, warmup=args.warmup, repeats=args.repeats)
                rows.append(row)
                print_row(row)


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
)  # fmt: skip  (diffusers' scripts/convert_ltx_to_diffusers.py, version "0.9.5"; 0.9.7/0.9.8 use the same)


def bench_vae(args: argparse.Namespace, rows: list[Row]) -> None:
    from diffusers import AutoencoderKLLTXVideo

    from ltx_batch.models.vae import VAEConfig, VideoVAE

    w, h, f = args.vae_size
    torch.manual_seed(SEED)
    ref = AutoencoderKLLTXVideo(**VAE_095).eval()
    randomise_modulation(ref)
    ours = shared_copy(ref, lambda: VideoVAE(VAEConfig.from_dict(dict(ref.config))))
    ref.encoder = ours.encoder = None  # only the decoder is timed
    z_shape = (1, 128, (f - 1) // 8 + 1, h // 32, w // 32)
    print(f"\nVAE decode, 0.9.5+ architecture (decoder widths 1024/512/256/128): {w}x{h}x{f} from latents "
          f"{tuple(z_shape)}, decode timestep 0.05", flush=True)  # fmt: skip
    z = torch.randn(z_shape, generator=torch.Generator().manual_seed(SEED + 2))
    for dtype in args.vae_dtypes:
        dt = DTYPES[dtype]
        ref.to(dt)
        ours.to(dt)
        zz, t = z.to(dt), torch.tensor([0.05], dtype=dt)
        with torch.inference_mode():

            def run_ref():
                return ref.decode(zz, t, return_dict=False)[0]

            def run_ours():
                return ours.decode(zz, t)

            row = Row(f"VAE decode {dtype} · {w}x{h}x{f}")
            row.diff = rel_diff(run_ours(), run_ref())
            time_pair(row, run_ours, run_ref, warmup=args.warmup, repeats=args.repeats)
        rows.append(row)
        print_row(row)


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
        print(f"\nend to end: ltxv-debug (tiny random checkpoint: per-step overhead, not model FLOPs), {w}x{h}x{f}, "
              f"{steps} steps, CFG 3; prompt encoding + sampling + decode", flush=True)  # fmt: skip
        job = load_job({
            "name": "bench", "output": str(Path(tmp) / "out"), "save": ["frames"],
            "model": {"checkpoint": str(ckpt), "dtype": "float32", "device": "cpu"},
            "recipe": {"num_inference_steps": steps, "guidance_scale": 3.0, **decode},
        })  # fmt: skip
        renderer = Renderer(job)
        pipe = LTXConditionPipeline.from_pretrained(str(ckpt), dtype=torch.float32)
        pipe.set_progress_bar_config(disable=True)
        counter = iter(range(10**6))
        stage_seconds: list[dict[str, float]] = []

        def run_ours():
            rid = f"row{next(counter)}"
            result = renderer.render({"id": rid, "prompt": prompt, "negative_prompt": negative, "width": w,
                                      "height": h, "num_frames": f, "seed": 7})  # fmt: skip
            if not result.ok:
                raise RuntimeError(f"render failed: {result}")
            stage_seconds.append(result.seconds)
            return np.load(Path(job.output) / "frames" / f"{rid}.npy")

        def run_ref():
            return pipe(prompt=prompt, negative_prompt=negative, width=w, height=h, num_frames=f,
                        num_inference_steps=steps, guidance_scale=3.0, generator=torch.Generator().manual_seed(7),
                        output_type="np", **decode).frames[0]  # fmt: skip

        row = Row(f"render ltxv-debug {w}x{h}x{f} {steps} steps")
        row.diff = float(np.abs(run_ours().astype(np.float64) - run_ref().astype(np.float64)).max())
        time_pair(row, run_ours, run_ref, warmup=args.warmup, repeats=args.repeats)
        stages = {k: statistics.median(s[k] for s in stage_seconds) for k in stage_seconds[-1]}
        row.note = "frames diff in [0, 1]; ours (wall, median): " + ", ".join(
            f"{k} {v:.3f}" for k, v in stages.items()) + " (decode includes writing the .npy)"
        rows.append(row)
        print_row(row)


# --------------------------------------------------------------------------------------------- main


def bf16_speed() -> float:
    """How many times faster a 2048-wide bfloat16 matmul runs than float32 on this CPU."""
    a, b = torch.randn(1024, 2048), torch.randn(2048, 2048)
    took = {}
    for dt in (torch.float32, torch.bfloat16):
        x, y = a.to(dt), b.to(dt)
        x @ y
        t0 = time.perf_counter()
        for _ in range(5):
            x @ y
        took[dt] = time.perf_counter() - t0
    return took[torch.float32] / took[torch.bfloat16]


def size(text: str) -> tuple[int, int, int]:
    w, h, f = (int(v) for v in text.lower().split("x"))
    return w, h, f


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes, 1 block, 2 repeats: a smoke run")
    p.add_argument("--only", choices=["transformer", "vae", "render"], action="append",
                   help="run only these sections (repeatable)")  # fmt: skip
    p.add_argument("--repeats", type=int, default=None, help="timed runs per side (default 5, quick 2)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs per side first (default 1)")
    p.add_argument("--threads", type=int, default=THREADS, help=f"torch threads (default {THREADS})")
    p.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                   help="wall seconds (default) or this process's CPU seconds; with --threads 1, cpu time "
                        "barely moves when other processes load the machine")  # fmt: skip
    p.add_argument("--blocks", type=int, default=None, help="transformer blocks (default 2, quick 1)")
    p.add_argument("--batch", type=int, default=1, help="transformer batch (2 = a CFG pair)")
    p.add_argument("--size", type=size, default=None, help="transformer video WxHxF (default 768x512x25)")
    p.add_argument("--caption-len", type=int, default=128, help="padded prompt length (default 128)")
    p.add_argument("--valid-tokens", type=int, default=40, help="real prompt tokens, the rest padding (default 40)")
    p.add_argument("--dtypes", default="float32,bfloat16", help="transformer dtypes (default float32,bfloat16)")
    p.add_argument("--vae-size", type=size, default=None, help="VAE output WxHxF (default 256x256x9)")
    p.add_argument("--vae-dtypes", default="float32", help="VAE dtypes (default float32)")
    p.add_argument("--render-size", type=size, default=None, help="end-to-end WxHxF (default 256x192x25)")
    p.add_argument("--render-steps", type=int, default=None, help="end-to-end steps (default 8, quick 3)")
    args = p.parse_args(argv)
    q = args.quick
    args.repeats = args.repeats or (2 if q else 5)
    args.blocks = args.blocks or (1 if q else 2)
    args.size = args.size or ((256, 256, 9) if q else (768, 512, 25))
    args.vae_size = args.vae_size or ((64, 64, 9) if q else (256, 256, 9))
    args.render_size = args.render_size or ((96, 64, 9) if q else (256, 192, 25))
    args.render_steps = args.render_steps or (3 if q else 8)
    args.dtypes = args.dtypes.split(",")
    args.vae_dtypes = args.vae_dtypes.split(",")
    args.only = args.only or ["transformer", "vae", "render"]
    for d in args.dtypes + args.vae_dtypes:
        if d not in DTYPES:
            p.error(f"unknown dtype {d!r}; known: {sorted(DTYPES)}")
    if not 0 < args.valid_tokens <= args.caption_len:
        p.error("--valid-tokens must be in 1..--caption-len")
    return args


def main(argv: list[str] | None = None) -> int:
    global clock
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    clock = CLOCKS[args.clock]
    import diffusers

    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    speed = bf16_speed()
    print(f"torch {torch.__version__}, diffusers {diffusers.__version__}, python {sys.version.split()[0]}")
    print(f"cpu: {cpu_model()} ({os.cpu_count()} logical cpus, torch capability "
          f"{torch.backends.cpu.get_cpu_capability()}); load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    print(f"torch.set_num_threads({args.threads}) -> {torch.get_num_threads()} threads; torch.inference_mode(); "
          f"{args.clock} clock; warmup {args.warmup}, {args.repeats} timed runs per side, alternating; bf16 matmul "
          f"{speed:.2f}x float32's speed")  # fmt: skip
    if speed < 0.8 and "bfloat16" in args.dtypes:
        print("bfloat16 matmul is slower than float32 on this CPU: skipping the bfloat16 transformer rows")
        args.dtypes = [d for d in args.dtypes if d != "bfloat16"]
    rows: list[Row] = []
    print(HEADER)
    sections = {"transformer": bench_transformer, "vae": bench_vae, "render": bench_render}
    for name in ("transformer", "vae", "render"):
        if name in args.only:
            sections[name](args, rows)
    print(f"\nsummary (load average now {os.getloadavg()[0]:.1f}). ratio = diffusers median / ours median, r(min) = "
          "the same for the fastest runs; > 1 means ours is faster. diff = max |ours - diffusers| / max(1, max "
          "|diffusers|) on one output.")  # fmt: skip
    print(HEADER)
    for row in rows:
        print_row(row)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
