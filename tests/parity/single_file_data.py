"""Tiny checkpoints in the original Lightricks single-file format, for the single-file tests.

Each VAE style is a Lightricks ``CausalVideoAutoencoder`` config in its own schema, as the releases write it
(0.9.0: one shared ``blocks`` list with int params; 0.9.1: ``encoder_blocks``/``decoder_blocks`` mixing int
and dict params; 0.9.5: dict params with ``compress_*_res``), plus the diffusers config we expect for it,
written out by hand from the pattern of ``scripts/convert_ltx_to_diffusers.py::get_vae_config``.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from ltx_batch.weights.keymaps_ltx import TRANSFORMER_PREFIX, VAE_PREFIX, transformer_file_key, vae_layout

_VAE_COMMON = {"_class_name": "CausalVideoAutoencoder", "dims": 3, "in_channels": 3, "out_channels": 3,
               "scaling_factor": 1.0, "norm_layer": "pixel_norm", "patch_size": 4, "latent_log_var": "uniform",
               "use_quant_conv": False, "causal_decoder": False}  # fmt: skip
_DIFFUSERS_COMMON = {"in_channels": 3, "out_channels": 3, "patch_size": 4, "patch_size_t": 1, "resnet_norm_eps": 1e-6,
                     "scaling_factor": 1.0, "encoder_causal": True, "decoder_causal": False}  # fmt: skip
LEGACY = "LTXVideoDownBlock3D"
NEW = "LTXVideo095DownBlock3D"


def _res(n, noise=None):
    return ["res_x", {"num_layers": n} if noise is None else {"num_layers": n, "inject_noise": noise}]


_UP = ["compress_all", {"residual": True, "multiplier": 2}]
_ENC_091 = [_res(1), ["compress_all", {}], ["res_x_y", 1], _res(1), ["compress_all", {}], ["res_x_y", 1], _res(1),
            ["compress_all", {}], _res(1), _res(1)]  # fmt: skip
_DEC_091 = [_res(1, True), _UP, _res(1, True), _UP, _res(1, True), _UP, _res(2, False)]

# style -> (Lightricks VAE config, expected diffusers config)
VAE_STYLES: dict[str, tuple[dict, dict]] = {
    "0.9.0": (
        {**_VAE_COMMON, "latent_channels": 8, "encoder_base_channels": 8, "decoder_base_channels": 8,
         "blocks": [["res_x", 1], ["compress_all", 1], ["res_x_y", 1], ["res_x", 1], ["compress_all", 1],
                    ["res_x_y", 1], ["res_x", 1], ["compress_all", 1], ["res_x", 1], ["res_x", 2]]},
        {**_DIFFUSERS_COMMON, "latent_channels": 8, "block_out_channels": (8, 16, 32, 32),
         "down_block_types": (LEGACY,) * 4, "decoder_block_out_channels": (8, 16, 32, 32),
         "layers_per_block": (1, 1, 1, 1, 2), "decoder_layers_per_block": (1, 1, 1, 1, 2),
         "spatio_temporal_scaling": (True, True, True, False), "decoder_spatio_temporal_scaling": (True, True, True, False),
         "decoder_inject_noise": (False,) * 5, "downsample_type": ("conv",) * 4, "upsample_residual": (False,) * 4,
         "upsample_factor": (1,) * 4, "timestep_conditioning": False},
    ),
    "0.9.1": (
        {**_VAE_COMMON, "latent_channels": 8, "encoder_base_channels": 8, "decoder_base_channels": 8,
         "timestep_conditioning": True, "encoder_blocks": _ENC_091, "decoder_blocks": _DEC_091},
        {**_DIFFUSERS_COMMON, "latent_channels": 8, "block_out_channels": (8, 16, 32, 32),
         "down_block_types": (LEGACY,) * 4, "decoder_block_out_channels": (16, 32, 64),
         "layers_per_block": (1, 1, 1, 1, 1), "decoder_layers_per_block": (1, 1, 1, 2),
         "spatio_temporal_scaling": (True, True, True, False), "decoder_spatio_temporal_scaling": (True, True, True),
         "decoder_inject_noise": (True, True, True, False), "downsample_type": ("conv",) * 4,
         "upsample_residual": (True,) * 3, "upsample_factor": (2,) * 3, "timestep_conditioning": True},
    ),
    "0.9.5": (
        {**_VAE_COMMON, "latent_channels": 8, "encoder_base_channels": 8, "decoder_base_channels": 8,
         "timestep_conditioning": True,
         "encoder_blocks": [_res(1), ["compress_space_res", {"multiplier": 2}], _res(1),
                            ["compress_time_res", {"multiplier": 2}], _res(2), ["compress_all_res", {"multiplier": 2}],
                            _res(1), ["compress_all_res", {"multiplier": 2}], _res(1)],
         "decoder_blocks": [_res(1, False), _UP, _res(2, False), _UP, _res(1, False), _UP, _res(1, False)]},
        {**_DIFFUSERS_COMMON, "latent_channels": 8, "block_out_channels": (8, 16, 32, 64, 128),
         "down_block_types": (NEW,) * 4, "decoder_block_out_channels": (16, 32, 64),
         "layers_per_block": (1, 1, 2, 1, 1), "decoder_layers_per_block": (1, 2, 1, 1),
         "spatio_temporal_scaling": (True,) * 4, "decoder_spatio_temporal_scaling": (True,) * 3,
         "decoder_inject_noise": (False,) * 4, "downsample_type": ("spatial", "temporal", "spatiotemporal", "spatiotemporal"),
         "upsample_residual": (True,) * 3, "upsample_factor": (2,) * 3, "timestep_conditioning": True},
    ),
}  # fmt: skip
# 0.9.1 written with a shared "blocks" for the encoder beside "decoder_blocks" (Lightricks' from_config reads
# encoder_blocks, else blocks): the same model.
_v091 = copy.deepcopy(VAE_STYLES["0.9.1"][0])
_v091["blocks"] = _v091.pop("encoder_blocks")
VAE_STYLES["0.9.1-blocks"] = (_v091, VAE_STYLES["0.9.1"][1])

LT_SCHEDULER_LEGACY = {"_class_name": "RectifiedFlowScheduler", "_diffusers_version": "0.25.1", "num_train_timesteps": 1000,
                       "shifting": "SD3", "base_resolution": None, "target_shift_terminal": 0.1}  # fmt: skip
LT_SCHEDULER_NEW = {"_class_name": "RectifiedFlowScheduler", "_diffusers_version": "0.25.1", "num_train_timesteps": 1000,
                    "shifting": None, "base_resolution": None, "sampler": "LinearQuadratic"}  # fmt: skip


def lt_transformer(*, in_channels: int, heads: int = 2, head_dim: int = 16, layers: int = 2, caption: int = 32,
                   causal: bool | None = None) -> dict:  # fmt: skip
    """A Lightricks ``Transformer3DModel`` config with every key the releases write."""
    cfg = {"_class_name": "Transformer3DModel", "_diffusers_version": "0.25.1",
           "_name_or_path": "PixArt-alpha/PixArt-XL-2-256x256", "activation_fn": "gelu-approximate",
           "attention_bias": True, "attention_head_dim": head_dim, "attention_type": "default",
           "caption_channels": caption, "cross_attention_dim": heads * head_dim, "double_self_attention": False,
           "dropout": 0.0, "in_channels": in_channels, "norm_elementwise_affine": False, "norm_eps": 1e-06,
           "norm_num_groups": 32, "num_attention_heads": heads, "num_embeds_ada_norm": 1000, "num_layers": layers,
           "num_vector_embeds": None, "only_cross_attention": False, "out_channels": in_channels,
           "project_to_2d_pos": True, "upcast_attention": False, "use_linear_projection": False, "qk_norm": "rms_norm",
           "standardization_norm": "rms_norm", "positional_embedding_type": "rope", "positional_embedding_theta": 10000.0,
           "positional_embedding_max_pos": [20, 2048, 2048], "timestep_scale_multiplier": 1000}  # fmt: skip
    if causal is not None:
        cfg["causal_temporal_positioning"] = causal
    return cfg


def diffusers_transformer(in_channels: int, heads: int = 2, head_dim: int = 16, layers: int = 2, caption: int = 32) -> dict:
    return {"in_channels": in_channels, "out_channels": in_channels, "patch_size": 1, "patch_size_t": 1,
            "num_attention_heads": heads, "attention_head_dim": head_dim, "cross_attention_dim": heads * head_dim,
            "num_layers": layers, "activation_fn": "gelu-approximate", "qk_norm": "rms_norm_across_heads",
            "norm_elementwise_affine": False, "norm_eps": 1e-6, "caption_channels": caption, "attention_bias": True,
            "attention_out_bias": True}  # fmt: skip


def randomize(state: dict[str, torch.Tensor], salt: str = "") -> dict[str, torch.Tensor]:
    """Deterministic, non-trivial values per key (diffusers' init leaves some tensors at 0 or 1)."""
    out = {}
    for name, like in state.items():
        seed = int.from_bytes(hashlib.sha256(f"{salt}:{name}".encode()).digest()[:8], "big") & (2**63 - 1)
        g = torch.Generator().manual_seed(seed)
        if name.endswith(("latents_std", "std-of-means")):
            t = 0.5 + torch.rand(like.shape, generator=g)
        elif like.ndim <= 1:
            t = (1.0 if "norm" in name and name.endswith("weight") else 0.0) + 0.1 * torch.randn(like.shape, generator=g)
        else:
            t = torch.randn(like.shape, generator=g) / like[0].numel() ** 0.5
        out[name] = t.to(like.dtype).contiguous()
    return out


def file_state(*, transformer: dict | None = None, vae: dict | None = None, lt_vae: dict | None = None,
               prefix: str = TRANSFORMER_PREFIX) -> dict[str, torch.Tensor]:  # fmt: skip
    """diffusers-named state dicts -> the single file's keys (the latent statistics the files also carry
    but nobody reads are added, as the releases have them)."""
    out = {}
    if transformer is not None:
        out.update({prefix + transformer_file_key(k): v for k, v in transformer.items()})
    if vae is not None:
        layout = vae_layout(lt_vae)
        out.update({layout.file_key(k): v for k, v in vae.items()})
        n = vae["latents_mean"].shape[0]
        stats = VAE_PREFIX + "per_channel_statistics."
        out[stats + "channel"] = torch.arange(n, dtype=torch.float32)
        out[stats + "mean-of-stds"] = torch.ones(n)
        out[stats + "mean-of-stds_over_std-of-means"] = torch.ones(n)
    return out


def write_single_file(path: Path, tensors: dict[str, torch.Tensor], config: dict) -> Path:
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata={"config": json.dumps(config)})
    return path


def model_config(lt_vae: dict, lt_tr: dict, scheduler: dict) -> dict:
    return {"transformer": lt_tr, "vae": lt_vae, "scheduler": scheduler}
