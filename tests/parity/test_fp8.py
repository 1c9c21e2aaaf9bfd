"""float8 weight storage (``model.weight_dtype``): exact against the dequantised reference, close to full
precision, equal to diffusers' layerwise casting, about half the Linear weight bytes of bf16.

diffusers' ``enable_layerwise_casting`` also stores the Linear biases in float8 (we keep them in the compute
dtype), so the comparison with it uses biases that float8 represents exactly.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from ltx_batch import load_job, render_one
from ltx_batch.models.quant import Float8Linear, float8_names, parameter_bytes, use_float8
from ltx_batch.models.rope import grid_coords, grid_from_latent_coords, rope_tables
from ltx_batch.models.transformer import LTXVideoTransformer, TransformerConfig
from ltx_batch.stages import models
from ltx_batch.weights.checkpoint import open_checkpoint
from ltx_batch.weights.lora import apply_loras
from ltx_batch.weights.strict import build_on_meta

from .tiny_transformer import transformer_pair

from .single_file_data import VAE_STYLES, diffusers_transformer, file_state, lt_transformer, model_config, randomize
from .single_file_data import LT_SCHEDULER_NEW, write_single_file
from .test_lora import MODULES, TINY, comfy_state, make_lora, peft_state, write

diffusers = pytest.importorskip("diffusers")
from diffusers import AutoencoderKLLTXVideo, LTXVideoTransformer3DModel  # noqa: E402

FP8 = torch.float8_e4m3fn
B, F_LAT, H_LAT, W_LAT, L_TXT = 2, 2, 3, 4, 5
SCALE = (8 / 25.0, 32, 32)


@pytest.fixture(scope="module")
def base():
    # biases float8 holds exactly: diffusers stores biases in float8 too
    return transformer_pair(TINY, bias_dtype=FP8)


def _inputs():
    g = torch.Generator().manual_seed(1)
    s = F_LAT * H_LAT * W_LAT
    return (torch.randn(B, s, TINY["in_channels"], generator=g), torch.randn(B, L_TXT, TINY["caption_channels"], generator=g),
            torch.tensor([937.5, 24.0]))  # fmt: skip


def ours_out(model) -> torch.Tensor:
    x, ctx, t = _inputs()
    rope = rope_tables(grid_from_latent_coords(grid_coords(1, F_LAT, H_LAT, W_LAT), SCALE), model.config.inner_dim)
    with torch.no_grad():
        return model(x, ctx, t, None, rope)


def diffusers_out(model) -> torch.Tensor:
    x, ctx, t = _inputs()
    with torch.no_grad():
        return model(x, ctx, t, torch.ones(B, L_TXT), num_frames=F_LAT, height=H_LAT, width=W_LAT,
                     rope_interpolation_scale=SCALE, return_dict=False)[0]  # fmt: skip


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item() / max(1.0, b.abs().max().item())


def test_float8_equals_dequantised_reference(base):
    _, ours = base
    fp8 = use_float8(copy.deepcopy(ours), FP8)
    rounded = copy.deepcopy(ours)
    with torch.no_grad():
        for name in float8_names(rounded):
            w = rounded.get_submodule(name).weight
            w.copy_(w.to(FP8).float())
    assert rel(ours_out(fp8), ours_out(rounded)) <= 1e-6
    # what stays high precision: norms, scale_shift_tables, biases, proj_in / proj_out
    for name, p in fp8.named_parameters():
        low = name.endswith(".weight") and isinstance(fp8.get_submodule(name.rsplit(".", 1)[0]), Float8Linear)
        assert p.dtype == (FP8 if low else torch.float32), name
    assert isinstance(fp8.proj_in, nn.Linear) and isinstance(fp8.proj_out, nn.Linear)
    assert isinstance(fp8.transformer_blocks[0].ff.net[2], Float8Linear)
    assert isinstance(fp8.time_embed.linear, Float8Linear) and isinstance(fp8.caption_projection.linear_1, Float8Linear)


def test_float8_close_to_full_precision(base):
    _, ours = base
    err = rel(ours_out(use_float8(copy.deepcopy(ours), FP8)), ours_out(ours))
    assert 1e-5 < err < 0.1, err  # float8 e4m3 keeps 3 mantissa bits: a few percent, not more


def test_float8_matches_diffusers_layerwise_casting(base):
    ref, ours = base
    cast = copy.deepcopy(ref)
    cast.enable_layerwise_casting(storage_dtype=FP8, compute_dtype=torch.float32)
    assert cast.transformer_blocks[0].attn1.to_q.weight.dtype == FP8
    assert rel(ours_out(use_float8(copy.deepcopy(ours), FP8)), diffusers_out(cast)) <= 1e-5


def test_float8_with_lora_side_path_matches_diffusers(base, tmp_path):
    pytest.importorskip("peft")
    ref, ours = base
    lora = make_lora(ref, MODULES, 11)
    path = write(tmp_path / "l.safetensors", comfy_state(lora, style="A_B"))
    cast = copy.deepcopy(ref)
    cast.load_lora_adapter(peft_state(lora), prefix="transformer", adapter_name="x")
    cast.set_adapters(["x"], weights=[0.6])
    cast.enable_layerwise_casting(storage_dtype=FP8, compute_dtype=torch.float32)
    model = use_float8(copy.deepcopy(ours), FP8)
    apply_loras(model, [(path, 0.6)], dtype=torch.float32)
    assert model.transformer_blocks[0].attn1.to_q.weight.dtype == FP8  # not merged: a side path
    assert rel(ours_out(model), diffusers_out(cast)) <= 1e-5
    assert rel(ours_out(model), ours_out(use_float8(copy.deepcopy(ours), FP8))) > 1e-3


@pytest.mark.parametrize("name, config", [("2B", TransformerConfig()),
                                          ("13B", TransformerConfig(attention_head_dim=128, cross_attention_dim=4096,
                                                                    num_layers=48))])  # fmt: skip
def test_parameter_memory_real_sizes(name, config):
    """Bytes of the released architectures (built on meta: no memory used): fp8 halves bf16's Linear weights."""
    bf16 = build_on_meta(lambda: LTXVideoTransformer(config)).to(torch.bfloat16)
    fp8 = use_float8(build_on_meta(lambda: LTXVideoTransformer(config)).to(torch.bfloat16), FP8)
    b, f = parameter_bytes(bf16), parameter_bytes(fp8)
    print(f"\n{name}: bf16 total {b['total'] / 2**30:.3f} GiB (linear weights {b['linear_weights'] / 2**30:.3f}); "
          f"fp8 total {f['total'] / 2**30:.3f} GiB (linear weights {f['linear_weights'] / 2**30:.3f})")  # fmt: skip
    assert 0.5 <= f["linear_weights"] / b["linear_weights"] < 0.501
    assert f["total"] / b["total"] < 0.51


def test_checkpoint_folder_loads_with_float8_storage(debug_dir):
    ckpt = open_checkpoint(str(debug_dir))
    full = ckpt.load_transformer(dtype=torch.bfloat16)
    fp8 = ckpt.load_transformer(dtype=torch.bfloat16, weight_dtype=FP8)
    # float8 weights are rounded once, from the file's float32 (not float32 -> bfloat16 -> float8)
    expected = use_float8(ckpt.load_transformer(dtype=torch.float32), FP8).state_dict()
    assert fp8.state_dict().keys() == expected.keys()
    for k, v in expected.items():
        got = fp8.state_dict()[k]
        assert got.dtype == (FP8 if v.dtype == FP8 else torch.bfloat16), k
        assert torch.equal(got.float(), v.float() if v.dtype == FP8 else v.bfloat16().float()), k
    before, after = parameter_bytes(full), parameter_bytes(fp8)
    assert after["linear_weights"] < 0.52 * before["linear_weights"]


def test_fp8_single_file_keeps_its_float8_weights(tmp_path):
    lt_vae, d_vae = VAE_STYLES["0.9.5"]
    tr = randomize(LTXVideoTransformer3DModel(**diffusers_transformer(8)).state_dict(), "tr")
    vae = randomize(AutoencoderKLLTXVideo(**d_vae).state_dict(), "vae")
    fp8 = {k: v.to(FP8) if v.ndim == 2 else v.to(torch.bfloat16) for k, v in tr.items()}  # every matrix float8
    config = model_config(lt_vae, lt_transformer(in_channels=8), LT_SCHEDULER_NEW)
    path = write_single_file(tmp_path / "fp8.safetensors", file_state(transformer=fp8, vae=vae, lt_vae=lt_vae), config)
    model = open_checkpoint(str(path)).load_transformer(dtype=torch.bfloat16, weight_dtype=FP8)
    state = model.state_dict()
    for k, v in fp8.items():
        kept = k.endswith(".weight") and isinstance(model.get_submodule(k.rsplit(".", 1)[0]), Float8Linear)
        assert state[k].dtype == (FP8 if kept else torch.bfloat16), k
        assert torch.equal(state[k].float(), v.float()), k  # bitwise the file's values
    assert state["proj_in.weight"].dtype == torch.bfloat16  # float8 in the file, high precision in the model


def test_render_with_float8_storage(debug_dir, tmp_path):
    def frames(out, **model):
        job = load_job({"name": "fp8", "model": {"checkpoint": str(debug_dir), "dtype": "float32", "device": "cpu",
                                                 **model},
                        "recipe": {"num_inference_steps": 3, "guidance_scale": 3.0}, "output": str(out),
                        "save": ["frames"]})  # fmt: skip
        result = render_one(job, {"id": "row", "prompt": "a cat", "width": 96, "height": 64, "num_frames": 9, "seed": 3})
        assert result.ok, result
        return np.load(out / "frames" / "row.npy")

    fp8 = frames(tmp_path / "a", weight_dtype="float8_e4m3fn")
    full = frames(tmp_path / "b")
    diff = np.abs(fp8 - full)
    assert 0 < diff.mean() < 0.02, diff.mean()
    models.clear()
