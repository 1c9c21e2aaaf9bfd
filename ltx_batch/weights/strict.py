"""Strict state-dict loading onto models built on the meta device.

Building on ``meta`` costs no memory and no random init (a 13B transformer would otherwise be initialised
once only to be overwritten); ``assign=True`` then adopts the checkpoint's tensors. Strictness is the point:
a missing key, an unexpected key or a wrong shape is an error that names it, never a silently random layer.
"""

from __future__ import annotations

from typing import Callable, Mapping, TypeVar

import torch
from torch import nn

from .errors import CheckpointError, _names

M = TypeVar("M", bound=nn.Module)


def build_on_meta(factory: Callable[[], M]) -> M:
    with torch.device("meta"):
        return factory()


def load_strict(
    model: nn.Module,
    state: Mapping[str, torch.Tensor],
    *,
    what: str,
    dtype: torch.dtype | None = None,
    device: torch.device | str = "cpu",
    keep_dtype: Callable[[str], bool] = lambda name: False,
) -> None:
    """Load ``state`` into ``model`` (usually on meta) strictly, casting floating tensors to ``dtype``.

    ``keep_dtype(name)`` keeps a tensor's checkpoint dtype (for example float8 weights stored as such).
    """
    expected = model.state_dict()
    missing = expected.keys() - state.keys()
    unexpected = state.keys() - expected.keys()
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing key(s): {_names(missing)}")
        if unexpected:
            parts.append(f"unexpected key(s): {_names(unexpected)}")
        raise CheckpointError(f"{what}: checkpoint does not match the model: " + "; ".join(parts))
    wrong = [
        f"{k} (checkpoint {tuple(state[k].shape)}, model {tuple(v.shape)})"
        for k, v in expected.items()
        if tuple(state[k].shape) != tuple(v.shape)
    ]
    if wrong:
        raise CheckpointError(f"{what}: wrong shape for {_names(wrong, 4)}")

    converted = {}
    for k, t in state.items():
        if dtype is not None and t.is_floating_point() and not keep_dtype(k):
            t = t.to(dtype)
        converted[k] = t.to(device)
    model.load_state_dict(converted, strict=True, assign=True)
    leftover = [n for n, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
    if leftover:  # non-persistent buffers are not in checkpoints: the model must create them itself
        raise CheckpointError(f"{what}: tensors left uninitialised after loading: {_names(leftover)}")
