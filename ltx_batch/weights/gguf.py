"""GGUF transformer files: the community quantisations of LTX-Video (city96's and calcuis' ``*.gguf``).

What such a file holds (ComfyUI-GGUF's ``tools/convert.py`` writes them): the transformer alone, tensors under
Lightricks' original names (``patchify_proj``, ``adaln_single``, ``q_norm``..., mapped by ``keymaps_ltx``;
a ``model.diffusion_model.`` prefix is dropped), ``general.architecture = "ltxv"``, no config. So:

- the architecture comes from the tensor shapes, with 32 attention heads (every release has 32; ComfyUI
  infers the same). A file may carry a ``config`` string field in Lightricks' single-file schema (``{"transformer":
  {...}}``, as ``single_file.py`` reads it), which then wins: the only way to other head counts;
- the VAE and the T5 come from ``model.vae`` / ``model.text_encoder`` (``load_job`` requires them);
- the scheduler is the flow-match defaults of the 0.9.5+ releases (the file cannot tell 0.9.0/0.9.1 apart).

Weights of types ``Q8_0``, ``Q4_0``, ``Q4_1``, ``Q5_0``, ``Q5_1`` on Linear layers stay quantised in memory
(``models.quant.GGUFLinear``, dequantised per forward); every other tensor (F32, F16, BF16, the K-quants,
IQ4_NL/XS...) is dequantised at load by the ``gguf`` package and cast to the compute dtype. Loading is
strict, as for the other formats: missing and unexpected tensors are errors that name them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import torch
from torch import nn

from ..models.quant import GGML_BLOCKS, GGUFLinear, float8_state_, replace_linears, use_float8
from ..sampling.schedules import SchedulerConfig
from .keymaps_ltx import TRANSFORMER_PREFIX, transformer_file_key
from .resolve import ResolvedCheckpoint
from .errors import CheckpointError, _names
from .strict import build_on_meta, load_strict

HEADS = 32  # attention heads of every LTX-Video release (GGUF files carry no config)
_ORIG_SHAPE = "comfy.gguf.orig_shape."  # ComfyUI-GGUF's field for tensors it reshaped


@dataclass(frozen=True, slots=True)
class GGUFTensor:
    name: str  # the file's name, prefix dropped
    qtype: int  # GGMLQuantizationType value
    shape: tuple[int, ...]  # logical (PyTorch-order) shape


@dataclass(frozen=True)
class GGUFCheckpoint(ResolvedCheckpoint):
    """``Checkpoint``'s interface over one ``.gguf`` transformer file (see the module docstring)."""


    def _error(self, message: str) -> CheckpointError:
        return CheckpointError(f"checkpoint {self.ref!r} ({self.path.name}): {message}")

    def _reader(self):
        import gguf

        try:
            return gguf.GGUFReader(str(self.path))
        except Exception as e:  # noqa: BLE001 - the reader raises ValueError/struct errors on a bad file
            raise self._error(f"not a readable GGUF file: {e}") from None

    @cached_property
    def _header(self) -> tuple[dict[str, GGUFTensor], dict[str, Any] | None]:
        reader = self._reader()
        fields = {name: _field_value(f) for name, f in reader.fields.items()}
        arch = fields.get("general.architecture")
        if arch not in (None, "ltxv"):
            raise self._error(f"general.architecture is {arch!r}; an LTX-Video transformer file says 'ltxv'")
        tensors: dict[str, GGUFTensor] = {}
        for t in reader.tensors:
            name = t.name.removeprefix(TRANSFORMER_PREFIX)
            if name in tensors:
                raise self._error(f"tensor {name} appears twice (with and without {TRANSFORMER_PREFIX})")
            shape = fields.get(_ORIG_SHAPE + t.name) or tuple(int(n) for n in reversed(t.shape))
            tensors[name] = GGUFTensor(name, int(t.tensor_type), tuple(int(n) for n in shape))
        config = None
        if "config" in fields:
            try:
                config = json.loads(fields["config"])
            except (TypeError, json.JSONDecodeError) as e:
                raise self._error(f"the 'config' field is not JSON: {e}") from None
            if not isinstance(config, dict) or not isinstance(config.get("transformer"), dict):
                raise self._error("the 'config' field needs a 'transformer' mapping (Lightricks' schema)")
        return tensors, config

    @property
    def tensors(self) -> dict[str, GGUFTensor]:
        return self._header[0]

    def scheduler_config(self) -> SchedulerConfig:
        return SchedulerConfig(use_dynamic_shifting=False)

    @cached_property
    def transformer_config(self):
        from ..models.transformer import TransformerConfig
        from .single_file import transformer_config_dict

        config = self._header[1]
        try:
            raw = transformer_config_dict(config["transformer"]) if config else self._inferred_config()
            return TransformerConfig.from_dict(raw)
        except ValueError as e:  # ConfigError, CheckpointError, the config's own checks
            raise self._error(str(e)) from None

    def _inferred_config(self) -> dict[str, Any]:
        t = self.tensors

        def shape(name: str) -> tuple[int, ...]:
            if name not in t:
                raise CheckpointError(f"no tensor {name}: not an LTX-Video transformer in Lightricks' naming")
            return t[name].shape

        width, in_channels = shape("patchify_proj.weight")
        if width % HEADS:
            raise CheckpointError(f"model width {width} is not a multiple of {HEADS} heads; add a 'config' field")
        layers = {int(k.split(".")[1]) for k in t if k.startswith("transformer_blocks.")}
        return {"in_channels": in_channels, "out_channels": shape("proj_out.weight")[0], "num_attention_heads": HEADS,
                "attention_head_dim": width // HEADS, "cross_attention_dim": width, "num_layers": len(layers),
                "caption_channels": shape("caption_projection.linear_1.weight")[1],
                "attention_bias": "transformer_blocks.0.attn1.to_q.bias" in t,
                "attention_out_bias": "transformer_blocks.0.attn1.to_out.0.bias" in t,
                "norm_elementwise_affine": "transformer_blocks.0.norm1.weight" in t}  # fmt: skip

    def load_transformer(self, *, dtype: torch.dtype, device: torch.device | str = "cpu",
                         weight_dtype: torch.dtype | None = None):  # fmt: skip
        from ..models.transformer import LTXVideoTransformer

        model = build_on_meta(lambda: LTXVideoTransformer(self.transformer_config))
        key_map = {k: transformer_file_key(k) for k in model.state_dict()}
        self._check_keys(model, key_map)
        kept = self._quantised_linears(model, key_map)
        replace_linears(model, kept)
        reader = self._reader()
        data = {t.name.removeprefix(TRANSFORMER_PREFIX): t for t in reader.tensors}
        state = {}
        for ours, theirs in key_map.items():
            module = ours.removesuffix(".weight")
            if ours.endswith(".weight") and module in kept:  # raw blocks, (out, bytes per row)
                state[ours] = torch.from_numpy(np.array(data[theirs].data, copy=True)).reshape(kept[module].weight.shape)
            else:
                state[ours] = self._dequantized(data[theirs])
        del reader, data
        keep = float8_state_(model, state, weight_dtype) if weight_dtype is not None else frozenset()
        load_strict(model, state, what=f"{self.path.name} (transformer)", dtype=dtype, device=device,
                    keep_dtype=keep.__contains__)  # fmt: skip
        if weight_dtype is not None:
            use_float8(model, weight_dtype)
        return model.eval().requires_grad_(False)

    def _check_keys(self, model: nn.Module, key_map: dict[str, str]) -> None:
        wanted = set(key_map.values())
        missing = sorted(wanted - self.tensors.keys())
        unexpected = self.tensors.keys() - wanted
        if missing or unexpected:
            parts = [f"missing tensor(s): {_names(missing)}"] if missing else []
            parts += [f"unexpected tensor(s): {_names(unexpected)}"] if unexpected else []
            raise self._error("the transformer weights do not match its config: " + "; ".join(parts))
        expected = model.state_dict()
        wrong = [f"{key_map[k]} (file {self.tensors[key_map[k]].shape}, model {tuple(v.shape)})"
                 for k, v in expected.items() if self.tensors[key_map[k]].shape != tuple(v.shape)]  # fmt: skip
        if wrong:
            raise self._error(f"wrong shape for {_names(wrong, 4)}")

    def _quantised_linears(self, model: nn.Module, key_map: dict[str, str]) -> dict[str, GGUFLinear]:
        """Linear layers whose weight is of a block type kept quantised -> their ``GGUFLinear`` (on meta)."""
        kept = {}
        for name, m in model.named_modules():
            qtype = self.tensors[key_map[name + ".weight"]].qtype if isinstance(m, nn.Linear) else None
            if qtype in GGML_BLOCKS:
                bias = None if m.bias is None else torch.empty(m.out_features, device="meta")
                try:
                    kept[name] = GGUFLinear(m.in_features, m.out_features, qtype, bias=bias, device="meta")
                except ValueError as e:
                    raise self._error(f"{key_map[name + '.weight']}: {e}") from None
        return kept

    def _dequantized(self, tensor) -> torch.Tensor:
        import gguf

        name = tensor.name.removeprefix(TRANSFORMER_PREFIX)
        try:
            values = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
        except NotImplementedError:
            raise self._error(f"{name}: GGML type {tensor.tensor_type.name} cannot be dequantised by gguf") from None
        return torch.from_numpy(np.array(values, dtype=np.float32)).reshape(self.tensors[name].shape)  # a copy

    def load_vae(self, *, dtype: torch.dtype, device: torch.device | str = "cpu"):
        raise self._error("a GGUF file holds only the transformer: set model.vae (a diffusers folder, hub repo or "
                          "single file with the VAE)")  # fmt: skip

    def load_text_encoder(self, *, dtype: torch.dtype, device: torch.device | str = "cpu"):
        raise self._error("a GGUF file holds only the transformer: set model.text_encoder (a folder or hub repo "
                          "with text_encoder/ + tokenizer/, e.g. PixArt-alpha/PixArt-XL-2-1024-MS)")  # fmt: skip

    def load_upsampler(self, *, dtype: torch.dtype, device: torch.device | str = "cpu"):
        raise self._error("a GGUF file holds only the transformer: it has no latent upsampler")


def _field_value(field) -> Any:
    """A reader field's value (``contents()``), or None for a type the reader cannot decode."""
    try:
        return field.contents()
    except Exception:  # noqa: BLE001 - unusual array types: not fields this loader reads
        return None
