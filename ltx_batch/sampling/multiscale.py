"""Multi-scale: the base size, and the latent upsample between the base and the refine pass.

As diffusers' docs run it: the base pass renders at ``downscale`` x the target, rounded down to multiples of
32; the upsampler doubles the latents in latent space (denormalised in, AdaIN against its input, tone
mapping, normalised out); the refine pass denoises those latents at twice the base size; the decoded frames
are resized to the target.
"""

from __future__ import annotations

import torch

from .euler import adain_filter_latent, tone_map_latents


def base_size(width: int, height: int, downscale: float, multiple: int = 32) -> tuple[int, int]:
    """(width, height) of the base pass for a target size."""
    w = int(width * downscale)
    h = int(height * downscale)
    w, h = w - w % multiple, h - h % multiple
    if w < multiple or h < multiple:
        raise ValueError(f"downscale {downscale} of {width}x{height} leaves no {multiple}-pixel latent")
    return w, h


@torch.inference_mode()
def upsample_latents(upsampler, vae, latents: torch.Tensor, *, adain_factor: float = 0.0,
                     tone_map_compression_ratio: float = 0.0) -> torch.Tensor:  # fmt: skip
    """Normalised latents (B, C, F, H, W) -> normalised latents (B, C, F, 2H, 2W), float32."""
    device = next(upsampler.parameters()).device
    dtype = next(upsampler.parameters()).dtype
    z = vae.denormalize_latents(latents.to(device=device, dtype=torch.float32)).to(dtype)
    up = upsampler(z)
    if adain_factor > 0.0:
        up = adain_filter_latent(up, z, adain_factor)
    if tone_map_compression_ratio > 0.0:
        up = tone_map_latents(up, tone_map_compression_ratio)
    return vae.normalize_latents(up).float()
