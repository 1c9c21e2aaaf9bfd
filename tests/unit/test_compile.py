"""``model.compile``: compiled blocks compute what eager ones do, and new row shapes never recompile.

One tiny model whose blocks mix every linear kind the loader makes (plain ``nn.Linear`` with the fused GELU,
fp8 storage with a LoRA side path, GGUF Q8_0), so a single compilation (the slow part: inductor's C++
codegen, ~20 s cold on two cores) covers them all. Float32 on CPU.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch._dynamo
import torch.fx.experimental._config as shape_config
from torch._dynamo.utils import counters

from ltx_batch.models.compile import compile_blocks
from ltx_batch.models.quant import Float8Linear, GGUFLinear, replace_linears, to_float8
from ltx_batch.models.rope import grid_coords, rope_tables
from ltx_batch.models.transformer import LTXVideoTransformer, TransformerConfig

# Width 32: GGUF blocks hold 32 weights, and 32 % 6 leaves RoPE padding channels.
TINY = TransformerConfig(in_channels=8, out_channels=8, num_attention_heads=2, attention_head_dim=16,
                         cross_attention_dim=32, num_layers=2, caption_channels=32)  # fmt: skip
# (batch, latent frames, height, width, text length). The first has 32 tokens (= the width) and batch 2 (= the
# RoPE pair axis): sizes that duck shaping would tie together and then specialise.
SHAPES = [(2, 2, 4, 4, 5), (2, 3, 4, 6, 7), (3, 1, 4, 5, 9)]


def _q8_0(w: torch.Tensor) -> torch.Tensor:
    """GGML Q8_0 bytes of ``w`` (out, in): per 32 weights an fp16 scale then 32 int8."""
    blocks = w.reshape(-1, 32)
    d = blocks.abs().amax(1, keepdim=True) / 127
    q = (blocks / d).round().to(torch.int8)
    return torch.cat([d.half().view(torch.uint8), q.view(torch.uint8)], dim=1).reshape(w.shape[0], -1)


def _mixed_linears(block: torch.nn.Module, g: torch.Generator) -> None:
    """Self-attention in fp8 with a rank-4 LoRA side path, cross-attention GGUF Q8_0, feed-forward plain."""
    fp8, gguf = {}, {}
    for name in ("to_q", "to_k", "to_v", "to_out.0"):
        lin = block.get_submodule(f"attn1.{name}")
        fp8[f"attn1.{name}"] = layer = Float8Linear(to_float8(lin.weight.data, torch.float8_e4m3fn), lin.bias.data)
        layer.add_lora(torch.randn(4, lin.in_features, generator=g), torch.randn(lin.out_features, 4, generator=g),
                       0.1, torch.float32)  # fmt: skip
        lin = block.get_submodule(f"attn2.{name}")
        gguf[f"attn2.{name}"] = GGUFLinear(lin.in_features, lin.out_features, 8, bias=lin.bias.data,
                                           weight=_q8_0(lin.weight.data))  # fmt: skip
    replace_linears(block, {**fp8, **gguf})


def _model() -> LTXVideoTransformer:
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    m = LTXVideoTransformer(TINY).eval()
    with torch.no_grad():  # non-trivial modulation and q/k norms (their defaults are near zero / ones)
        for name, p in m.named_parameters():
            if "scale_shift_table" in name or "norm_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5 + (1.0 if "norm_" in name else 0.0))
    for block in m.transformer_blocks:
        _mixed_linears(block, g)
    return m


@pytest.fixture()
def fresh_dynamo(monkeypatch):
    monkeypatch.setattr(shape_config, "use_duck_shape", shape_config.use_duck_shape)  # compile_blocks sets it
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


def _inputs(batch: int, frames: int, height: int, width: int, text: int):
    """Condition-pipeline style: per-token timesteps and a padded text mask."""
    g = torch.Generator().manual_seed(batch * 1000 + frames * 100 + height * 10 + width)
    tokens = frames * height * width
    mask = torch.ones(batch, text)
    mask[0, text // 2 :] = 0
    return dict(
        hidden_states=torch.randn(batch, tokens, TINY.in_channels, generator=g),
        encoder_hidden_states=torch.randn(batch, text, TINY.caption_channels, generator=g),
        timestep=torch.rand(batch, tokens, generator=g) * 1000,
        encoder_attention_mask=mask,
        rope=rope_tables(grid_coords(1, frames, height, width) / 8, TINY.inner_dim),
    )


@torch.inference_mode()
def test_compiled_blocks_match_eager_and_new_shapes_do_not_recompile(fresh_dynamo):
    model = _model()
    expected = [model(**_inputs(*shape)) for shape in SHAPES]
    compile_blocks(model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = model(**_inputs(*SHAPES[0]))
    # RoPE in real arithmetic: a complex operator would fall back to eager kernels (inductor says so)
    assert not [w for w in caught if "complex" in str(w.message)], [str(w.message) for w in caught]
    with torch._dynamo.config.patch(error_on_recompile=True):  # a recompile raises here
        rest = [model(**_inputs(*shape)) for shape in SHAPES[1:]]
    for shape, got, want in zip(SHAPES, [first, *rest], expected):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5, msg=lambda m, s=shape: f"shape {s}: {m}")
    assert not counters["graph_break"], dict(counters["graph_break"])
    # one graph for both blocks and all three shapes
    assert counters["stats"]["unique_graphs"] == 1, dict(counters["stats"])


def test_compile_keeps_the_state_dict_keys(fresh_dynamo):
    m = LTXVideoTransformer(TINY)
    keys = list(m.state_dict())
    assert list(compile_blocks(m).state_dict()) == keys


def test_model_compile_is_part_of_the_model_cache_key(debug_dir, monkeypatch):
    from ltx_batch.job import load_job
    from ltx_batch.stages import models as stage_models

    compiled = []
    monkeypatch.setattr(stage_models, "compile_blocks", lambda m: compiled.append(m) or m)  # wiring only
    jobs = [load_job({"model": {"checkpoint": str(debug_dir), "compile": c}}) for c in (False, True)]
    cpu = torch.device("cpu")
    stage_models.clear()
    try:
        eager, comp = (stage_models.load(job, "transformer", dtype=torch.float32, device=cpu) for job in jobs)
        assert comp is not eager and compiled == [comp]
        assert stage_models.load(jobs[1], "transformer", dtype=torch.float32, device=cpu) is comp
        assert compiled == [comp]  # cached: compiled once per process
    finally:
        stage_models.clear()
