"""Row fingerprints: what decides whether a finished output can be re-used.

fingerprint = sha256 of (model revisions + resolved recipe + the row's generation fields). Same row id,
same job and same fingerprint: the outputs are the same objects, rendered once. Pass-through columns do not
enter it (relabelling a dataset does not re-render it).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from functools import lru_cache

from .io.rows import Row
from .job import Job
from .weights.resolve import revision_of


@lru_cache(maxsize=64)
def _revision(ref: str) -> str:
    return revision_of(ref)


def model_identity(job: Job) -> dict:
    m = job.model
    refs = {"checkpoint": m.checkpoint, "upsampler": m.upsampler, "text_encoder": m.text_encoder, "vae": m.vae}
    return {
        **{k: v for k, v in refs.items() if v is not None},
        "revisions": {k: _revision(v) for k, v in refs.items() if v is not None},
        "loras": [{"path": lora.path, "scale": lora.scale, "revision": _revision(lora.path)} for lora in m.loras],
        "dtype": m.dtype,
        "weight_dtype": m.weight_dtype,
    }


def fingerprint(job: Job, row: Row, model: dict | None = None) -> str:
    model = model if model is not None else model_identity(job)
    identity = {"model": {k: model[k] for k in ("revisions", "loras", "dtype", "weight_dtype")},
                "recipe": asdict(job.recipe), "row": row.as_dict()}  # fmt: skip
    blob = json.dumps(identity, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()
