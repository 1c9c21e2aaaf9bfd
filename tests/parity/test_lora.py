"""LoRA parity: our merged adapters against diffusers + PEFT with the same adapter loaded and scaled.

A tiny random diffusers transformer gets random rank-2/4 adapters on attention and feed-forward Linears, written
in each key format (``weights/lora.py``). Where diffusers' LTX loader reads the file itself (diffusers/PEFT
keys, ``diffusion_model.`` + ``lora_A``/``lora_B`` as Lightricks' trainer writes) it loads that very file;
for the formats it cannot read (``lora_down``/``lora_up`` + ``alpha``, original Lightricks names, kohya names)
it loads the same adapter in PEFT keys with the alphas as PEFT config (ComfyUI's and kohya's meaning:
``alpha / rank``). Outputs agree to 1e-4 relative, also for two adapters at once and end to end.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from ltx_batch import load_job, render_one
from ltx_batch.models.rope import grid_coords, grid_from_latent_coords, rope_tables
from ltx_batch.stages import models
from ltx_batch.weights.keymaps_ltx import transformer_file_key
from ltx_batch.weights.lora import LoraError, apply_loras

from .tiny_transformer import transformer_pair

from ..conftest import frames_close

pytest.importorskip("peft")
diffusers = pytest.importorskip("diffusers")
from diffusers import LTXConditionPipeline  # noqa: E402

TINY = dict(in_channels=8, out_channels=8, num_attention_heads=2, attention_head_dim=8, cross_attention_dim=16,
            num_layers=2, caption_channels=16)  # fmt: skip
B, F_LAT, H_LAT, W_LAT, L_TXT = 2, 2, 3, 4, 5
SCALE = (8 / 25.0, 32, 32)
# module -> rank: attention (self and cross) and feed-forward Linears, two ranks (PEFT's rank_pattern)
MODULES = {"transformer_blocks.0.attn1.to_q": 4, "transformer_blocks.0.attn1.to_v": 4,
           "transformer_blocks.0.attn1.to_out.0": 2, "transformer_blocks.1.attn2.to_k": 4,
           "transformer_blocks.1.ff.net.0.proj": 4, "transformer_blocks.1.ff.net.2": 4}  # fmt: skip


@pytest.fixture(scope="module")
def base():
    return transformer_pair(TINY)


def make_lora(model, modules: dict[str, int], seed: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, rank in modules.items():
        lin = model.get_submodule(name)
        out[name] = (torch.randn(rank, lin.in_features, generator=g) * 0.3,
                     torch.randn(lin.out_features, rank, generator=g) * 0.3)  # fmt: skip
    return out


def peft_state(lora) -> dict[str, torch.Tensor]:
    return {f"transformer.{m}.lora_{k}.weight": t for m, (a, b) in lora.items() for k, t in (("A", a), ("B", b))}


def peft_metadata(lora, alphas: dict[str, float]) -> dict:
    """PEFT LoraConfig of an adapter with per-module ranks and alphas."""
    ranks = {m: a.shape[0] for m, (a, _) in lora.items()}
    return {"r": 4, "lora_alpha": 4.0, "target_modules": sorted(lora), "rank_pattern": {m: r for m, r in ranks.items()
            if r != 4}, "alpha_pattern": {m: alphas.get(m, ranks[m]) for m in lora}}  # fmt: skip


def write(path: Path, state: dict, meta: dict | None = None) -> str:
    extra = {"lora_adapter_metadata": json.dumps({f"transformer.{k}": v for k, v in meta.items()})} if meta else None
    save_file({k: v.contiguous() for k, v in state.items()}, str(path), metadata=extra)
    return str(path)


def comfy_state(lora, alphas=None, *, names: str = "ours", style: str = "down_up") -> dict[str, torch.Tensor]:
    """``diffusion_model.<name>.lora_down/up`` (+ alpha), ``lora_A/B`` (Lightricks' trainer) or kohya keys."""
    down, up = ("lora_A", "lora_B") if style == "A_B" else ("lora_down", "lora_up")
    state = {}
    for m, (a, b) in lora.items():
        name = transformer_file_key(m) if names == "original" else m
        stem = "lora_unet_" + name.replace(".", "_") if style == "kohya" else f"diffusion_model.{name}"
        state.update({f"{stem}.{down}.weight": a, f"{stem}.{up}.weight": b})
        if alphas and m in alphas:
            state[f"{stem}.alpha"] = torch.tensor(alphas[m])
    return state


def _inputs():
    g = torch.Generator().manual_seed(1)
    s = F_LAT * H_LAT * W_LAT
    return (torch.randn(B, s, TINY["in_channels"], generator=g), torch.randn(B, L_TXT, TINY["caption_channels"], generator=g),
            torch.tensor([937.5, 24.0]))  # fmt: skip


def run_diffusers(ref, adapters: list[tuple[dict, dict | None, float]]) -> torch.Tensor:
    """``ref`` with PEFT adapters (state with ``transformer.`` keys, LoraConfig metadata, weight) set."""
    model = copy.deepcopy(ref)
    names = []
    for i, (state, meta, _) in enumerate(adapters):
        if meta and not any(k.startswith("transformer.") for k in meta):
            meta = {f"transformer.{k}": v for k, v in meta.items()}
        model.load_lora_adapter(dict(state), prefix="transformer", metadata=meta, adapter_name=f"a{i}")
        names.append(f"a{i}")
    model.set_adapters(names, weights=[w for *_, w in adapters])
    x, ctx, t = _inputs()
    with torch.no_grad():
        return model(x, ctx, t, torch.ones(B, L_TXT), num_frames=F_LAT, height=H_LAT, width=W_LAT,
                     rope_interpolation_scale=SCALE, return_dict=False)[0]  # fmt: skip


def run_ours(ours, loras: list[tuple[str, float]]) -> torch.Tensor:
    model = copy.deepcopy(ours)
    apply_loras(model, loras, dtype=torch.float32)
    x, ctx, t = _inputs()
    rope = rope_tables(grid_from_latent_coords(grid_coords(1, F_LAT, H_LAT, W_LAT), SCALE), model.config.inner_dim)
    with torch.no_grad():
        return model(x, ctx, t, None, rope)


def assert_close(got, expected, base_out=None):
    tol = 1e-4 * max(1.0, expected.abs().max().item())
    assert (got - expected).abs().max().item() <= tol, (got - expected).abs().max().item()
    if base_out is not None:  # the adapter changes the output: the comparison is not vacuous
        assert (expected - base_out).abs().max().item() > 1e-2


def diffusers_file(path: str):
    """What diffusers' LTX LoRA loader makes of a file: (state with transformer. keys, metadata)."""
    return LTXConditionPipeline.lora_state_dict(path, return_lora_metadata=True)


def test_diffusers_format_with_metadata(base, tmp_path):
    ref, ours = base
    lora = make_lora(ref, MODULES, 1)
    meta = peft_metadata(lora, {m: 6.0 for m in lora})  # alpha 6 on rank 4 (scale 1.5) and rank 2 (scale 3)
    path = write(tmp_path / "pytorch_lora_weights.safetensors", peft_state(lora), meta)
    state, file_meta = diffusers_file(path)
    expected = run_diffusers(ref, [(state, file_meta, 0.8)])
    assert_close(run_ours(ours, [(path, 0.8)]), expected, run_diffusers(ref, []))
    # the folder holding it is a LoRA reference too
    assert_close(run_ours(ours, [(str(tmp_path), 0.8)]), expected)


def test_diffusers_format_without_alphas(base, tmp_path):
    ref, ours = base
    lora = make_lora(ref, MODULES, 2)
    path = write(tmp_path / "l.safetensors", peft_state(lora))
    state, meta = diffusers_file(path)
    assert_close(run_ours(ours, [(path, 1.0)]), run_diffusers(ref, [(state, meta, 1.0)]), run_diffusers(ref, []))


def test_lightricks_trainer_format(base, tmp_path):
    """``diffusion_model.<diffusers name>.lora_A/B.weight``: what diffusers' LTX converter expects."""
    ref, ours = base
    lora = make_lora(ref, MODULES, 3)
    path = write(tmp_path / "l.safetensors", comfy_state(lora, style="A_B"))
    state, meta = diffusers_file(path)
    assert_close(run_ours(ours, [(path, 0.5)]), run_diffusers(ref, [(state, meta, 0.5)]))


@pytest.mark.parametrize("names, style", [("ours", "down_up"), ("original", "down_up"), ("original", "kohya")])
def test_comfy_and_kohya_formats_with_alpha(base, tmp_path, names, style):
    ref, ours = base
    modules = {**MODULES, "proj_in": 2, "time_embed.linear": 4}  # patchify_proj, adaln_single.linear in the file
    lora = make_lora(ref, modules, 4)
    alphas = {m: 1.0 + i for i, m in enumerate(lora) if i % 3}  # some modules without alpha (alpha = rank)
    path = write(tmp_path / "l.safetensors", comfy_state(lora, alphas, names=names, style=style))
    if names == "original":
        assert any("patchify_proj" in k for k in comfy_state(lora, names=names, style="down_up"))
    expected = run_diffusers(ref, [(peft_state(lora), peft_metadata(lora, alphas), 1.3)])
    assert_close(run_ours(ours, [(path, 1.3)]), expected, run_diffusers(ref, []))


def test_two_loras_at_once(base, tmp_path):
    ref, ours = base
    first, second = make_lora(ref, MODULES, 5), make_lora(ref, {"transformer_blocks.0.attn1.to_q": 2,
                                                                 "transformer_blocks.0.attn2.to_v": 4}, 6)  # fmt: skip
    alphas = {"transformer_blocks.0.attn1.to_q": 1.0}
    p1 = write(tmp_path / "a.safetensors", peft_state(first))
    p2 = write(tmp_path / "b.safetensors", comfy_state(second, alphas))
    expected = run_diffusers(ref, [(peft_state(first), None, 0.7), (peft_state(second), peft_metadata(second, alphas), -0.4)])
    assert_close(run_ours(ours, [(p1, 0.7), (p2, -0.4)]), expected)


def test_unknown_keys_are_named(base, tmp_path):
    ref, ours = base
    lora = make_lora(ref, {"transformer_blocks.0.attn1.to_q": 2}, 7)
    good = comfy_state(lora)
    stray = {"diffusion_model.transformer_blocks.0.attn1.to_zz.lora_down.weight": torch.zeros(2, 16)}
    with pytest.raises(LoraError, match="match no Linear layer.*to_zz"):
        run_ours(ours, [(write(tmp_path / "a.safetensors", {**good, **stray}), 1.0)])
    with pytest.raises(LoraError, match="unsupported key.*dora_scale"):
        run_ours(ours, [(write(tmp_path / "b.safetensors", {**good, "diffusion_model.x.dora_scale": torch.ones(3)}), 1.0)])
    with pytest.raises(LoraError, match="match no Linear layer.*text_encoder"):
        run_ours(ours, [(write(tmp_path / "c.safetensors", {"text_encoder.q.lora_A.weight": torch.ones(2, 2)}), 1.0)])
    with pytest.raises(LoraError, match="to_q has lora_A/down but not its pair"):
        run_ours(ours, [(write(tmp_path / "d.safetensors", {k: v for k, v in good.items() if "down" in k}), 1.0)])
    bad_shape = {k: (v[:, :8] if "down" in k else v) for k, v in good.items()}
    with pytest.raises(LoraError, match="do not fit a Linear 16 -> 16"):
        run_ours(ours, [(write(tmp_path / "e.safetensors", bad_shape), 1.0)])
    model = copy.deepcopy(ours)  # a failing adapter leaves the model untouched (all files are checked first)
    with pytest.raises(LoraError):
        apply_loras(model, [(write(tmp_path / "f.safetensors", good), 1.0), (str(tmp_path / "a.safetensors"), 1.0)],
                    dtype=torch.float32)  # fmt: skip
    for (k, v), (_, w) in zip(model.state_dict().items(), ours.state_dict().items()):
        assert torch.equal(v, w), k


# --- end to end on the ltxv-debug checkpoint --------------------------------------------------------------

PROMPT, W, H, F = "A red cat walks on the street at night", 96, 64, 9
DECODE = dict(decode_timestep=0.05, decode_noise_scale=0.025)
RECIPE = dict(num_inference_steps=3, guidance_scale=3.0)


def test_render_with_lora_matches_diffusers(debug_dir, tmp_path):
    pipe = LTXConditionPipeline.from_pretrained(str(debug_dir), torch_dtype=torch.float32)
    modules = {f"transformer_blocks.{i}.{m}": 4 for i in range(2) for m in ("attn1.to_q", "attn1.to_k", "ff.net.2")}
    lora = make_lora(pipe.transformer, modules, 8)
    path = write(tmp_path / "lora.safetensors", {k: v * 2.0 for k, v in comfy_state(lora, style="A_B").items()})

    def ours(out: Path, loras: list) -> np.ndarray:
        job = load_job({"name": "lora", "model": {"checkpoint": str(debug_dir), "dtype": "float32", "device": "cpu",
                                                  "loras": loras},
                        "recipe": {**RECIPE, **DECODE}, "output": str(out), "save": ["frames"]})  # fmt: skip
        result = render_one(job, {"id": "row", "prompt": PROMPT, "width": W, "height": H, "num_frames": F, "seed": 7})
        assert result.ok, result
        return np.load(out / "frames" / "row.npy")

    with_lora = ours(tmp_path / "a", [{"path": path, "scale": 0.9}])
    without = ours(tmp_path / "b", [])
    assert np.abs(with_lora - without).mean() > 1e-3  # the LoRA changes the video
    pipe.load_lora_weights(path, adapter_name="x")
    pipe.set_adapters(["x"], adapter_weights=[0.9])
    ref = pipe(prompt=PROMPT, width=W, height=H, num_frames=F, generator=torch.Generator().manual_seed(7),
               output_type="np", **RECIPE, **DECODE).frames[0]  # fmt: skip
    frames_close(with_lora, ref)
    models.clear()
