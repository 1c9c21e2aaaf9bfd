"""One sampling pass with ``LTXPipeline`` / ``LTXImageToVideoPipeline`` semantics (the 0.9.0/0.9.1 releases).

Text-to-video, or image-to-video with one image at frame 0 that holds the first latent frame fixed. The
schedule is shifted by the scheduler config (dynamic shifting from the token count for these releases);
RoPE reads latent indices scaled by ``(8 / frame_rate, 32, 32)``. Per row the generator is drawn in
diffusers' order: the image's VAE posterior sample (image-to-video only), then the initial noise.
"""

from __future__ import annotations

import torch

from ..models.rope import grid_coords, grid_from_latent_coords
from ..models.vae import sample_posterior
from .common import PassRow, SamplingParams, make_denoiser, randn_rows, text_context
from .euler import euler_step
from .guidance import guided_prediction
from .latents import latent_shape, pack, unpack
from .schedules import SchedulerConfig, base_schedule


@torch.inference_mode()
def sample_base(
    transformer,
    vae,
    scheduler: SchedulerConfig,
    rows: list[PassRow],
    *,
    width: int,
    height: int,
    num_frames: int,
    frame_rate: float,
    params: SamplingParams,
    device: torch.device,
    dtype: torch.dtype,
) -> torch.Tensor:
    """Denoise ``rows`` (same size) and return their normalised latents (B, C, F, H, W) in float32."""
    cfg = transformer.config
    p, pt = cfg.patch_size, cfg.patch_size_t
    t_ratio, s_ratio = vae.temporal_compression_ratio, vae.spatial_compression_ratio
    f, h, w = latent_shape(num_frames, height, width, temporal=t_ratio, spatial=s_ratio)
    shape = (len(rows), cfg.in_channels, f, h, w)
    if params.timesteps is not None:
        raise ValueError("pipeline: base takes num_inference_steps, not timesteps (as diffusers' LTXPipeline)")
    if params.denoise_strength < 1.0 or any(r.latents is not None for r in rows):
        raise ValueError("pipeline: base cannot start from given latents (use pipeline: condition)")
    schedule = base_schedule(scheduler, num_inference_steps=params.num_inference_steps, video_seq_len=f * h * w)
    schedule = schedule.to(device)

    image_to_video = bool(rows[0].conditions)
    if image_to_video:
        if any(len(r.conditions) != 1 or r.conditions[0].frame_index != 0 or r.conditions[0].pixels.shape[2] != 1
               for r in rows):  # fmt: skip
            raise ValueError("pipeline: base takes at most one image condition, at frame 0")
        first = []
        for r in rows:
            mean, logvar = vae.encode(r.conditions[0].pixels.to(device=device, dtype=vae.dtype))
            # diffusers casts to float32 before normalising here (the condition pipeline does it after)
            first.append(vae.normalize_latents(sample_posterior(mean, logvar, r.generator).float()))
        init = torch.cat(first).to(device).repeat(1, 1, f, 1, 1)
        frame_mask = torch.zeros((len(rows), 1, f, h, w), device=device)
        frame_mask[:, :, 0] = 1.0
        noise = randn_rows(shape, rows, device)
        latents = pack(init * frame_mask + noise * (1 - frame_mask), p, pt)
        token_mask = pack(frame_mask, p, pt).squeeze(-1)  # (B, S): 1 on the first frame's tokens
    else:
        latents = pack(randn_rows(shape, rows, device), p, pt)
        token_mask = None

    embeds, text_mask = text_context(rows, params.guided, device, dtype)
    scale = (t_ratio / frame_rate, s_ratio, s_ratio)
    grid = grid_from_latent_coords(grid_coords(1, f // pt, h // p, w // p, device=device), scale,
                                   patch_size=p, patch_size_t=pt)  # fmt: skip
    denoise = make_denoiser(transformer, embeds, text_mask, grid, dtype)

    for i, t in enumerate(schedule.timesteps):
        timestep = t.expand(latents.shape[0])
        if token_mask is not None:
            timestep = timestep.unsqueeze(-1) * (1 - token_mask)  # the image frame sits at timestep 0
        velocity = guided_prediction(denoise, latents, timestep, guidance_scale=params.guidance_scale,
                                     guidance_rescale=params.guidance_rescale, upcast=True)  # fmt: skip
        if token_mask is None:
            latents = euler_step(latents, velocity, schedule.sigmas[i], schedule.sigmas[i + 1])
        else:  # only frames after the first move
            v = unpack(velocity, f // pt, h // p, w // p, p, pt)
            x = unpack(latents, f // pt, h // p, w // p, p, pt)
            moved = euler_step(x[:, :, 1:], v[:, :, 1:], schedule.sigmas[i], schedule.sigmas[i + 1])
            latents = pack(torch.cat([x[:, :, :1], moved], dim=2), p, pt)
    return unpack(latents, f // pt, h // p, w // p, p, pt).float()
