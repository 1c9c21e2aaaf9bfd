"""Tensor columns of a record as bytes: safetensors blobs (bfloat16 intact), and a generator's state.

Apart from ``stages.records`` because only the actors handle tensors: the driver builds and reads records
without importing torch.
"""

from __future__ import annotations

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save


def pack_tensors(tensors: dict[str, torch.Tensor]) -> bytes:
    return st_save({k: v.detach().contiguous().cpu() for k, v in tensors.items()})


def unpack_tensors(blob: bytes) -> dict[str, torch.Tensor]:
    return st_load(bytes(blob))


def generator_state(generator: torch.Generator) -> bytes:
    return generator.get_state().numpy().tobytes()


def restore_generator(state: bytes) -> torch.Generator:
    generator = torch.Generator()
    generator.set_state(torch.frombuffer(bytearray(state), dtype=torch.uint8))
    return generator
