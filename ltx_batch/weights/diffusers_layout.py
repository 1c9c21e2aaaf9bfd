"""Loading components from a diffusers-layout folder.

Layout (as the Lightricks hub repos ship it)::

    model_index.json
    transformer/config.json + diffusion_pytorch_model.safetensors  (or sharded: *.safetensors.index.json)
    vae/...  latent_upsampler/...  (same shape)
    text_encoder/ + tokenizer/     (transformers' own layout)
    scheduler/scheduler_config.json

Our module parameter names equal diffusers' keys, so the key map for this format is the identity; loading is
strict (``strict.load_strict``). Only safetensors are read, never pickles.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, TypeVar

import torch
from safetensors import safe_open
from torch import nn

from ..models.config import ConfigError
from ..models.quant import float8_state_, use_float8
from .errors import CheckpointError
from .strict import build_on_meta, load_strict

M = TypeVar("M", bound=nn.Module)

_WEIGHT_NAMES = ("diffusion_pytorch_model", "model")


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path} not found") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path} is not valid JSON: {e}") from None


def read_config(path: Path, config_cls):
    """``config_cls.from_dict`` of the JSON at ``path``; a config we cannot build is a CheckpointError naming it."""
    try:
        return config_cls.from_dict(read_json(path))
    except ConfigError as e:  # a loading failure like a bad key: callers catch one error type, and see which file
        raise CheckpointError(f"{path}: {e}") from None


def weight_files(folder: Path) -> list[Path]:
    """The safetensors file(s) of one component folder: a single file or the shards an index lists."""
    for stem in _WEIGHT_NAMES:
        single = folder / f"{stem}.safetensors"
        if single.is_file():
            return [single]
        index = folder / f"{stem}.safetensors.index.json"
        if index.is_file():
            shards = sorted(set(read_json(index)["weight_map"].values()))
            files = [folder / s for s in shards]
            absent = [f.name for f in files if not f.is_file()]
            if absent:
                raise CheckpointError(f"{index}: shard(s) missing: {absent}")
            return files
    if any(folder.glob("*.bin")) or any(folder.glob("*.pt")):
        raise CheckpointError(f"{folder}: only pickle weights found; ltx_batch loads safetensors only")
    raise CheckpointError(f"{folder}: no safetensors weights (expected diffusion_pytorch_model.safetensors)")


def read_safetensors(files: list[Path], *, prefix: str = "") -> dict[str, torch.Tensor]:
    """All tensors of ``files`` whose key starts with ``prefix`` (stripped), on the CPU."""
    state: dict[str, torch.Tensor] = {}
    for f in files:
        with safe_open(str(f), framework="pt", device="cpu") as fh:
            for k in fh.keys():
                if k.startswith(prefix):
                    name = k[len(prefix):]
                    if name in state:
                        raise CheckpointError(f"{f}: key {k} appears in more than one shard")
                    state[name] = fh.get_tensor(k)
    return state


def load_component(
    folder: Path,
    config_cls,
    model_factory: Callable[[Any], M],
    *,
    dtype: torch.dtype | None,
    device: torch.device | str = "cpu",
    weight_dtype: torch.dtype | None = None,
) -> M:
    """Build ``model_factory(config_cls.from_dict(config.json))`` on meta and load the folder's weights.

    ``weight_dtype`` (a float8 type): storage of the Linear weights (``models/quant.py``), cast on the CPU
    before they reach ``device``, so the device never holds a wider copy."""
    folder = Path(folder)
    config = read_config(folder / "config.json", config_cls)
    model = build_on_meta(lambda: model_factory(config))
    state = read_safetensors(weight_files(folder))
    keep = float8_state_(model, state, weight_dtype) if weight_dtype is not None else frozenset()
    load_strict(model, state, what=str(folder), dtype=dtype, device=device, keep_dtype=keep.__contains__)
    if weight_dtype is not None:
        use_float8(model, weight_dtype)
    return model.eval().requires_grad_(False)
