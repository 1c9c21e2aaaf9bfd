"""What every sampling pass shares: its inputs per row, random draws per row, and the denoiser closure.

Rows of one batch have the same size, frame count, frame rate and condition layout (the stages group
them so); each row brings its own generator, so a row draws exactly what it would draw alone and its video
does not depend on its batch-mates. Draws happen on the generator's device (the CPU, as diffusers does
for ``torch.Generator()``) and move to the compute device afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..models.rope import rope_phasors, rope_tables
from ..models.transformer import trim_encoder_padding
from ..models.vae import draw_normal


@dataclass(frozen=True, kw_only=True, slots=True)
class SamplingParams:
    num_inference_steps: int = 50
    timesteps: tuple[float, ...] | None = None  # overrides num_inference_steps
    guidance_scale: float = 3.0  # <= 1: no unconditional pass
    guidance_rescale: float = 0.0
    image_cond_noise_scale: float = 0.0  # condition pipeline only
    denoise_strength: float = 1.0  # < 1: start from given latents at a lower noise level

    @property
    def guided(self) -> bool:
        return self.guidance_scale > 1.0


@dataclass(frozen=True, slots=True)
class Condition:
    pixels: torch.Tensor  # (1, 3, F, H, W) in [-1, 1], F = 1 (image) or 8k+1 (video)
    frame_index: int
    strength: float = 1.0


@dataclass(kw_only=True, slots=True)
class PassRow:
    """One video's inputs to a pass. Embeddings are (L, C) with a (L,) mask; negatives only when guided."""

    embeds: torch.Tensor
    mask: torch.Tensor
    generator: torch.Generator
    negative_embeds: torch.Tensor | None = None
    negative_mask: torch.Tensor | None = None
    conditions: list[Condition] = field(default_factory=list)
    latents: torch.Tensor | None = None  # (1, C, F, H, W) normalised, for refine / video-to-video


def randn_rows(shape: tuple[int, ...], rows: list[PassRow], device: torch.device) -> torch.Tensor:
    """One float32 standard-normal draw of ``(1, *shape[1:])`` per row from its generator, concatenated."""
    return draw_normal(shape, [r.generator for r in rows], device, torch.float32)


def text_context(rows: list[PassRow], guided: bool, device: torch.device, dtype: torch.dtype):
    """(embeds (B', L, C), mask (B', L) | None) with B' = 2B when guided: negatives first, as diffusers."""
    embeds = torch.stack([r.embeds for r in rows])
    mask = torch.stack([r.mask for r in rows])
    if guided:
        if any(r.negative_embeds is None for r in rows):
            raise ValueError("guidance_scale > 1 needs negative prompt embeddings")
        embeds = torch.cat([torch.stack([r.negative_embeds for r in rows]), embeds])
        mask = torch.cat([torch.stack([r.negative_mask for r in rows]), mask])
    return trim_encoder_padding(embeds.to(device=device, dtype=dtype), mask.to(device))


def make_denoiser(transformer, embeds: torch.Tensor, mask: torch.Tensor | None, grid: torch.Tensor,
                  dtype: torch.dtype):  # fmt: skip
    """The transformer bound to one batch's text and positions. Their RoPE phasors are built here, once for
    every step (the tables they come from are let go: at 32k tokens each is twice the phasors' size)."""
    phasors = rope_phasors(*rope_tables(grid, transformer.config.inner_dim))

    def denoise(latents: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        return transformer(latents.to(dtype), embeds, timestep, mask, phasors)

    return denoise
