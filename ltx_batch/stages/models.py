"""Per-process model cache: a component loads once per actor (or once per ``render`` process).

Stages that share a model in one process (base sample and refine share the transformer and VAE when
fused, or in ``ltx-batch render``) get the same instance instead of a second copy.
"""

from __future__ import annotations

import threading

import torch

from ..job import Job
from ..weights.checkpoint import Checkpoint, open_checkpoint

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


def load(job: Job, kind: str, *, dtype: torch.dtype, device: torch.device):
    ref = component_ref(job, kind)
    key = (kind, ref, dtype, str(device))
    with _LOCK:
        model = _MODELS.get(key)
    if model is None:
        ckpt = checkpoint(ref, kind)
        model = getattr(ckpt, f"load_{kind}")(dtype=dtype, device=device)
        with _LOCK:
            model = _MODELS.setdefault(key, model)
    return model


def clear() -> None:
    """Drop every cached model (tests; freeing memory between jobs in one process)."""
    with _LOCK:
        _MODELS.clear()
        _CHECKPOINTS.clear()
