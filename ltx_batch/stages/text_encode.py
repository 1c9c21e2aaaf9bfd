"""Stage 1, text encode: prompts -> T5 embeddings and masks (and the negative prompt's, when guided).

Columns in: ``row``. Columns out: ``text`` (blob: ``embeds`` (L, C), ``mask`` (L,), and ``negative_embeds`` /
``negative_mask`` when the base or refine pass guides). Rows batch together freely: every prompt is padded
to the recipe's ``max_sequence_length``.
"""

from __future__ import annotations

from . import models
from .base import Stage
from .records import TEXT, row_of
from .tensors import pack_tensors


class TextEncodeStage(Stage):
    name = "text_encode"
    inputs = ("row",)
    outputs = (TEXT,)
    components = ("text_encoder",)

    def setup(self) -> None:
        self.encoder = models.load(self.job, "text_encoder", dtype=self.dtype, device=self.device)

    def release(self) -> None:
        """Let go of T5 (~9.5 GB in bf16) once no more prompts will come; the next batch loads it again."""
        with self.compute:  # not while another thread encodes with it
            if self._ready:
                self.encoder = None
                models.release(self.job, "text_encoder", dtype=self.dtype, device=self.device)
                self._ready = False

    def group(self, records):
        size = max(1, self.job.pools.text_encode.batch_size)
        return [records[i : i + size] for i in range(0, len(records), size)]

    @property
    def needs_negative(self) -> bool:
        recipe = self.job.recipe
        refine_guided = self.job.multiscale and recipe.multiscale.refine.guidance_scale > 1.0
        return recipe.guidance_scale > 1.0 or refine_guided

    def process(self, records) -> None:
        rows = [row_of(r) for r in records]
        length = self.job.recipe.max_sequence_length
        # LTXPipeline (base) runs T5 without its attention mask; LTXConditionPipeline masks the padding
        mask_padding = self.job.recipe.pipeline == "condition"
        embeds, mask = self.encoder.encode([r.prompt for r in rows], length, mask_padding=mask_padding)
        negative = None
        if self.needs_negative:
            negative = self.encoder.encode([r.negative_prompt for r in rows], length, mask_padding=mask_padding)
        for i, record in enumerate(records):
            tensors = {"embeds": embeds[i], "mask": mask[i]}
            if negative is not None:
                tensors.update(negative_embeds=negative[0][i], negative_mask=negative[1][i])
            record[TEXT] = pack_tensors(tensors)
