"""Stages 2 and 4, base sample and refine: DiT denoising passes.

Columns in: ``row``, ``text`` (and ``latents`` for refine). Columns out: ``latents`` (blob: ``latents``
(1, C, F, H, W) normalised float32) and ``generator`` (the pass generator's state after its last draw, so
the decode stage continues the stream for the decode noise).

Each pass starts a fresh ``torch.Generator().manual_seed(seed)`` on the CPU, as diffusers' docs do per
pipeline call. The base pass renders at the target size, or at ``downscale`` x the target when the job is
multi-scale; the refine pass renders at twice the base size from the upsampled latents, re-using the row's
conditions (encoded again at its size). Rows batch together when they share size, frame count, frame rate
and condition layout.
"""

from __future__ import annotations

from collections import defaultdict

import torch

from ..io.media import load_condition
from ..io.storage import options_for
from ..io.rows import Row
from ..sampling.base_pass import sample_base
from ..sampling.common import Condition, PassRow, SamplingParams
from ..sampling.condition_pass import sample_condition
from ..sampling.multiscale import base_size
from . import models
from .base import Stage
from .records import GENERATOR, LATENTS, TEXT, row_of
from .tensors import generator_state, pack_tensors, unpack_tensors


def pass_size(job, row: Row, refine: bool) -> tuple[int, int]:
    """(width, height) a pass renders at."""
    if not job.multiscale:
        return row.width, row.height
    w, h = base_size(row.width, row.height, job.recipe.multiscale.downscale)
    return (2 * w, 2 * h) if refine else (w, h)


def check_pipeline_conditions(pipeline: str, row: Row) -> None:
    """The base pipeline takes one image at frame 0 at most (what LTXImageToVideoPipeline takes)."""
    if pipeline == "base" and row.conditions:
        c = row.conditions
        if len(c) > 1 or c[0].frame_index != 0 or c[0].kind != "image":
            raise ValueError("conditions: pipeline 'base' takes at most one image condition at frame_index 0")


class _SampleStage(Stage):
    refine = False
    outputs = (LATENTS, GENERATOR)
    components = ("transformer", "vae")

    def setup(self) -> None:
        self.transformer = models.load(self.job, "transformer", dtype=self.dtype, device=self.device)
        self.vae = models.load(self.job, "vae", dtype=self.dtype, device=self.device)
        # a GGUF holds only the transformer: the scheduler comes with the VAE's checkpoint (its release)
        ref = self.job.model.checkpoint
        if ref.split("@")[0].endswith(".gguf") and self.job.model.vae:
            ref = self.job.model.vae
        self.scheduler = models.checkpoint(ref, "scheduler").scheduler_config()

    def params(self) -> SamplingParams:
        r = self.job.recipe
        if self.refine:
            rr = r.multiscale.refine
            return SamplingParams(num_inference_steps=rr.num_inference_steps, timesteps=rr.timesteps,
                                  guidance_scale=rr.guidance_scale, guidance_rescale=rr.guidance_rescale,
                                  image_cond_noise_scale=r.image_cond_noise_scale,
                                  denoise_strength=rr.denoise_strength)  # fmt: skip
        return SamplingParams(num_inference_steps=r.num_inference_steps, timesteps=r.timesteps,
                              guidance_scale=r.guidance_scale, guidance_rescale=r.guidance_rescale,
                              image_cond_noise_scale=r.image_cond_noise_scale)  # fmt: skip

    def _pass_row(self, record, row: Row, width: int, height: int, guided: bool) -> PassRow:
        check_pipeline_conditions(self.job.recipe.pipeline, row)
        text = unpack_tensors(record[TEXT])
        if guided and "negative_embeds" not in text:
            raise ValueError("text stage produced no negative embeddings for a guided pass")
        conditions = []
        t_ratio = self.vae.temporal_compression_ratio
        for i, c in enumerate(row.conditions):
            try:
                pixels = load_condition(c.uri, width=width, height=height, frame_index=c.frame_index,
                                        num_frames=row.num_frames, temporal=t_ratio,
                                        storage_options=options_for(c.uri, self.job))  # fmt: skip
            except Exception as e:  # noqa: BLE001 - the row fails naming the condition
                raise ValueError(f"conditions[{i}].uri: cannot read {c.uri!r}: {type(e).__name__}: {e}") from None
            conditions.append(Condition(pixels, c.frame_index, c.strength))
        latents = unpack_tensors(record[LATENTS])["latents"] if self.refine else None
        return PassRow(
            embeds=text["embeds"], mask=text["mask"], negative_embeds=text.get("negative_embeds") if guided else None,
            negative_mask=text.get("negative_mask") if guided else None,
            generator=torch.Generator().manual_seed(row.seed), conditions=conditions, latents=latents,
        )  # fmt: skip

    def group(self, records):
        groups = defaultdict(list)
        for r in records:
            row = row_of(r)
            key = (pass_size(self.job, row, self.refine), row.num_frames, row.frame_rate,
                   tuple((c.kind, c.frame_index) for c in row.conditions))  # fmt: skip
            groups[key].append(r)
        size = max(1, self._pool().batch_size)
        return [g[i : i + size] for g in groups.values() for i in range(0, len(g), size)]

    def _pool(self):
        return self.job.pools.refine if self.refine else self.job.pools.base_sample

    def process(self, records) -> None:
        params = self.params()
        rows = [row_of(r) for r in records]
        width, height = pass_size(self.job, rows[0], self.refine)
        pass_rows = [self._pass_row(rec, row, width, height, params.guided) for rec, row in zip(records, rows)]
        if len({tuple(c.pixels.shape for c in p.conditions) for p in pass_rows}) > 1:
            raise ValueError("rows with different condition lengths cannot share a batch")
        sample = sample_base if self.job.recipe.pipeline == "base" else sample_condition
        latents = sample(self.transformer, self.vae, self.scheduler, pass_rows, width=width, height=height,
                         num_frames=rows[0].num_frames, frame_rate=rows[0].frame_rate, params=params,
                         device=self.device, dtype=self.dtype)  # fmt: skip
        for i, (record, p) in enumerate(zip(records, pass_rows)):
            record[LATENTS] = pack_tensors({"latents": latents[i : i + 1]})
            record[GENERATOR] = generator_state(p.generator)


class BaseSampleStage(_SampleStage):
    name = "base_sample"
    inputs = ("row", TEXT)


class RefineStage(_SampleStage):
    name = "refine"
    refine = True
    inputs = ("row", TEXT, LATENTS)
