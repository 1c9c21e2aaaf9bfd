"""Flow-matching Euler steps and the latent-space helpers of the LTX pipelines.

Contract: the velocity ``v`` predicts ``noise - x0``; one step moves a sample from noise level ``sigma`` to
``sigma_next`` by ``x + (sigma_next - sigma) * v``, computed in float32 as diffusers'
``FlowMatchEulerDiscreteScheduler.step`` does. Two forms, matching the two pipeline families:

- ``euler_step``: one sigma pair for the whole tensor (``LTXPipeline``, ``LTXImageToVideoPipeline``); the
  result is cast back to the velocity's dtype.
- ``conditioned_euler_step`` / ``per_token_euler_step``: ``LTXConditionPipeline``, where every token has its
  own timestep (conditioning tokens sit at a lower noise level, or at 0) and steps to the next lower sigma
  of the scheduler's ladder; the result stays float32.

Also here: ``forward_noise`` (noising latents to a sigma), ``renoise_hard_conditions`` (the per-step noise on
hard conditioning tokens), and the latent upsampler's ``adain_filter_latent`` / ``tone_map_latents``.
Sigmas and timesteps are float32 tensors (0-dim for a single value) so the arithmetic types, and so
the rounding, are diffusers'.
"""

from __future__ import annotations

import torch

# diffusers' tolerance for "this token is below the current noise level" in the per-token step and mask.
_EPS = 1e-6


def euler_step(sample: torch.Tensor, velocity: torch.Tensor, sigma: torch.Tensor,
               sigma_next: torch.Tensor) -> torch.Tensor:
    """``sample + (sigma_next - sigma) * velocity`` in float32, returned in ``velocity.dtype``.

    ``sigma`` and ``sigma_next`` are 0-dim float32 tensors (``schedule.sigmas[i]``, ``[i + 1]``): as CPU
    scalars they do not promote a half-precision velocity, exactly as in the scheduler.
    """
    dt = sigma_next - sigma
    prev = sample.to(torch.float32) + dt * velocity
    return prev.to(velocity.dtype)


def token_timesteps(t: torch.Tensor, batch_size: int,
                    conditioning_mask: torch.Tensor | None) -> torch.Tensor:
    """Per-token timesteps of ``LTXConditionPipeline`` -> (B, S), or (B, 1) without conditions.

    A token conditioned with strength m is held at timestep ``(1 - m) * 1000`` (0 for a hard condition)
    until the schedule's ``t`` falls below it. The transformer gets these (doubled under guidance).
    """
    ts = t.expand(batch_size).unsqueeze(-1).float()
    if conditioning_mask is not None:
        ts = torch.min(ts, (1 - conditioning_mask) * 1000.0)
    return ts


def per_token_euler_step(sample: torch.Tensor, velocity: torch.Tensor, per_token_timesteps: torch.Tensor,
                         ladder: torch.Tensor, num_train_timesteps: int) -> torch.Tensor:
    """The scheduler's per-token step: each token moves from its own sigma to the largest ladder sigma
    strictly below it (by more than 1e-6); a token already at the ladder's bottom does not move.

    sample, velocity: (B, S, C); per_token_timesteps: (B, S) or (B, 1); ladder: the scheduler's full sigma
    array, terminal 0 included (``Schedule.ladder``). Returns float32.
    """
    token_sigmas = per_token_timesteps / num_train_timesteps  # (B, S)
    rungs = ladder[:, None, None]  # (L, 1, 1)
    below = rungs < token_sigmas[None] - _EPS  # (L, B, S)
    next_sigmas = (below * rungs).max(dim=0).values  # (B, S)
    dt = token_sigmas[..., None] - next_sigmas[..., None]  # (B, S, 1)
    # diffusers steps with model_output = -velocity and dt = sigma - sigma_next; same bits as the usual form.
    return sample.to(torch.float32) + dt * -velocity


def conditioned_euler_step(latents: torch.Tensor, velocity: torch.Tensor, t: torch.Tensor,
                           conditioning_mask: torch.Tensor | None, ladder: torch.Tensor,
                           num_train_timesteps: int) -> torch.Tensor:
    """One ``LTXConditionPipeline`` step: per-token Euler, then tokens whose conditioning level is still
    below ``t`` (``t/1000 - 1e-6 >= 1 - mask``) keep their old values.

    latents (B, S, C) float32; velocity (B, S, C) (the guided prediction); t: 0-dim ``schedule.timesteps[i]``;
    conditioning_mask (B, S) float32 or None.
    """
    ts = token_timesteps(t, latents.shape[0], conditioning_mask)
    stepped = per_token_euler_step(latents, velocity, ts, ladder, num_train_timesteps)
    if conditioning_mask is None:
        return stepped
    to_denoise = (t / 1000 - _EPS < (1.0 - conditioning_mask)).unsqueeze(-1)  # (B, S, 1)
    return torch.where(to_denoise, stepped, latents)


def renoise_hard_conditions(t: torch.Tensor, init_latents: torch.Tensor, latents: torch.Tensor,
                            noise: torch.Tensor, noise_scale: float,
                            conditioning_mask: torch.Tensor) -> torch.Tensor:
    """Before each ``LTXConditionPipeline`` step (when ``image_cond_noise_scale > 0`` and there are
    conditions): hard-conditioned tokens (mask 1) are reset to their initial latents plus
    ``noise_scale * noise * (t/1000)^2``, which helps motion continuity. ``noise`` is a fresh
    ``randn(latents.shape)`` drawn from the pass's generator every step (the caller draws it: draw order
    is part of the pipeline's contract); ``t`` is ``schedule.timesteps[i]``.
    """
    t_unit = t / 1000.0
    hard = (conditioning_mask > 1.0 - _EPS).unsqueeze(-1)
    noised = init_latents + noise_scale * noise * (t_unit**2)
    return torch.where(hard, noised, latents)


def forward_noise(latents: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """``sigma * noise + (1 - sigma) * latents``: latents brought to noise level ``sigma`` (a truncated
    schedule's ``sigmas[0]``). ``sigma`` is 0-dim or broadcastable; diffusers passes a (B,) tensor,
    which broadcasts against the last latent dim and so is only right for batch 1 (where it equals ours)."""
    return sigma * noise + (1 - sigma) * latents


def adain_filter_latent(latents: torch.Tensor, reference: torch.Tensor, factor: float = 1.0) -> torch.Tensor:
    """Match each (sample, channel)'s mean and unbiased std to ``reference``'s, then blend by ``factor``.

    latents, reference: (B, C, F, H, W), possibly at different F/H/W (upsampled vs. original).
    """
    r_sd, r_mean = torch.std_mean(reference, dim=(2, 3, 4), keepdim=True)  # (B, C, 1, 1, 1)
    i_sd, i_mean = torch.std_mean(latents, dim=(2, 3, 4), keepdim=True)
    result = ((latents - i_mean) / i_sd) * r_sd + r_mean
    return torch.lerp(latents, result, factor)


def tone_map_latents(latents: torch.Tensor, compression: float) -> torch.Tensor:
    """Sigmoid soft-compression of large latent values; ``compression`` in [0, 1], 0 is the identity."""
    scale_factor = compression * 0.75
    sigmoid_term = torch.sigmoid(4.0 * scale_factor * (torch.abs(latents) - 1.0))
    scales = 1.0 - 0.8 * scale_factor * sigmoid_term
    return latents * scales
