"""Named releases with their recommended recipes (REFERENCE.md; the diffusers LTX-Video docs).

A job names a preset (``model.preset``) or a bare checkpoint. A preset fills ``model.checkpoint``,
``model.upsampler`` and ``model.text_encoder`` and supplies recipe and row defaults; anything the job sets wins.
Releases published only as original single files point at one file of the hub repo
(``org/name/file.safetensors``); those carry no text encoder, so their presets name one: the T5-XXL
(google/t5-v1_1-xxl, the same for every release) in the ``text_encoder/`` + ``tokenizer/`` folders of
Lightricks/LTX-Video's diffusers layout. Only those two folders are downloaded. Lightricks' own inference
configs use PixArt-alpha/PixArt-XL-2-1024-MS's copy of the same model; either works as ``model.text_encoder``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..spec import SpecError

DISTILLED_BASE_TIMESTEPS = [1000, 993, 987, 981, 975, 909, 725, 0.03]
DISTILLED_REFINE_TIMESTEPS = [1000, 909, 725, 421, 0]
UPSCALER_097 = "Lightricks/ltxv-spatial-upscaler-0.9.7"
LTXV_FILES = "Lightricks/LTX-Video/"  # the hub repo holding the original single files
UPSCALER_098_FILE = LTXV_FILES + "ltxv-spatial-upscaler-0.9.8.safetensors"
T5_XXL = "Lightricks/LTX-Video"  # its text_encoder/ + tokenizer/ folders (safetensors, diffusers layout)


@dataclass(frozen=True)
class Preset:
    checkpoint: str
    description: str
    upsampler: str | None = None
    text_encoder: str | None = None  # default model.text_encoder: needed by single files, which carry no T5
    recipe: dict[str, Any] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)


_TIMESTEP_AWARE = {"decode_timestep": 0.05, "decode_noise_scale": 0.025}

_DISTILLED_MULTISCALE = {
    "pipeline": "condition",
    "timesteps": DISTILLED_BASE_TIMESTEPS,
    "guidance_scale": 1.0,
    "image_cond_noise_scale": 0.0,
    **_TIMESTEP_AWARE,
    "vae_tiling": {"spatial": True},  # as diffusers' docs decode these releases (vae.enable_tiling())
    "multiscale": {
        "downscale": 0.6667,
        "adain_factor": 1.0,
        "refine": {"timesteps": DISTILLED_REFINE_TIMESTEPS, "denoise_strength": 0.999, "guidance_scale": 1.0},
    },
}

_DISTILLED_098 = {**_DISTILLED_MULTISCALE,
                  "multiscale": {**_DISTILLED_MULTISCALE["multiscale"], "tone_map_compression_ratio": 0.6}}
_DEV_13B_MULTISCALE = {
    "pipeline": "condition", "num_inference_steps": 30, "guidance_scale": 5.0, "guidance_rescale": 0.7,
    "image_cond_noise_scale": 0.0, **_TIMESTEP_AWARE, "vae_tiling": {"spatial": True},
    "multiscale": {"downscale": 0.6667, "refine": {"num_inference_steps": 10, "denoise_strength": 0.4,
                                                   "guidance_scale": 5.0, "guidance_rescale": 0.7}},
}
_FP8_NOTE = "; fp8 weights, cast to the compute dtype at load"
_DEV_2B = {"pipeline": "condition", "num_inference_steps": 40, "guidance_scale": 3.0, "image_cond_noise_scale": 0.025,
           **_TIMESTEP_AWARE}  # fmt: skip

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
        recipe=_DEV_2B,
        defaults={"width": 768, "height": 512, "num_frames": 161},
    ),
    "ltxv-13b-0.9.7-dev": Preset(
        checkpoint="Lightricks/LTX-Video-0.9.7-dev",
        upsampler=UPSCALER_097,
        description="13B 0.9.7 dev, multi-scale (30 base steps CFG 5 rescale 0.7, 10 refine steps at 0.4)",
        recipe=_DEV_13B_MULTISCALE,
        defaults={"width": 1152, "height": 768, "num_frames": 161},
    ),
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
        recipe=_DISTILLED_098,
        defaults={"width": 832, "height": 480, "num_frames": 161},
    ),
    # --- releases published only as original single files (weights/single_file.py) ---
    "ltxv-2b-0.9.0": Preset(
        checkpoint=LTXV_FILES + "ltx-video-2b-v0.9.safetensors",
        text_encoder=T5_XXL,
        description="2B 0.9.0 (single file), LTXPipeline semantics, VAE without timestep conditioning",
        recipe={"pipeline": "base", "num_inference_steps": 50, "guidance_scale": 3.0},
        defaults={"width": 704, "height": 480, "num_frames": 161},
    ),
    "ltxv-2b-0.9.6-dev": Preset(
        checkpoint=LTXV_FILES + "ltxv-2b-0.9.6-dev-04-25.safetensors",
        text_encoder=T5_XXL,
        description="2B 0.9.6 dev (single file), frame-indexed conditions",
        recipe=_DEV_2B,
        defaults={"width": 768, "height": 512, "num_frames": 161},
    ),
    "ltxv-2b-0.9.6-distilled": Preset(
        checkpoint=LTXV_FILES + "ltxv-2b-0.9.6-distilled-04-25.safetensors",
        text_encoder=T5_XXL,
        description="2B 0.9.6 distilled (single file): 8 steps, no CFG",
        recipe={**_DEV_2B, "num_inference_steps": 8, "guidance_scale": 1.0},
        defaults={"width": 768, "height": 512, "num_frames": 161},
    ),
    **{f"ltxv-13b-0.9.7-{kind}-fp8": Preset(
        checkpoint=LTXV_FILES + f"ltxv-13b-0.9.7-{kind}-fp8.safetensors",
        upsampler=UPSCALER_097,
        text_encoder=T5_XXL,
        description=f"13B 0.9.7 {kind} (single file{_FP8_NOTE}), multi-scale",
        recipe=recipe,
        defaults={"width": 1152, "height": 768, "num_frames": 161},
    ) for kind, recipe in (("dev", _DEV_13B_MULTISCALE), ("distilled", _DISTILLED_MULTISCALE))},
    **{f"ltxv-13b-0.9.8-{name}": Preset(
        checkpoint=LTXV_FILES + f"ltxv-13b-0.9.8-{name}.safetensors",
        upsampler=UPSCALER_098_FILE,
        text_encoder=T5_XXL,
        description=f"13B 0.9.8 {name} (single file{_FP8_NOTE if 'fp8' in name else ''}), multi-scale",
        recipe=_DEV_13B_MULTISCALE if name.startswith("dev") else _DISTILLED_098,
        defaults={"width": 1152, "height": 768, "num_frames": 161} if name.startswith("dev")
        else {"width": 832, "height": 480, "num_frames": 161},
    ) for name in ("dev", "dev-fp8", "distilled-fp8")},
    **{f"ltxv-2b-0.9.8-{name}": Preset(
        checkpoint=LTXV_FILES + f"ltxv-2b-0.9.8-{name}.safetensors",
        upsampler=UPSCALER_098_FILE,
        text_encoder=T5_XXL,
        description=f"2B 0.9.8 {name} (single file{_FP8_NOTE if 'fp8' in name else ''}), distilled multi-scale, "
                    "no tone mapping",
        recipe=_DISTILLED_MULTISCALE,
        defaults={"width": 832, "height": 480, "num_frames": 161},
    ) for name in ("distilled", "distilled-fp8")},
}  # fmt: skip


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise SpecError(f"model.preset: unknown preset {name!r}; known presets: {sorted(PRESETS)}") from None
