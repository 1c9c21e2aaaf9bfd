"""Latent layout: video latents <-> token sequences, and the token coordinates RoPE reads.

The transformer sees a latent video (B, C, F, H, W) as tokens (B, F*H*W, C) in frame-major order (patch
size 1 for every released checkpoint, but the patchify follows the config). Token coordinates for RoPE are
in ``ltx_batch.models.rope``.
"""

from __future__ import annotations

import torch


def latent_shape(num_frames: int, height: int, width: int, *, temporal: int = 8, spatial: int = 32) -> tuple[int, int, int]:
    """Pixel size -> latent (frames, height, width) for a VAE with these compression ratios."""
    return (num_frames - 1) // temporal + 1, height // spatial, width // spatial


def pack(latents: torch.Tensor, patch: int = 1, patch_t: int = 1) -> torch.Tensor:
    """(B, C, F, H, W) -> (B, F/pt * H/p * W/p, C*pt*p*p)."""
    b, c, f, h, w = latents.shape
    x = latents.reshape(b, c, f // patch_t, patch_t, h // patch, patch, w // patch, patch)
    return x.permute(0, 2, 4, 6, 1, 3, 5, 7).flatten(4, 7).flatten(1, 3)


def unpack(tokens: torch.Tensor, frames: int, height: int, width: int, patch: int = 1, patch_t: int = 1) -> torch.Tensor:
    """(B, S, C*pt*p*p) -> (B, C, F*pt, H*p, W*p); ``frames/height/width`` count patches."""
    b = tokens.shape[0]
    x = tokens.reshape(b, frames, height, width, -1, patch_t, patch, patch)
    return x.permute(0, 4, 1, 5, 2, 6, 3, 7).flatten(6, 7).flatten(4, 5).flatten(2, 3)
