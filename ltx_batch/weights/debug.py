"""``ltxv-debug``: a tiny random-weight LTX-Video checkpoint, made on first use, in the diffusers layout.

It has the architecture of the 0.9.5+ releases (timestep-conditioned VAE with 0.9.5 blocks, the condition
pipeline's scheduler defaults) at toy widths, so every code path (text encoding, sampling, conditions,
decode, MP4, Ray stages) runs on a CPU in seconds. ``ltxv-debug-upsampler`` is the matching latent
upsampler for multi-scale jobs. The weights are a pure function of ``DEBUG_SEED`` and each tensor's name,
so every node makes the same bytes; the folder is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import string
from pathlib import Path

import torch
from safetensors.torch import save_file

DEBUG_SEED = 20250101

TEXT_DIM = 32
LATENT_CHANNELS = 16

TRANSFORMER = dict(
    in_channels=LATENT_CHANNELS, out_channels=LATENT_CHANNELS, patch_size=1, patch_size_t=1,
    num_attention_heads=2, attention_head_dim=16, cross_attention_dim=32, num_layers=2,
    activation_fn="gelu-approximate", qk_norm="rms_norm_across_heads", norm_elementwise_affine=False,
    norm_eps=1e-6, caption_channels=TEXT_DIM, attention_bias=True, attention_out_bias=True,
)  # fmt: skip
VAE = dict(
    in_channels=3, out_channels=3, latent_channels=LATENT_CHANNELS,
    block_out_channels=[16, 32, 64, 64, 64], down_block_types=["LTXVideo095DownBlock3D"] * 4,
    decoder_block_out_channels=[16, 32, 64], layers_per_block=[1, 1, 1, 1, 1], decoder_layers_per_block=[1, 1, 1, 1],
    spatio_temporal_scaling=[True] * 4, decoder_spatio_temporal_scaling=[True] * 3,
    decoder_inject_noise=[False] * 4, downsample_type=["spatial", "temporal", "spatiotemporal", "spatiotemporal"],
    upsample_residual=[True] * 3, upsample_factor=[2, 2, 2], timestep_conditioning=True, patch_size=4,
    patch_size_t=1, resnet_norm_eps=1e-6, scaling_factor=1.0, encoder_causal=True, decoder_causal=False,
    spatial_compression_ratio=32, temporal_compression_ratio=8,  # as the 0.9.5+ configs state them
)  # fmt: skip
UPSAMPLER = dict(in_channels=LATENT_CHANNELS, mid_channels=32, num_blocks_per_stage=1, dims=3,
                 spatial_upsample=True, temporal_upsample=False)  # fmt: skip
SCHEDULER = dict(num_train_timesteps=1000, shift=1.0, use_dynamic_shifting=False, base_shift=0.5, max_shift=1.15,
                 base_image_seq_len=256, max_image_seq_len=4096, invert_sigmas=False, shift_terminal=None,
                 use_karras_sigmas=False, use_exponential_sigmas=False, use_beta_sigmas=False,
                 time_shift_type="exponential", stochastic_sampling=False)  # fmt: skip
T5 = dict(d_model=TEXT_DIM, d_kv=8, d_ff=64, num_layers=2, num_heads=4, relative_attention_num_buckets=8,
          relative_attention_max_distance=32, dropout_rate=0.0, feed_forward_proj="gated-gelu",
          is_encoder_decoder=False, use_cache=False, pad_token_id=0, eos_token_id=1)  # fmt: skip
_WORDS = (
    "a an the of on in at with and to from by under over is are video camera shot scene close up slow motion "
    "cat dog bird fish horse person woman man child car boat train tree forest river sea ocean sky cloud sun "
    "moon night day light dark red blue green yellow white black orange purple city street road mountain snow "
    "rain fire water walks runs flies swims looks smiles turns moves sits stands"
).split()


def _tensor_for(name: str, like: torch.Tensor) -> torch.Tensor:
    """A deterministic random tensor for ``name``: independent of module construction order and init code."""
    seed = int.from_bytes(hashlib.sha256(f"{DEBUG_SEED}:{name}".encode()).digest()[:8], "big") & (2**63 - 1)
    g = torch.Generator().manual_seed(seed)
    if not like.is_floating_point():
        return like.clone()
    if name.endswith("latents_std"):
        return 0.5 + torch.rand(like.shape, generator=g)
    if like.ndim <= 1:
        if "norm" in name and name.endswith("weight"):
            return 1.0 + 0.1 * torch.randn(like.shape, generator=g)
        return 0.05 * torch.randn(like.shape, generator=g)
    fan_in = like[0].numel()
    return torch.randn(like.shape, generator=g) / fan_in**0.5


def _random_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: _tensor_for(k, v).contiguous() for k, v in module.state_dict().items()}


def _save_component(folder: Path, config: dict, module: torch.nn.Module, class_name: str) -> None:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"_class_name": class_name, **config}, indent=2))
    save_file(_random_state(module), str(folder / "diffusion_pytorch_model.safetensors"), metadata={"format": "pt"})


def _debug_vocab() -> list[tuple[str, float]]:
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [("▁" + w, -1.0) for w in _WORDS]
    pieces += [(c, -3.0) for c in string.ascii_letters + string.digits + string.punctuation]
    return pieces


def _write_text_encoder(root: Path) -> None:
    from transformers import T5Config, T5EncoderModel, T5Tokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    tokenizer = T5Tokenizer(vocab=_debug_vocab(), extra_ids=0)
    tokenizer.save_pretrained(str(root / "tokenizer"))
    config = T5Config(vocab_size=len(_debug_vocab()), **T5)
    with torch.device("meta"):
        model = T5EncoderModel(config)
    model.load_state_dict(_random_state(model), assign=True)
    model.tie_weights()
    model.save_pretrained(str(root / "text_encoder"), safe_serialization=True)


def _make_pipeline(root: Path) -> None:
    from ..models.transformer import LTXVideoTransformer, TransformerConfig
    from ..models.vae import VAEConfig, VideoVAE

    with torch.device("meta"):
        transformer = LTXVideoTransformer(TransformerConfig.from_dict(TRANSFORMER))
        vae = VideoVAE(VAEConfig.from_dict(VAE))
    _save_component(root / "transformer", TRANSFORMER, transformer, "LTXVideoTransformer3DModel")
    _save_component(root / "vae", VAE, vae, "AutoencoderKLLTXVideo")
    _write_text_encoder(root)
    (root / "scheduler").mkdir()
    (root / "scheduler" / "scheduler_config.json").write_text(
        json.dumps({"_class_name": "FlowMatchEulerDiscreteScheduler", **SCHEDULER}, indent=2)
    )
    index = {
        "_class_name": "LTXConditionPipeline",
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
        "text_encoder": ["transformers", "T5EncoderModel"],
        "tokenizer": ["transformers", "T5Tokenizer"],
        "transformer": ["diffusers", "LTXVideoTransformer3DModel"],
        "vae": ["diffusers", "AutoencoderKLLTXVideo"],
    }
    (root / "model_index.json").write_text(json.dumps(index, indent=2))


def _make_upsampler(root: Path) -> None:
    from ..models.upsampler import LatentUpsampler, UpsamplerConfig

    with torch.device("meta"):
        model = LatentUpsampler(UpsamplerConfig.from_dict(UPSAMPLER))
    _save_component(root / "latent_upsampler", UPSAMPLER, model, "LTXLatentUpsamplerModel")
    index = {"_class_name": "LTXLatentUpsamplePipeline", "latent_upsampler": ["ltx", "LTXLatentUpsamplerModel"]}
    (root / "model_index.json").write_text(json.dumps(index, indent=2))


def make_debug_checkpoint(name: str, dest: Path) -> Path:
    """Write checkpoint ``name`` into the new folder ``dest`` (which must not exist)."""
    {"ltxv-debug": _make_pipeline, "ltxv-debug-upsampler": _make_upsampler}[name](dest)
    return dest


def ensure_debug_checkpoint(name: str) -> Path:
    from .resolve import DEBUG_VERSION, cache_root, node_lock

    dest = cache_root() / "debug" / f"{name}-v{DEBUG_VERSION}"
    if dest.is_dir():
        return dest
    with node_lock("debug:" + name):
        if not dest.is_dir():
            tmp = dest.with_name(dest.name + ".partial")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            make_debug_checkpoint(name, tmp)
            tmp.rename(dest)
    return dest
