"""Classifier-free guidance, as the LTX pipelines of diffusers apply it.

Contract: with guidance (``guidance_scale > 1``) the denoiser runs once on the batch doubled along dim 0,
unconditional half first: the caller's denoiser must see prompt embeddings (and masks, coordinates)
stacked as ``[negative; positive]``, as diffusers does with
``torch.cat([negative_prompt_embeds, prompt_embeds])``. The prediction is
``uncond + scale * (text - uncond)``, optionally rescaled (``rescale_noise_cfg``) towards the text
prediction's per-sample standard deviation. Without guidance the denoiser runs once on the plain batch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""(latents (B', S, C), timestep (B',) | (B', 1) | (B', S)) -> velocity (B', S, C)."""


def cfg(noise_uncond: torch.Tensor, noise_text: torch.Tensor, scale: float) -> torch.Tensor:
    return noise_uncond + scale * (noise_text - noise_uncond)


def rescale_noise_cfg(noise_cfg: torch.Tensor, noise_text: torch.Tensor, guidance_rescale: float) -> torch.Tensor:
    """Blend the guided prediction with a copy rescaled to the text prediction's std (arXiv 2305.08891, 3.4).

    The std is the unbiased std over every dim but the batch, so each sample is rescaled on its own.
    """
    dims = list(range(1, noise_text.ndim))
    std_text = noise_text.std(dim=dims, keepdim=True)
    std_cfg = noise_cfg.std(dim=dims, keepdim=True)
    rescaled = noise_cfg * (std_text / std_cfg)
    return guidance_rescale * rescaled + (1 - guidance_rescale) * noise_cfg


def guided_prediction(denoise: Denoiser, latents: torch.Tensor, timestep: torch.Tensor, *,
                      guidance_scale: float, guidance_rescale: float = 0.0, upcast: bool) -> torch.Tensor:
    """One denoiser call (doubled batch when guiding) -> the guided prediction for ``latents``' batch.

    ``timestep`` is per row of ``latents`` (the doubling is done here). ``upcast``: ``LTXPipeline`` and
    ``LTXImageToVideoPipeline`` cast the transformer output to float32 before guidance; ``LTXConditionPipeline``
    does not (guidance runs in the transformer's dtype), so the choice changes the bits in half precision.
    The denoiser does its own cast of the latents to the model dtype (diffusers casts after doubling, which
    is the same values).
    """
    do_cfg = guidance_scale > 1.0
    if do_cfg:
        # (B, ...) -> (2B, ...): rows [0, B) pair with the negative prompt, [B, 2B) with the positive one.
        latents = torch.cat([latents, latents])
        timestep = torch.cat([timestep, timestep])
    pred = denoise(latents, timestep)
    if upcast:
        pred = pred.float()
    if not do_cfg:
        return pred
    uncond, text = pred.chunk(2)
    guided = cfg(uncond, text, guidance_scale)
    if guidance_rescale > 0:
        guided = rescale_noise_cfg(guided, text, guidance_rescale)
    return guided
