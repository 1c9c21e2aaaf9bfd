"""Checks that need an NVIDIA GPU: skipped where CUDA is absent (CI), run with ``python -m pytest tests/gpu``.

``LTX_TEST_DEVICE=cpu`` runs the device-neutral ones on a CPU, which checks the tests themselves; the
CUDA-specific ones (kernel choice, host synchronisation) need CUDA.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from ltx_batch import Renderer, load_job
from ltx_batch.models.rope import grid_coords, grid_from_latent_coords, rope_tables
from ltx_batch.models.transformer import LTXVideoTransformer, TransformerConfig

from ..conftest import frames_close

DEVICE = os.environ.get("LTX_TEST_DEVICE", "cuda")
pytestmark = pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(), reason="no CUDA device")
cuda_only = pytest.mark.skipif(DEVICE != "cuda", reason="CUDA-specific check")

# Real head width (64, as the 2B and 13B models; the flash kernel needs a multiple of 8), few heads and blocks.
SMALL = dict(in_channels=16, out_channels=16, num_attention_heads=4, attention_head_dim=64,
             cross_attention_dim=256, num_layers=2, caption_channels=64)  # fmt: skip


IMAGE = Path(__file__).parents[2] / "manifests" / "media" / "test_card.png"


def _render(tmp_path, name: str, device: str, dtype: str, steps: int = 3, image: bool = False) -> np.ndarray:
    job = load_job({
        "model": {"preset": "ltxv-debug", "dtype": dtype, "device": device},
        "recipe": {"num_inference_steps": steps}, "defaults": {"width": 96, "height": 64, "num_frames": 17},
        "output": str(tmp_path / name), "save": ["frames"],
    })  # fmt: skip
    row = {"id": "r", "prompt": "a red ball bouncing", "seed": 7}
    if image:  # image-to-video: the sampler re-noises the conditioned tokens with fresh CPU noise every step
        row["conditions"] = [{"uri": str(IMAGE), "frame_index": 0, "strength": 1.0}]
    result = Renderer(job).render(row)
    assert result.ok, result.error
    return np.load(tmp_path / name / "frames" / "r.npy")


def _transformer_inputs(device, dtype, frames: int = 3, h: int = 8, w: int = 12, batch: int = 2):
    g = torch.Generator().manual_seed(0)
    seq = frames * h * w
    x = torch.randn(batch, seq, SMALL["in_channels"], generator=g)
    text = torch.randn(batch, 10, SMALL["caption_channels"], generator=g)
    t = torch.full((batch,), 700.0)
    grid = grid_from_latent_coords(grid_coords(1, frames, h, w), (8 / 25, 32, 32))
    cos, sin = rope_tables(grid, SMALL["num_attention_heads"] * SMALL["attention_head_dim"])
    return x.to(device, dtype), text.to(device, dtype), t.to(device), (cos.to(device), sin.to(device))


def _small_transformer(device, dtype) -> LTXVideoTransformer:
    torch.manual_seed(0)
    model = LTXVideoTransformer(TransformerConfig.from_dict(SMALL)).eval()
    with torch.no_grad():  # non-trivial modulation (its default is near zero)
        for block in model.transformer_blocks:
            block.scale_shift_table.normal_(0.0, 0.5)
    return model.to(device, dtype)


def test_float32_render_on_the_device_matches_cpu(tmp_path):
    # cuDNN convolutions may use TF32 in float32: the VAE's frames match at the parity tolerance, not bit for bit
    frames_close(_render(tmp_path, "dev", DEVICE, "float32"), _render(tmp_path, "cpu", "cpu", "float32"),
                 max_tol=1e-2, mean_tol=1e-3)  # fmt: skip


def test_bfloat16_transformer_stays_within_bf16_tolerance_of_float32():
    ref_model = _small_transformer("cpu", torch.float32)
    model = _small_transformer(DEVICE, torch.bfloat16)
    with torch.inference_mode():
        expected = ref_model(*_transformer_inputs("cpu", torch.float32)[:3], None,
                             _transformer_inputs("cpu", torch.float32)[3])  # fmt: skip
        x, text, t, rope = _transformer_inputs(DEVICE, torch.bfloat16)
        got = model(x, text, t, None, rope).float().cpu()
    rel = (got - expected).norm() / expected.norm()
    assert rel < 2e-2, f"bf16 relative error {rel:.3g} against float32"


@cuda_only
def test_attention_runs_on_the_flash_kernel():
    # with no text mask (the sampler trims padding away) every SDPA call must be one the flash kernel takes.
    # Self-attention (most of the FLOPs) never has a mask; with CFG, a negative prompt shorter than the positive
    # keeps one in cross-attention, which then runs on the memory-efficient kernel instead.
    from torch.nn.attention import SDPBackend, sdpa_kernel

    model = _small_transformer(DEVICE, torch.bfloat16)
    x, text, t, rope = _transformer_inputs(DEVICE, torch.bfloat16)
    with torch.inference_mode(), sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
        out = model(x, text, t, None, rope)
    assert torch.isfinite(out).all()


@cuda_only
@pytest.mark.parametrize("image", [False, True], ids=["t2v", "i2v"])
def test_no_host_synchronisation_per_step(tmp_path, image):
    # Synchronising calls outside the loop (prompt trimming, reading frames back) are fine; inside it they
    # would stall the GPU every step. Count them for 2 and for 5 steps: the counts must not grow.
    def syncs(steps: int) -> int:
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                _render(tmp_path, f"sync{steps}", DEVICE, "bfloat16", steps=steps, image=image)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        return sum("synchroniz" in str(w.message) for w in caught)

    syncs(2)  # warm-up: first-call allocations and lazy initialisation
    two, five = syncs(2), syncs(5)
    assert two > 0, "no synchronisation recorded at all (reading the frames back is one): the count measures nothing"
    assert five == two


@cuda_only
def test_bfloat16_render_is_close_to_float32(tmp_path):
    frames_close(_render(tmp_path, "bf16", DEVICE, "bfloat16"), _render(tmp_path, "f32", DEVICE, "float32"),
                 max_tol=0.25, mean_tol=2e-2)  # fmt: skip


def test_compiled_blocks_match_eager_without_recompiling():
    import torch._dynamo

    from ltx_batch.models.compile import compile_blocks

    eager = _small_transformer(DEVICE, torch.bfloat16)
    compiled = compile_blocks(_small_transformer(DEVICE, torch.bfloat16))
    torch._dynamo.reset()
    try:
        for i, (frames, h, w) in enumerate([(3, 8, 12), (2, 8, 16), (4, 4, 12)]):
            torch._dynamo.config.error_on_recompile = i > 0  # shapes after the first reuse the graph
            x, text, t, rope = _transformer_inputs(DEVICE, torch.bfloat16, frames, h, w)
            with torch.inference_mode():
                expected = eager(x.clone(), text, t, None, rope).float()
                got = compiled(x.clone(), text, t, None, rope).float()
            rel = (got - expected).norm() / expected.norm()
            assert rel < 1e-2, f"shape {i}: compiled differs from eager by {rel:.3g}"
    finally:
        torch._dynamo.config.error_on_recompile = False
        torch._dynamo.reset()


LOST_PROBE = """
import sys, torch
from ltx_batch.stages.base import device_lost
cuda = torch.device("cuda")
try:
    torch.empty(1 << 50, dtype=torch.uint8, device=cuda)  # 1 PiB: out of memory, which the device survives
except Exception as e:
    print("oom", device_lost(e, cuda))
print("value", device_lost(ValueError("conditions[0].uri: cannot read"), cuda))
x = torch.zeros(4, device=cuda)
try:
    x[torch.tensor([10], device=cuda)] += 1  # out-of-bounds index: a device-side assert, sticky
    torch.cuda.synchronize()
except Exception as e:
    print("assert", device_lost(e, cuda), type(e).__name__)
"""


@cuda_only
def test_a_device_side_assert_is_a_lost_device_and_out_of_memory_is_not():
    # in a process of its own: the assert leaves that process's CUDA context unusable
    import subprocess
    import sys

    root = Path(__file__).parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", LOST_PROBE], capture_output=True, text=True, env=env, timeout=300)
    lines = dict(line.split(" ", 1) for line in done.stdout.splitlines() if line.split(" ", 1)[0] in
                 ("oom", "value", "assert"))  # fmt: skip
    assert lines.get("oom") == "False" and lines.get("value") == "False", done.stdout + done.stderr
    assert lines.get("assert", "").startswith("True"), done.stdout + done.stderr
