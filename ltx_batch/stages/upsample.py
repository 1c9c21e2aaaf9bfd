"""Stage 3, latent upsample (multi-scale jobs only): base latents -> 2x latents for the refine pass.

Columns in: ``latents``. Columns out: ``latents`` (normalised, twice the base height and width). No random
draws: the refine pass starts its own generator.
"""

from __future__ import annotations

from collections import defaultdict

import torch

from ..sampling.multiscale import upsample_latents
from . import models
from .base import Stage
from .records import LATENTS
from .tensors import pack_tensors, unpack_tensors


class LatentUpsampleStage(Stage):
    name = "latent_upsample"
    inputs = (LATENTS,)
    outputs = (LATENTS,)
    components = ("upsampler", "vae")

    def setup(self) -> None:
        self.upsampler = models.load(self.job, "upsampler", dtype=self.dtype, device=self.device)
        self.vae = models.load(self.job, "vae", dtype=self.dtype, device=self.device)

    def group(self, records):
        groups = defaultdict(list)
        for r in records:
            groups[tuple(unpack_tensors(r[LATENTS])["latents"].shape)].append(r)
        size = max(1, self.job.pools.latent_upsample.batch_size)
        return [g[i : i + size] for g in groups.values() for i in range(0, len(g), size)]

    def process(self, records) -> None:
        ms = self.job.recipe.multiscale
        latents = torch.cat([unpack_tensors(r[LATENTS])["latents"] for r in records])
        up = upsample_latents(self.upsampler, self.vae, latents, adain_factor=ms.adain_factor,
                              tone_map_compression_ratio=ms.tone_map_compression_ratio)  # fmt: skip
        for i, record in enumerate(records):
            record[LATENTS] = pack_tensors({"latents": up[i : i + 1]})
