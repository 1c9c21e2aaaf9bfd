"""Named releases with their recommended recipes (REFERENCE.md; the diffusers LTX-Video docs).

A job names a preset (``model.preset``) or a bare checkpoint. A preset fills ``model.checkpoint`` and
``model.upsampler`` and supplies recipe and row defaults; anything the job sets wins.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..spec import SpecError

DISTILLED_BASE_TIMESTEPS = [1000, 993, 987, 981, 975, 909, 725, 0.03]
DISTILLED_REFINE_TIMESTEPS = [1000, 909, 725, 421, 0]
UPSCALER_097 = "Lightricks/ltxv-spatial-upscaler-0.9.7"


@dataclass(frozen=True)
class Preset:
    checkpoint: str
    description: str
    upsampler: str | None = None
    recipe: dict[str, Any] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)


_TIMESTEP_AWARE = {"decode_timestep": 0.05, "decode_noise_scale": 0.025}

_DISTILLED_MULTISCALE = {
    "pipeline": "condition",
    "timesteps": DISTILLED_BASE_TIMESTEPS,
    "guidance_scale": 1.0,
    "image_cond_noise_scale": 0.0,
    **_TIMESTEP_AWARE,
    "multiscale": {
        "downscale": 0.6667,
        "adain_factor": 1.0,
        "refine": {"timesteps": DISTILLED_REFINE_TIMESTEPS, "denoise_strength": 0.999, "guidance_scale": 1.0},
    },
}

PRESETS: dict[str, Preset] = {
    "ltxv-debug": Preset(
        checkpoint="ltxv-debug",
        description="tiny random weights, made locally: exercises every code path on a CPU in seconds",
        recipe={"pipeline": "condition", "num_inference_steps": 4, "guidance_scale": 3.0, **_TIMESTEP_AWARE},
        defaults={"width": 192, "height": 128, "num_frames": 17},
    ),
    "ltxv-2b-0.9.1": Preset(
        checkpoint="Lightricks/LTX-Video-0.9.1",
        description="2B 0.9.1, LTXPipeline semantics, timestep-aware VAE",
        recipe={"pipeline": "base", "num_inference_steps": 50, "guidance_scale": 3.0, **_TIMESTEP_AWARE},
        defaults={"width": 704, "height": 480, "num_frames": 161},
    ),
    "ltxv-2b-0.9.5": Preset(
        checkpoint="Lightricks/LTX-Video-0.9.5",
        description="2B 0.9.5, frame-indexed image/video conditions",
        recipe={"pipeline": "condition", "num_inference_steps": 40, "guidance_scale": 3.0,
                "image_cond_noise_scale": 0.025, **_TIMESTEP_AWARE},
        defaults={"width": 768, "height": 512, "num_frames": 161},
    ),  # fmt: skip
    "ltxv-13b-0.9.7-dev": Preset(
        checkpoint="Lightricks/LTX-Video-0.9.7-dev",
        upsampler=UPSCALER_097,
        description="13B 0.9.7 dev, multi-scale (30 base steps CFG 5 rescale 0.7, 10 refine steps at 0.4)",
        recipe={
            "pipeline": "condition", "num_inference_steps": 30, "guidance_scale": 5.0, "guidance_rescale": 0.7,
            "image_cond_noise_scale": 0.0, **_TIMESTEP_AWARE,
            "multiscale": {"downscale": 0.6667, "refine": {"num_inference_steps": 10, "denoise_strength": 0.4,
                                                           "guidance_scale": 5.0, "guidance_rescale": 0.7}},
        },
        defaults={"width": 1152, "height": 768, "num_frames": 161},
    ),  # fmt: skip
    "ltxv-13b-0.9.7-distilled": Preset(
        checkpoint="Lightricks/LTX-Video-0.9.7-distilled",
        upsampler=UPSCALER_097,
        description="13B 0.9.7 distilled, multi-scale with the distilled timestep lists",
        recipe=_DISTILLED_MULTISCALE,
        defaults={"width": 1152, "height": 768, "num_frames": 161},
    ),
    "ltxv-13b-0.9.8-distilled": Preset(
        checkpoint="Lightricks/LTX-Video-0.9.8-13B-distilled",
        # The 0.9.8 upscaler is published as a copy of 0.9.7's (its hub commit message); unverified.
        upsampler=UPSCALER_097,
        description="13B 0.9.8 distilled, multi-scale with tone mapping 0.6; long videos",
        recipe={**_DISTILLED_MULTISCALE,
                "multiscale": {**_DISTILLED_MULTISCALE["multiscale"], "tone_map_compression_ratio": 0.6}},
        defaults={"width": 832, "height": 480, "num_frames": 161},
    ),  # fmt: skip
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise SpecError(f"model.preset: unknown preset {name!r}; known presets: {sorted(PRESETS)}") from None
