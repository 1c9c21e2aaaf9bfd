"""bench/gpu.py's FLOP model reproduces REFERENCE.md's numbers (its TFLOP/s and % of peak columns rest on it)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from ltx_batch.models.transformer import TransformerConfig

GPU_BENCH = Path(__file__).parents[2] / "bench" / "gpu.py"


def _bench():
    spec = importlib.util.spec_from_file_location("ltx_bench_gpu", GPU_BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("model, tflop", [("2b", 41.7), ("13b", 234.0)])
def test_transformer_flops_match_the_reference(model, tflop):
    bench = _bench()
    size = bench.SIZES[model]
    width = size["num_attention_heads"] * size["attention_head_dim"]
    cfg = TransformerConfig.from_dict(dict(in_channels=128, out_channels=128, caption_channels=4096,
                                           cross_attention_dim=width, **size))  # fmt: skip
    flops = bench.transformer_flops(cfg, tokens=8064, text=128, batch=1)  # REFERENCE.md: batch 1 at 8064 tokens
    assert flops / 1e12 == pytest.approx(tflop, rel=0.01)
    assert bench.transformer_flops(cfg, tokens=8064, text=128, batch=2) == 2 * flops  # CFG doubles it
