"""One sampling pass with ``LTXConditionPipeline`` semantics (the 0.9.5+ releases).

Conditions are images or videos placed at frame indices with a strength. A condition at frame 0 replaces
(lerps) the first latent frames; a condition elsewhere becomes extra tokens prepended to the sequence, at
the pixel-space positions of its frames, and is dropped again after sampling. Conditioned tokens carry a
lower timestep (``(1 - strength) * 1000``) and are only stepped once the schedule passes below it.

Per row, the generator is drawn in diffusers' order: initial noise; per condition its VAE posterior sample
and (for a non-zero frame index) the noise of its extra tokens; then per step the re-noising of hard
conditions. The caller continues the same generator for the decode noise.
"""

from __future__ import annotations

import torch

from ..models.rope import grid_coords, grid_from_pixel_coords, pixel_coords
from ..models.vae import sample_posterior
from .common import PassRow, SamplingParams, make_denoiser, randn_rows, text_context
from .euler import conditioned_euler_step, forward_noise, renoise_hard_conditions, token_timesteps
from .guidance import guided_prediction
from .latents import latent_shape, pack, unpack
from .schedules import SchedulerConfig, condition_schedule

# Latent frames of a mid-video condition video that become prefix tokens (diffusers' num_prefix_latent_frames).
PREFIX_LATENT_FRAMES = 2


def _encode_condition(vae, pixels: torch.Tensor, generator: torch.Generator, device) -> torch.Tensor:
    mean, logvar = vae.encode(pixels.to(device=device, dtype=vae.dtype))
    latents = sample_posterior(mean, logvar, generator)
    return vae.normalize_latents(latents).to(device=device, dtype=torch.float32)


def _prepare(vae, rows: list[PassRow], shape, sigma0, params: SamplingParams, num_frames: int, frame_rate: float,
             device, patch: int, patch_t: int):  # fmt: skip
    """Initial tokens (B, S_extra + S, C), conditioning mask (B, S_all) | None, pixel coords (B, 3, S_all)."""
    b, c, f, h, w = shape
    t_ratio, s_ratio = vae.temporal_compression_ratio, vae.spatial_compression_ratio
    noise = randn_rows(shape, rows, device)
    if rows[0].latents is not None:
        if params.denoise_strength >= 1.0:
            raise ValueError("denoise_strength must be < 1 when starting from given latents (1 would discard them)")
        given = torch.cat([r.latents for r in rows]).to(device=device, dtype=torch.float32)
        if tuple(given.shape) != tuple(shape):
            raise ValueError(f"given latents have shape {tuple(given.shape)}, expected {tuple(shape)}")
        latents = forward_noise(given, noise, sigma0)
    else:
        latents = noise

    conditions_per_row = [r.conditions for r in rows]
    has_conditions = bool(conditions_per_row[0])
    frames_mask = torch.zeros((b, f), device=device, dtype=torch.float32)
    extra_tokens, extra_coords, extra_masks = [], [], []
    for k in range(len(conditions_per_row[0])):
        cond_latents = []
        for i, row in enumerate(rows):
            cond = row.conditions[k]
            cl = _encode_condition(vae, cond.pixels, row.generator, device)
            num_cond = cl.shape[2]
            strength, index = cond.strength, cond.frame_index
            if index == 0:
                latents[i : i + 1, :, :num_cond] = torch.lerp(latents[i : i + 1, :, :num_cond], cl, strength)
                frames_mask[i, :num_cond] = strength
                continue
            if cond.pixels.shape[2] > 1:
                if num_cond < PREFIX_LATENT_FRAMES:
                    raise ValueError(
                        f"condition video at frame {index} needs at least {PREFIX_LATENT_FRAMES} latent frames "
                        f"({(PREFIX_LATENT_FRAMES - 1) * t_ratio + 1} pixel frames), got {num_cond}"
                    )
                if num_cond > PREFIX_LATENT_FRAMES:
                    start = index // t_ratio + PREFIX_LATENT_FRAMES
                    end = start + num_cond - PREFIX_LATENT_FRAMES
                    latents[i : i + 1, :, start:end] = torch.lerp(
                        latents[i : i + 1, :, start:end], cl[:, :, PREFIX_LATENT_FRAMES:], strength
                    )
                    frames_mask[i, start:end] = strength
                    cl = cl[:, :, :PREFIX_LATENT_FRAMES]
            extra_noise = randn_rows(tuple(cl.shape), [row], device)
            cond_latents.append(torch.lerp(extra_noise, cl, strength))
        if cond_latents:  # a mid-video condition: its tokens join the sequence
            cl = torch.cat(cond_latents)
            cond = rows[0].conditions[k]
            grid = grid_coords(b, cl.shape[2], h, w, device=device)
            extra_coords.append(pixel_coords(grid, spatial_ratio=s_ratio, temporal_ratio=t_ratio, frame_rate=1.0,
                                             frame_index=cond.frame_index))
            tokens = pack(cl, patch, patch_t)
            extra_tokens.append(tokens)
            extra_masks.append(torch.tensor([r.conditions[k].strength for r in rows], device=device)[:, None]
                               .expand(tokens.shape[:2]).float())  # fmt: skip

    grid = grid_coords(b, f, h, w, device=device)
    mask = frames_mask.gather(1, grid[:, 0].long()) if has_conditions else None  # (B, S): per token's frame
    coords = pixel_coords(grid, spatial_ratio=s_ratio, temporal_ratio=t_ratio, frame_rate=1.0)
    tokens = pack(latents, patch, patch_t)
    if extra_tokens:
        tokens = torch.cat([*extra_tokens, tokens], dim=1)
        coords = torch.cat([*extra_coords, coords], dim=2)
        mask = torch.cat([*extra_masks, mask], dim=1)
    coords[:, 0] = coords[:, 0] * (1.0 / frame_rate)  # seconds, as diffusers scales after concatenation
    return tokens, mask, coords, sum(t.shape[1] for t in extra_tokens)


@torch.inference_mode()
def sample_condition(
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
    """Denoise ``rows`` (same size/layout) and return their normalised latents (B, C, F, H, W) in float32."""
    cfg = transformer.config
    f, h, w = latent_shape(num_frames, height, width, temporal=vae.temporal_compression_ratio,
                           spatial=vae.spatial_compression_ratio)  # fmt: skip
    shape = (len(rows), cfg.in_channels, f, h, w)
    schedule = condition_schedule(scheduler, num_inference_steps=params.num_inference_steps,
                                  timesteps=params.timesteps)  # fmt: skip
    if params.denoise_strength < 1.0:
        schedule = schedule.truncate(params.denoise_strength)
    schedule = schedule.to(device)

    latents, mask, coords, num_extra = _prepare(
        vae, rows, shape, schedule.sigmas[0], params, num_frames, frame_rate, device, cfg.patch_size, cfg.patch_size_t
    )
    embeds, text_mask = text_context(rows, params.guided, device, dtype)
    # Rows of a batch (same size and condition layout) and the guided batch's two halves usually share their
    # positions: one table row then serves them all (``rotate`` broadcasts) instead of a copy per row and half
    # (13B at 32k tokens: 0.5 GB each). Comparing them syncs with the host once per pass, outside the steps.
    grid = grid_from_pixel_coords(coords)
    if grid.shape[0] > 1 and torch.equal(grid, grid[:1].expand_as(grid)):
        grid = grid[:1]
    elif params.guided and grid.shape[0] > 1:
        grid = torch.cat([grid, grid])
    denoise = make_denoiser(transformer, embeds, text_mask, grid, dtype)

    init_latents = latents.clone() if mask is not None else None
    renoise = params.image_cond_noise_scale > 0 and mask is not None
    for t in schedule.timesteps:
        if renoise:
            noise = randn_rows(tuple(latents.shape), rows, device)
            latents = renoise_hard_conditions(t, init_latents, latents, noise, params.image_cond_noise_scale, mask)
        timestep = token_timesteps(t, latents.shape[0], mask)
        velocity = guided_prediction(denoise, latents, timestep, guidance_scale=params.guidance_scale,
                                     guidance_rescale=params.guidance_rescale, upcast=False)  # fmt: skip
        latents = conditioned_euler_step(latents, velocity, t, mask, schedule.ladder, schedule.num_train_timesteps)

    latents = latents[:, num_extra:]
    return unpack(latents, f // cfg.patch_size_t, h // cfg.patch_size, w // cfg.patch_size, cfg.patch_size,
                  cfg.patch_size_t).float()  # fmt: skip
