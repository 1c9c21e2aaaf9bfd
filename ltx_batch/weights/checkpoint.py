"""One checkpoint, resolved once, with a loader per component.

Stages need different parts (the text stage only T5, the decode stage only the VAE), so each component
loads on its own, in the actor that uses it. The format is decided once, here, from what the path holds:
a diffusers-layout folder (``model_index.json`` or component subfolders) is a ``Checkpoint``; a ``.safetensors``
file is an original Lightricks single file, a ``SingleFileCheckpoint`` (``single_file.py``, its own key table)
with the same interface; a ``.gguf`` file is a quantised transformer alone, a ``GGUFCheckpoint`` (``gguf.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch

from ..sampling.schedules import SchedulerConfig
from .diffusers_layout import load_component, read_config
from .gguf import GGUFCheckpoint
from .resolve import ResolvedCheckpoint, resolve
from .single_file import SingleFileCheckpoint
from .errors import CheckpointError


@dataclass(frozen=True)
class Checkpoint(ResolvedCheckpoint):
    def _folder(self, name: str) -> Path:
        folder = self.path / name
        if not folder.is_dir():
            raise CheckpointError(f"checkpoint {self.ref!r}: no {name}/ folder in {self.path}")
        return folder

    def scheduler_config(self) -> SchedulerConfig:
        return read_config(self._folder("scheduler") / "scheduler_config.json", SchedulerConfig)

    def load_transformer(self, *, dtype: torch.dtype, device: torch.device | str = "cpu",
                         weight_dtype: torch.dtype | None = None):  # fmt: skip
        from ..models.transformer import LTXVideoTransformer, TransformerConfig

        return load_component(self._folder("transformer"), TransformerConfig, LTXVideoTransformer, dtype=dtype,
                              device=device, weight_dtype=weight_dtype)  # fmt: skip

    def load_vae(self, *, dtype: torch.dtype, device: torch.device | str = "cpu"):
        from ..models.vae import VAEConfig, VideoVAE

        return load_component(self._folder("vae"), VAEConfig, VideoVAE, dtype=dtype, device=device)

    def load_upsampler(self, *, dtype: torch.dtype, device: torch.device | str = "cpu"):
        from ..models.upsampler import LatentUpsampler, UpsamplerConfig

        # upscaler repos are pipelines with a latent_upsampler/ folder; a bare model folder works too
        folder = self.path / "latent_upsampler" if (self.path / "latent_upsampler").is_dir() else self.path
        return load_component(folder, UpsamplerConfig, LatentUpsampler, dtype=dtype, device=device)

    def load_text_encoder(self, *, dtype: torch.dtype, device: torch.device | str = "cpu"):
        from ..models.text_encoder import TextEncoder

        if (self.path / "text_encoder").is_dir():
            return TextEncoder.load(self._folder("text_encoder"), self._folder("tokenizer"), dtype=dtype, device=device)
        if (self.path / "config.json").is_file():  # a T5 model folder itself, tokenizer files beside it
            return TextEncoder.load(self.path, self.path, dtype=dtype, device=device)
        raise CheckpointError(f"checkpoint {self.ref!r}: no text_encoder/ + tokenizer/ in {self.path}")

    @cached_property
    def vae_config(self):
        from ..models.vae import VAEConfig

        return read_config(self._folder("vae") / "config.json", VAEConfig)

    @cached_property
    def transformer_config(self):
        from ..models.transformer import TransformerConfig

        return read_config(self._folder("transformer") / "config.json", TransformerConfig)


def open_checkpoint(ref: str, parts: tuple[str, ...] | None = None) -> Checkpoint | SingleFileCheckpoint | GGUFCheckpoint:
    """``parts``: the component folders needed (hub downloads fetch only those); None: all of them."""
    resolved = resolve(ref, parts)
    path = resolved.path
    if path.is_file():
        if path.suffix == ".safetensors":
            return SingleFileCheckpoint(ref, resolved)
        if path.suffix == ".gguf":
            return GGUFCheckpoint(ref, resolved)
        raise CheckpointError(f"checkpoint {ref!r}: {path.name} is not a safetensors or GGUF file, nor a diffusers "
                              "folder")  # fmt: skip
    if not ((path / "model_index.json").is_file() or (path / "transformer").is_dir() or (path / "latent_upsampler").is_dir()
            or (path / "config.json").is_file()):
        raise CheckpointError(f"checkpoint {ref!r}: {path} is not a diffusers-layout folder (no model_index.json)")
    return Checkpoint(ref, resolved)
