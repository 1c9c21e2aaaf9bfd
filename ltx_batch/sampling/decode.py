"""Latents -> frames: denormalise, timestep-aware decode noise, VAE decode, [0, 1] frames.

For a timestep-conditioned VAE (0.9.1+), diffusers blends the latents with fresh noise from the pass's
generator, ``(1 - s) * z + s * noise`` with ``s = decode_noise_scale`` (default ``decode_timestep``), and
decodes at ``decode_timestep``. The generator is the one the sampling pass used, continued: that draw is
the last of the pass. The 0.9.1 decoder also injects noise inside its blocks; we draw it from
``injection_generators`` (seeded from the row's seed), where diffusers uses the global RNG.
"""

from __future__ import annotations

import torch

from ..models.vae import draw_normal


@torch.inference_mode()
def decode_frames(
    vae,
    latents: torch.Tensor,
    generators: list[torch.Generator],
    *,
    decode_timestep: float,
    decode_noise_scale: float | None,
    dtype: torch.dtype,
    injection_generators: list[torch.Generator] | None = None,
    tiling=None,
    as_uint8: bool = False,
) -> torch.Tensor:
    """Normalised latents (B, C, F, H, W) -> frames (B, F', H', W', 3) float32 in [0, 1], on the CPU.

    ``tiling``: a ``models.vae.DecodeTiling`` to decode in overlapping tiles (memory), or None.
    ``as_uint8``: the frames quantised for the MP4 (``quantize_frames``) instead, on the VAE's device: a
    quarter of the bytes to copy back, and no pass over a full-size float video on the host (at 768x512x121
    numpy takes ~1.5 s of one core for it).
    """
    device = vae.latents_mean.device
    z = vae.denormalize_latents(latents.to(device=device, dtype=torch.float32)).to(dtype)
    timestep = None
    if vae.config.timestep_conditioning:
        noise = draw_normal(tuple(z.shape), list(generators), device, dtype)
        scale = decode_timestep if decode_noise_scale is None else decode_noise_scale
        timestep = torch.full((z.shape[0],), decode_timestep, device=device, dtype=dtype)
        s = torch.full((z.shape[0], 1, 1, 1, 1), scale, device=device, dtype=dtype)
        z = (1 - s) * z + s * noise
    z = z.to(vae.dtype)
    if timestep is not None:
        timestep = timestep.to(vae.dtype)
    if any(vae.config.decoder_inject_noise):
        if injection_generators is None or len(injection_generators) != z.shape[0]:
            raise ValueError("this VAE injects decoder noise: pass one injection generator per row")
        # the injected noise is drawn for the whole batch at once: decode rows one by one to keep each
        # row's stream independent of its batch-mates
        video = torch.cat([vae.decode(z[i : i + 1], None if timestep is None else timestep[i : i + 1],
                                      generator=g, tiling=tiling) for i, g in enumerate(injection_generators)])  # fmt: skip
    else:
        video = vae.decode(z, timestep, tiling=tiling)
    # (B, 3, F, H, W) in [-1, 1] -> (B, F, H, W, 3) in [0, 1], as diffusers' postprocess_video("np")
    frames = (video / 2 + 0.5).clamp(0, 1)
    if as_uint8:
        return quantize_frames(frames).cpu()
    return frames.permute(0, 2, 3, 4, 1).float().cpu()


def quantize_frames(frames: torch.Tensor) -> torch.Tensor:
    """Frames (B, 3, F, H, W) in [0, 1] -> uint8 (B, F, H, W, 3), the same bits as ``io.video.quantize`` (numpy):
    clamp, float32 multiply by 255, round half to even. Two passes: the arithmetic in place on one float32
    copy, then the cast and the channels-last layout in one copy."""
    x = frames.float().clamp(0, 1).mul_(255).round_()
    out = torch.empty((x.shape[0], *x.shape[2:], x.shape[1]), dtype=torch.uint8, device=x.device)
    return out.copy_(x.permute(0, 2, 3, 4, 1))
