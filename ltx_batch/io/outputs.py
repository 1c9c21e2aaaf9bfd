"""The output layout under ``output`` (DESIGN.md), written by the decode stage.

::

    videos/{id}.mp4            H.264 yuv420p at the row's frame rate
    latents/{id}.safetensors   (save: latents) final denoised latents (normalised) + metadata strings
    frames/{id}.npy            (save: frames) float32 (F, H, W, 3) in [0, 1] after the final resize
    metadata/{id}.json         written last: its presence with status ok marks the row finished

Every object is written atomically (``Storage``); metadata comes after the files it lists, so a crash
between them leaves a row that a re-run renders again, never a metadata file pointing at nothing.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from safetensors.torch import save as st_save

from .. import __version__
from ..job import Job
from .metadata import metadata_key
from .rows import Row
from .storage import Storage
from .video import encode_mp4


def _put(storage: Storage, key: str, data: bytes) -> dict[str, Any]:
    storage.write_bytes(key, data)
    return {"path": key, "url": storage.url(key), "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def write_outputs(storage: Storage, job: Job, row: Row, *, frames: np.ndarray, latents: torch.Tensor,
                  fingerprint: str, model: dict, timings: Callable[[], dict[str, float]],
                  pass_sizes: dict[str, list[int]]) -> dict[str, Any]:  # fmt: skip
    """Write the row's files and then its metadata; returns the metadata. ``timings`` is called once the
    files are written, so the writing stage's own seconds (encode and upload included) are in it."""
    outputs: dict[str, Any] = {}
    if "mp4" in job.save:
        outputs["mp4"] = _put(storage, f"videos/{row.id}.mp4", encode_mp4(frames, row.frame_rate))
    if "latents" in job.save:
        meta = {"id": row.id, "seed": str(row.seed), "fingerprint": fingerprint, "layout": "B C F H W, normalised"}
        outputs["latents"] = _put(storage, f"latents/{row.id}.safetensors",
                                  st_save({"latents": latents.contiguous().cpu()}, metadata=meta))  # fmt: skip
    if "frames" in job.save:
        buf = io.BytesIO()
        np.save(buf, frames.astype(np.float32), allow_pickle=False)
        outputs["frames"] = _put(storage, f"frames/{row.id}.npy", buf.getvalue())
    metadata = {
        "id": row.id,
        "status": "ok",
        "seed": row.seed,
        "prompt": row.prompt,
        "negative_prompt": row.negative_prompt,
        "width": row.width,
        "height": row.height,
        "num_frames": row.num_frames,
        "frame_rate": row.frame_rate,
        "conditions": row.as_dict()["conditions"],
        "model": model,
        "recipe": job.to_dict()["recipe"],
        "fingerprint": fingerprint,
        "sizes": {"output": [row.width, row.height, row.num_frames], **pass_sizes},
        "seconds": timings(),
        "outputs": outputs,
        "extra": row.extra,
        "job": job.name,
        "ltx_batch_version": __version__,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    storage.write_bytes(metadata_key(row.id), json.dumps(metadata, indent=2, default=str).encode())
    return metadata
