"""GGUF transformer files: written here with the ``gguf`` package (``GGUFWriter``, ``gguf.quants.quantize``) from
tiny transformers under Lightricks' original names, as ComfyUI-GGUF's converter writes them; read back by
``weights/gguf.py``. The reference for every value is ``gguf.quants.dequantize``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from ltx_batch import load_job, render_one
from ltx_batch.models.quant import GGML_NAMES, GGUFLinear, dequantize, parameter_bytes, replace_linears
from ltx_batch.models.rope import grid_coords, grid_from_latent_coords, rope_tables
from ltx_batch.models.transformer import LTXVideoTransformer, TransformerConfig
from ltx_batch.spec import SpecError
from ltx_batch.stages import models
from ltx_batch.weights.checkpoint import open_checkpoint
from ltx_batch.weights.gguf import GGUFCheckpoint
from ltx_batch.weights.keymaps_ltx import TRANSFORMER_PREFIX, transformer_file_key
from ltx_batch.weights.errors import CheckpointError
from ltx_batch.weights.strict import build_on_meta

from .single_file_data import lt_transformer

gguf = pytest.importorskip("gguf")
T = gguf.GGMLQuantizationType
KEPT = [T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1]
# 32 heads (what a GGUF file without config implies) x 2 channels; the FF's 256 inputs fit K-quant blocks
TINY32 = dict(in_channels=8, out_channels=8, num_attention_heads=32, attention_head_dim=2, cross_attention_dim=64,
              num_layers=2, caption_channels=32)  # fmt: skip


def tiny_state(config: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    model = LTXVideoTransformer(TransformerConfig.from_dict(config))
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn_like(p) * (0.5 if p.ndim == 1 else p.shape[1] ** -0.5))
    return model.state_dict()


def default_types(name: str, t: torch.Tensor, qtype) -> T:
    """ComfyUI-GGUF's rule: 1-D tensors and matrices whose rows do not fill a block stay F32."""
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    return qtype if t.ndim == 2 and t.shape[1] % block == 0 else T.F32


def write_gguf(path: Path, state: dict[str, torch.Tensor], types, *, config: dict | None = None,
               prefix: str = "", arch: str = "ltxv", extra: dict | None = None) -> Path:  # fmt: skip
    """``types(name, tensor) -> GGMLQuantizationType``; tensors under Lightricks' names, as the hub files."""
    writer = gguf.GGUFWriter(str(path), arch=arch)
    if config is not None:
        writer.add_string("config", json.dumps(config))
    for name, t in {**state, **(extra or {})}.items():
        qtype = types(name, t)
        data = t.float().numpy()
        if qtype == T.F32:
            writer.add_tensor(prefix + transformer_file_key(name), data)
        else:
            writer.add_tensor(prefix + transformer_file_key(name), gguf.quants.quantize(data, qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def reference(state, types) -> dict[str, torch.Tensor]:
    """What the file holds, dequantised by the gguf package."""
    out = {}
    for name, t in state.items():
        qtype = types(name, t)
        q = gguf.quants.quantize(t.float().numpy(), qtype) if qtype != T.F32 else t.float().numpy()
        out[name] = torch.from_numpy(np.ascontiguousarray(gguf.quants.dequantize(q, qtype))).reshape(t.shape)
    return out


def forward(model) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    cfg = model.config
    x, ctx = torch.randn(2, 24, cfg.in_channels, generator=g), torch.randn(2, 5, cfg.caption_channels, generator=g)
    rope = rope_tables(grid_from_latent_coords(grid_coords(1, 2, 3, 4), (0.32, 32, 32)), cfg.inner_dim)
    with torch.no_grad():
        return model(x, ctx, torch.tensor([937.5, 24.0]), None, rope)


def rel(a, b) -> float:
    return (a - b).abs().max().item() / max(1.0, b.abs().max().item())


@pytest.mark.parametrize("qtype", KEPT, ids=lambda t: t.name)
def test_dequantize_equals_gguf(qtype):
    rng = np.random.default_rng(int(qtype))
    w = (rng.standard_normal((6, 128)) * rng.uniform(0.01, 3, (6, 1))).astype(np.float32)
    w[0, :32] = 0.0  # an all-zero block (d = 0)
    raw = gguf.quants.quantize(w, qtype)
    ours = dequantize(torch.from_numpy(raw), int(qtype), w.shape)
    assert torch.equal(ours, torch.from_numpy(gguf.quants.dequantize(raw, qtype)))


@pytest.mark.parametrize("qtype", KEPT, ids=lambda t: t.name)
def test_quantised_linears_stay_quantised(tmp_path, qtype):
    state = tiny_state(TINY32)
    types = lambda n, t: default_types(n, t, qtype)  # noqa: E731
    path = write_gguf(tmp_path / f"tiny-{qtype.name}.gguf", state, types, prefix=TRANSFORMER_PREFIX)
    ckpt = open_checkpoint(str(path))
    assert isinstance(ckpt, GGUFCheckpoint) and ckpt.transformer_config == TransformerConfig.from_dict(TINY32)
    model = ckpt.load_transformer(dtype=torch.float32)
    q = model.transformer_blocks[0].attn1.to_q
    assert isinstance(q, GGUFLinear) and GGML_NAMES[q.qtype] == qtype.name and q.weight.dtype == torch.uint8
    assert isinstance(model.proj_in, nn.Linear)  # 8 inputs: not a whole block, F32 in the file

    ref = LTXVideoTransformer(model.config).eval()
    ref.load_state_dict(reference(state, types))
    full = LTXVideoTransformer(model.config).eval()
    full.load_state_dict(state)
    got = forward(model)
    assert rel(got, forward(ref)) <= 1e-5  # the dequantised reference, up to float32 rounding
    err = rel(got, forward(full))
    assert err < (0.05 if qtype == T.Q8_0 else 0.5), err  # within the quantisation error
    mem, ref_mem = parameter_bytes(model), parameter_bytes(ref)
    print(f"\n{qtype.name}: linear weights {mem['linear_weights']} B vs float32 {ref_mem['linear_weights']} B")
    bits = {T.Q8_0: 8.5, T.Q4_0: 4.5, T.Q4_1: 5, T.Q5_0: 5.5, T.Q5_1: 6}[qtype]
    assert mem["linear_weights"] < ref_mem["linear_weights"] * (bits / 32 + 0.05)


@pytest.mark.parametrize("qtype", [T.F16, T.BF16, T.F32, T.Q6_K, T.Q4_K], ids=lambda t: t.name)
def test_other_types_dequantised_at_load(tmp_path, qtype):
    state = tiny_state(TINY32, 1)
    block, nbytes = gguf.GGML_QUANT_SIZES[qtype]
    k_quant = block == 256
    types = (lambda n, t: qtype if n == "transformer_blocks.1.ff.net.2.weight" else T.F32) if k_quant else \
        (lambda n, t: qtype)  # fmt: skip
    path = tmp_path / "tiny.gguf"
    if k_quant:  # gguf cannot quantise K-quants: random blocks with a sane scale instead
        w = state["transformer_blocks.1.ff.net.2.weight"]
        raw = np.random.default_rng(0).integers(0, 256, (w.shape[0], w.shape[1] // block * nbytes), dtype=np.uint8)
        blocks = raw.reshape(-1, nbytes)
        at = nbytes - 2 if qtype == T.Q6_K else 0  # d (and dmin for Q4_K) as float16
        blocks[:, at:at + 2] = np.frombuffer(np.float16(0.01).tobytes(), np.uint8)
        if qtype == T.Q4_K:
            blocks[:, 2:4] = np.frombuffer(np.float16(0.002).tobytes(), np.uint8)
        writer = gguf.GGUFWriter(str(path), arch="ltxv")
        for name, t in state.items():
            key = transformer_file_key(name)
            if name == "transformer_blocks.1.ff.net.2.weight":
                writer.add_tensor(key, raw, raw_dtype=qtype)
            else:
                writer.add_tensor(key, t.numpy())
        writer.write_header_to_file(), writer.write_kv_data_to_file(), writer.write_tensors_to_file(), writer.close()
        expected = dict(state)
        expected["transformer_blocks.1.ff.net.2.weight"] = torch.from_numpy(gguf.quants.dequantize(raw, qtype))
    else:
        write_gguf(path, state, types)
        expected = reference(state, types)
    model = open_checkpoint(str(path)).load_transformer(dtype=torch.float32)
    assert not any(isinstance(m, GGUFLinear) for m in model.modules())
    for k, v in model.state_dict().items():
        assert torch.equal(v, expected[k]), k


def test_config_field_and_end_to_end_render(debug_dir, tmp_path):
    """The debug transformer (2 heads: the file says so in a ``config`` field), Q8_0, rendered with the VAE and
    T5 of the debug checkpoint; close to the unquantised render."""
    dcfg = json.loads((debug_dir / "transformer" / "config.json").read_text())
    from safetensors.torch import load_file

    state = load_file(str(debug_dir / "transformer" / "diffusion_pytorch_model.safetensors"))
    lt = lt_transformer(in_channels=dcfg["in_channels"], heads=dcfg["num_attention_heads"],
                        head_dim=dcfg["attention_head_dim"], layers=dcfg["num_layers"], caption=dcfg["caption_channels"])
    path = write_gguf(tmp_path / "debug-Q8_0.gguf", state, lambda n, t: default_types(n, t, T.Q8_0),
                      config={"transformer": lt})  # fmt: skip
    assert open_checkpoint(str(path)).transformer_config.num_attention_heads == 2

    def frames(out, **model):
        job = load_job({"name": "gguf", "model": {"dtype": "float32", "device": "cpu", **model},
                        "recipe": {"num_inference_steps": 3, "guidance_scale": 3.0}, "output": str(out),
                        "save": ["frames"]})  # fmt: skip
        result = render_one(job, {"id": "row", "prompt": "a cat", "width": 96, "height": 64, "num_frames": 9, "seed": 3})
        assert result.ok, result
        return np.load(out / "frames" / "row.npy")

    quantised = frames(tmp_path / "a", checkpoint=str(path), vae=str(debug_dir), text_encoder=str(debug_dir))
    full = frames(tmp_path / "b", checkpoint=str(debug_dir))
    assert 0 < np.abs(quantised - full).mean() < 0.02
    models.clear()
    with pytest.raises(SpecError, match="model.vae, model.text_encoder: a GGUF checkpoint holds only the transformer"):
        load_job({"model": {"checkpoint": str(path)}})
    with pytest.raises(CheckpointError, match="holds only the transformer: set model.vae"):
        open_checkpoint(str(path)).load_vae(dtype=torch.float32)


def test_strictness_names_the_tensor(tmp_path):
    state = tiny_state(TINY32)
    f32 = lambda n, t: T.F32  # noqa: E731
    extra = {"transformer_blocks.0.attn1.extra.weight": torch.zeros(2, 2)}
    with pytest.raises(CheckpointError, match="unexpected tensor.*transformer_blocks.0.attn1.extra.weight"):
        open_checkpoint(str(write_gguf(tmp_path / "a.gguf", state, f32, extra=extra))).load_transformer(dtype=torch.float32)
    fewer = {k: v for k, v in state.items() if k != "transformer_blocks.1.attn2.to_v.bias"}
    with pytest.raises(CheckpointError, match="missing tensor.*transformer_blocks.1.attn2.to_v.bias"):
        open_checkpoint(str(write_gguf(tmp_path / "b.gguf", fewer, f32))).load_transformer(dtype=torch.float32)
    with pytest.raises(CheckpointError, match="general.architecture is 'flux'"):
        open_checkpoint(str(write_gguf(tmp_path / "c.gguf", state, f32, arch="flux"))).load_transformer(dtype=torch.float32)
    (tmp_path / "d.gguf").write_bytes(b"not a gguf file at all")
    with pytest.raises(CheckpointError, match="d.gguf.*not a readable GGUF file"):
        open_checkpoint(str(tmp_path / "d.gguf")).load_transformer(dtype=torch.float32)


@pytest.mark.parametrize("name, config", [("2B", TransformerConfig()),
                                          ("13B", TransformerConfig(attention_head_dim=128, cross_attention_dim=4096,
                                                                    num_layers=48))])  # fmt: skip
def test_parameter_memory_real_sizes(name, config):
    """Bytes of the released architectures with every whole-block Linear quantised (built on meta)."""
    bf16 = parameter_bytes(build_on_meta(lambda: LTXVideoTransformer(config)).to(torch.bfloat16))
    line = [f"{name}: bf16 {bf16['total'] / 2**30:.3f} GiB"]
    for qtype in KEPT:
        model = build_on_meta(lambda: LTXVideoTransformer(config)).to(torch.bfloat16)
        replace_linears(model, {n: GGUFLinear(m.in_features, m.out_features, int(qtype), bias=m.bias.data, device="meta")
                                for n, m in model.named_modules() if isinstance(m, nn.Linear) and m.in_features % 32 == 0})
        mem = parameter_bytes(model)
        line.append(f"{qtype.name} {mem['total'] / 2**30:.3f} GiB")
        assert mem["total"] < bf16["total"] * {T.Q8_0: 0.54, T.Q5_1: 0.38, T.Q5_0: 0.35, T.Q4_1: 0.32, T.Q4_0: 0.29}[qtype]
    print("\n" + ", ".join(line))
