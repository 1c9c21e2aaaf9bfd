"""Per-process model cache: a component loads once per actor (or once per ``render`` process).

Stages that share a model in one process (base sample and refine share the transformer and VAE when
fused, or in ``ltx-batch render``) get the same instance instead of a second copy. The transformer is
loaded with the job's weight storage (``model.weight_dtype``), LoRAs (``model.loras``) and compilation
(``model.compile``), which are part of its cache key: another LoRA set is another model.
"""

from __future__ import annotations

import logging
import threading

import torch

from ..job import Job
from ..models.compile import compile_blocks
from ..models.quant import FLOAT8, parameter_bytes
from ..weights.checkpoint import Checkpoint, open_checkpoint
from ..weights.lora import apply_loras

log = logging.getLogger(__name__)
_LOCK = threading.Lock()
_MODELS: dict[tuple, object] = {}
_CHECKPOINTS: dict[tuple, Checkpoint] = {}


# The folders of a diffusers-layout repo each component reads (hub downloads fetch only these).
PARTS = {"text_encoder": ("text_encoder", "tokenizer"), "transformer": ("transformer", "scheduler"),
         "vae": ("vae",), "upsampler": ("latent_upsampler",), "scheduler": ("scheduler",)}  # fmt: skip


def checkpoint(ref: str, kind: str | None = None) -> Checkpoint:
    key = (ref, kind)
    with _LOCK:
        if key not in _CHECKPOINTS:
            _CHECKPOINTS[key] = open_checkpoint(ref, PARTS.get(kind))
        return _CHECKPOINTS[key]


def component_ref(job: Job, kind: str) -> str:
    """Which checkpoint a component comes from: the job's override, else the main checkpoint."""
    m = job.model
    if kind == "text_encoder":
        return m.text_encoder or m.checkpoint
    if kind == "vae":
        return m.vae or m.checkpoint
    if kind == "upsampler":
        if m.upsampler is None:
            raise ValueError("model.upsampler is not set: this job is single-scale")
        return m.upsampler
    return m.checkpoint


def snapshot(job: Job, kind: str) -> str:
    """The snapshot ``kind`` was loaded from: a hub commit (what an unpinned reference resolved to), or a
    content digest for local and copied checkpoints. The checkpoint is the one ``load`` opened (cached)."""
    return checkpoint(component_ref(job, kind), kind).revision


def _key(job: Job, kind: str, dtype: torch.dtype, device: torch.device) -> tuple:
    key = (kind, component_ref(job, kind), dtype, str(device))
    if kind == "transformer":
        # compiled and eager transformers are different objects: another model.compile is another model
        key += (job.model.weight_dtype, tuple((lora.path, lora.scale) for lora in job.model.loras), job.model.compile)
    return key


def load(job: Job, kind: str, *, dtype: torch.dtype, device: torch.device):
    ref = component_ref(job, kind)
    key = _key(job, kind, dtype, device)
    with _LOCK:
        model = _MODELS.get(key)
    if model is None:
        ckpt = checkpoint(ref, kind)
        if kind == "transformer":
            model = _load_transformer(job, ckpt, dtype, device)
        else:
            model = getattr(ckpt, f"load_{kind}")(dtype=dtype, device=device)
        with _LOCK:
            model = _MODELS.setdefault(key, model)
    return model


def release(job: Job, kind: str, *, dtype: torch.dtype, device: torch.device) -> None:
    """Drop this process's cached ``kind``: its memory is freed once the stage holding it lets go too.
    ``render`` frees T5 this way before sampling."""
    with _LOCK:
        _MODELS.pop(_key(job, kind, dtype, device), None)


def _load_transformer(job: Job, ckpt, dtype: torch.dtype, device: torch.device):
    """The transformer with the job's Linear weight storage and LoRAs (merged, or side paths on fp8/GGUF)."""
    m = job.model
    storage = FLOAT8[m.weight_dtype] if m.weight_dtype else None
    model = ckpt.load_transformer(dtype=dtype, device=device, weight_dtype=storage)
    if m.loras:
        apply_loras(model, [(lora.path, lora.scale) for lora in m.loras], dtype=dtype)
    if m.compile:  # after the LoRA merge: compilation reads the final weights and layers
        compile_blocks(model)
    mem = parameter_bytes(model)
    log.info("transformer %s: %.3f GiB of parameters (Linear weights %.3f GiB, LoRA side paths %.3f GiB)",
             ckpt.ref, mem["total"] / 2**30, mem["linear_weights"] / 2**30, mem["lora"] / 2**30)  # fmt: skip
    return model


def clear() -> None:
    """Drop every cached model (tests; freeing memory between jobs in one process)."""
    with _LOCK:
        _MODELS.clear()
        _CHECKPOINTS.clear()
