"""LoRA adapters for the transformer: read a file in any of the published key formats, add it to the model.

Key formats (one table maps them all onto our Linear layers, ``lora_keys``):

- diffusers / PEFT: ``transformer.<module>.lora_A.weight`` / ``.lora_B.weight`` (also without the prefix, or
  under PEFT's ``base_model.model.``); the scale ``lora_alpha / r`` from the ``lora_adapter_metadata`` diffusers
  writes in the safetensors header (``transformer.lora_alpha``, ``alpha_pattern``, ``use_rslora``), else 1;
- original / ComfyUI: ``diffusion_model.<module>.lora_down.weight`` / ``.lora_up.weight`` (or ``lora_A`` /
  ``lora_B``, as Lightricks' trainer writes) with an optional ``<module>.alpha``; ``<module>`` is our (diffusers)
  name or Lightricks' original one (``patchify_proj``, ``adaln_single``..., mapped by ``keymaps_ltx``);
- kohya: ``lora_unet_<module with _ for .>.lora_down.weight`` + ``.alpha``.

A module's update is ``scale * (alpha / rank) * up @ down`` (alpha = rank when the file has none, as diffusers
and PEFT read such files). Any key that is not one of these, or names no Linear layer of the model, is an
error naming it: a LoRA is never half applied. ``apply_loras`` merges the updates into ``nn.Linear`` weights
in float32 (one rounding to the weight's dtype, whatever the number of adapters) and adds them to layers with
low-precision storage (fp8, GGUF) as a side path (``models/quant.py``).
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import torch
from safetensors import safe_open
from torch import Tensor, nn

from ..models.quant import is_stored, linear_names
from .keymaps_ltx import transformer_file_key
from .resolve import resolve
from .errors import CheckpointError, _names

# suffix -> (role, PEFT naming)
_SUFFIXES = {".lora_A.weight": "down", ".lora_B.weight": "up", ".lora_down.weight": "down",
             ".lora_up.weight": "up", ".alpha": "alpha"}  # fmt: skip
_PREFIXES = ("transformer.", "diffusion_model.", "model.diffusion_model.", "base_model.model.")
_KOHYA = "lora_unet_"
DEFAULT_NAME = "pytorch_lora_weights.safetensors"  # diffusers' save_lora_weights file name


class LoraError(CheckpointError):
    """A LoRA file that cannot be applied to the model; the message names the file and the keys."""


@dataclass(frozen=True, slots=True)
class LoraLayer:
    down: Tensor  # (rank, in_features), "A"
    up: Tensor  # (out_features, rank), "B"
    factor: float  # alpha / rank (or alpha / sqrt(rank) with rsLoRA); the user's scale multiplies it


def lora_file(ref: str) -> Path:
    """The safetensors file of a LoRA reference: a file, a folder (hub repo or local) holding one."""
    path = resolve(ref).path
    if path.is_file():
        if path.suffix != ".safetensors":
            raise LoraError(f"LoRA {ref!r}: {path.name} is not a .safetensors file")
        return path
    if (path / DEFAULT_NAME).is_file():
        return path / DEFAULT_NAME
    files = sorted(path.glob("*.safetensors"))
    if len(files) != 1:
        found = ", ".join(f.name for f in files) or "none"
        raise LoraError(f"LoRA {ref!r}: expected one .safetensors file (or {DEFAULT_NAME}) in {path}, found {found}; "
                        "name the file itself")  # fmt: skip
    return files[0]


def read_lora(ref: str) -> tuple[dict[str, Tensor], dict]:
    """(tensors, diffusers' adapter metadata for the transformer, ``{}`` when absent) of a LoRA reference."""
    path = lora_file(ref)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            state = {k: fh.get_tensor(k) for k in fh.keys()}
            header = fh.metadata() or {}
    except Exception as e:  # noqa: BLE001 - safetensors raises its own types for a corrupt file
        raise LoraError(f"LoRA {ref!r}: {path.name} is not a readable safetensors file: {e}") from None
    meta = {}
    if header.get("lora_adapter_metadata"):
        try:
            raw = json.loads(header["lora_adapter_metadata"])
        except json.JSONDecodeError as e:
            raise LoraError(f"LoRA {ref!r}: lora_adapter_metadata is not valid JSON: {e}") from None
        meta = {k.removeprefix("transformer."): v for k, v in raw.items() if k.startswith("transformer.")}
    return state, meta


def _module_table(names: Iterable[str]) -> dict[str, str]:
    """Every spelling of a Linear layer's name a LoRA file may use -> our name."""
    table = {}
    for ours in names:
        for spelling in (ours, transformer_file_key(ours)):
            table[spelling] = ours
            table[_KOHYA + spelling.replace(".", "_")] = ours
    return table


def _module_of(stem: str, table: dict[str, str]) -> str | None:
    if stem in table:
        return table[stem]
    for prefix in _PREFIXES:
        if stem.startswith(prefix) and stem[len(prefix):] in table:
            return table[stem[len(prefix):]]
    return None


def _pattern_value(patterns: dict, module: str, default):
    """PEFT's ``rank_pattern`` / ``alpha_pattern`` lookup: a key matches a module name ending in it."""
    for key, value in (patterns or {}).items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def lora_layers(state: dict[str, Tensor], meta: dict, model: nn.Module, what: str) -> dict[str, LoraLayer]:
    """Our Linear layer name -> its update, from a LoRA file's tensors; errors name every key that does not fit."""
    if meta.get("use_dora"):
        raise LoraError(f"{what}: DoRA adapters (use_dora) are not supported")
    table = _module_table(linear_names(model))
    parts: dict[str, dict[str, Tensor]] = defaultdict(dict)
    unsupported, unmatched = [], []
    for key, tensor in state.items():
        suffix = next((s for s in _SUFFIXES if key.endswith(s)), None)
        if suffix is None:
            unsupported.append(key)
            continue
        module = _module_of(key[: -len(suffix)], table)
        if module is None:
            unmatched.append(key)
        else:
            parts[module][_SUFFIXES[suffix]] = tensor
    if unsupported:
        raise LoraError(f"{what}: unsupported key(s) {_names(unsupported)}; a LoRA holds <module>.lora_A/lora_B.weight "
                        "or <module>.lora_down/lora_up.weight (+ <module>.alpha)")  # fmt: skip
    if unmatched:
        raise LoraError(f"{what}: key(s) that match no Linear layer of the transformer: {_names(unmatched)}")
    if not parts:
        raise LoraError(f"{what}: the file holds no LoRA weights")
    return {m: _layer(m, p, meta, model, what) for m, p in parts.items()}


def _layer(module: str, p: dict[str, Tensor], meta: dict, model: nn.Module, what: str) -> LoraLayer:
    if "down" not in p or "up" not in p:
        raise LoraError(f"{what}: {module} has lora_{'A/down' if 'down' in p else 'B/up'} but not its pair")
    down, up = p["down"], p["up"]
    linear = model.get_submodule(module)
    rank = down.shape[0]
    if down.ndim != 2 or up.ndim != 2 or up.shape[1] != rank or down.shape[1] != linear.in_features \
            or up.shape[0] != linear.out_features:  # fmt: skip
        raise LoraError(f"{what}: {module}: down {tuple(down.shape)} / up {tuple(up.shape)} do not fit a Linear "
                        f"{linear.in_features} -> {linear.out_features}")  # fmt: skip
    if "alpha" in p:
        alpha = float(p["alpha"].float().reshape(-1)[0])
    elif meta:
        alpha = float(_pattern_value(meta.get("alpha_pattern"), module, meta.get("lora_alpha", rank)))
    else:
        alpha = float(rank)
    return LoraLayer(down, up, alpha / (rank**0.5 if meta.get("use_rslora") else rank))


def apply_loras(model: nn.Module, loras: Sequence[tuple[str, float]], *, dtype: torch.dtype) -> nn.Module:
    """Add every ``(reference, scale)`` adapter to ``model`` (in place): merged into ``nn.Linear`` weights,
    a side path in the compute ``dtype`` on low-precision layers. Every file is read and checked before the
    model changes."""
    updates: dict[str, list[tuple[LoraLayer, float]]] = defaultdict(list)
    for ref, scale in loras:
        state, meta = read_lora(ref)
        for module, layer in lora_layers(state, meta, model, f"LoRA {ref!r}").items():
            updates[module].append((layer, scale))
    for module, items in updates.items():
        linear = model.get_submodule(module)
        if is_stored(linear):
            for layer, scale in items:
                linear.add_lora(layer.down, layer.up, scale * layer.factor, dtype)
            continue
        w = linear.weight
        delta = torch.zeros(w.shape, dtype=torch.float32, device=w.device)
        for layer, scale in items:  # (out, r) @ (r, in), in float32
            up = layer.up.to(device=w.device, dtype=torch.float32)
            delta.addmm_(up, layer.down.to(device=w.device, dtype=torch.float32), alpha=scale * layer.factor)
        w.data.copy_((w.data.float() + delta).to(w.dtype))
    return model
