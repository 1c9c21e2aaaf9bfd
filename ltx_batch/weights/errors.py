"""The error a checkpoint that does not fit raises, apart from the loaders so reading a job (which checks
model paths) does not import torch."""

from __future__ import annotations


class CheckpointError(ValueError):
    """A checkpoint that does not match the model it should load into; the message names the keys."""


def _names(keys, limit: int = 8) -> str:
    keys = sorted(keys)
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more
