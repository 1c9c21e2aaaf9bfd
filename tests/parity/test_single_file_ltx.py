"""Single files against Lightricks' own ``ltx-video`` package, the format's author, as a second reader.

- Files made from Lightricks' models (its ``state_dict`` names, its config schema) load into ours strictly
  and compute the same VAE encode/decode and latent upsampling.
- Lightricks' loaders read the files our key tables write (strict ``load_state_dict``).

Skipped unless ``ltx_video`` imports: ``pip install --no-deps ltx-video==0.1.2 einops`` (its declared pins,
transformers<4.52 and huggingface-hub~=0.30, conflict with ours; its model modules need only torch,
diffusers and einops).
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from ltx_batch.weights.checkpoint import open_checkpoint

from .single_file_data import (
    LT_SCHEDULER_LEGACY,
    LT_SCHEDULER_NEW,
    VAE_STYLES,
    diffusers_transformer,
    file_state,
    lt_transformer,
    model_config,
    randomize,
    write_single_file,
)

pytest.importorskip("einops")
ltx_video = pytest.importorskip("ltx_video")
from ltx_video.models.autoencoders.causal_video_autoencoder import CausalVideoAutoencoder  # noqa: E402
from ltx_video.models.autoencoders.latent_upsampler import LatentUpsampler  # noqa: E402
from ltx_video.models.transformers.transformer3d import Transformer3DModel  # noqa: E402

LATENT = 8
STYLES = ["0.9.0", "0.9.1", "0.9.5"]


def _lightricks_file(style: str, path):
    """A single file written from Lightricks' own (randomised) models, as its releases are."""
    lt_vae_cfg = VAE_STYLES[style][0]
    lt_tr_cfg = lt_transformer(in_channels=LATENT, causal=True if style == "0.9.5" else None)
    vae = CausalVideoAutoencoder.from_config(copy.deepcopy(lt_vae_cfg))
    state = randomize(vae.state_dict(), "lt-vae" + style)
    # the decoder's noise injection draws from the global RNG in Lightricks' code: switch it off to compare
    state = {k: torch.zeros_like(v) if "per_channel_scale" in k else v for k, v in state.items()}
    nn.Module.load_state_dict(vae, state)
    tr = Transformer3DModel.from_config(lt_tr_cfg)
    tr_state = randomize(tr.state_dict(), "lt-tr")
    stats = randomize({"mean-of-means": torch.zeros(LATENT), "std-of-means": torch.zeros(LATENT),
                       "channel": torch.zeros(LATENT), "mean-of-stds": torch.zeros(LATENT),
                       "mean-of-stds_over_std-of-means": torch.zeros(LATENT)}, "stats")  # fmt: skip
    tensors = {**{"model.diffusion_model." + k: v for k, v in tr_state.items()},
               **{"vae." + k: v for k, v in state.items()},
               **{"vae.per_channel_statistics." + k: v for k, v in stats.items()}}  # fmt: skip
    scheduler = LT_SCHEDULER_NEW if style == "0.9.5" else LT_SCHEDULER_LEGACY
    write_single_file(path, tensors, model_config(lt_vae_cfg, lt_tr_cfg, scheduler))
    return vae.eval(), tr_state, stats


@pytest.mark.parametrize("style", STYLES)
def test_files_from_lightricks_models_load_and_compute_the_same(style, tmp_path):
    path = tmp_path / f"lt-{style}.safetensors"
    lt_vae, tr_state, stats = _lightricks_file(style, path)
    ckpt = open_checkpoint(str(path))
    ours = ckpt.load_vae(dtype=torch.float32)
    transformer = ckpt.load_transformer(dtype=torch.float32)  # strict: Lightricks' transformer names map fully
    assert sum(t.numel() for t in transformer.state_dict().values()) == sum(t.numel() for t in tr_state.values())
    assert torch.equal(ours.latents_mean, stats["mean-of-means"]) and torch.equal(ours.latents_std, stats["std-of-means"])

    x = torch.rand(1, 3, 9, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        theirs = lt_vae.encoder(x)[:, : LATENT + 1]  # "uniform" log-variance: one channel, then repeats of it
        torch.testing.assert_close(ours.encoder(x), theirs, rtol=1e-4, atol=1e-5)
        z = torch.randn(1, LATENT, 2, 2, 2, generator=torch.Generator().manual_seed(1))
        t = torch.tensor([0.05]) if ours.config.timestep_conditioning else None
        theirs = lt_vae.decoder(z, target_shape=(1, 3, 9, 64, 64), timestep=t)
        mine = ours.decoder(z, t, torch.Generator().manual_seed(2))
    torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("style", STYLES)
def test_lightricks_loaders_read_our_files(style, tmp_path):
    from diffusers import AutoencoderKLLTXVideo, LTXVideoTransformer3DModel

    lt_vae_cfg, d_vae = VAE_STYLES[style]
    vae = randomize(AutoencoderKLLTXVideo(**d_vae).state_dict(), "vae")
    tr = randomize(LTXVideoTransformer3DModel(**diffusers_transformer(LATENT)).state_dict(), "tr")
    tensors = file_state(transformer=tr, vae=vae, lt_vae=lt_vae_cfg)
    config = model_config(lt_vae_cfg, lt_transformer(in_channels=LATENT), LT_SCHEDULER_LEGACY)
    path = write_single_file(tmp_path / "ours.safetensors", tensors, config)
    # both load with load_state_dict(strict=True): every key we write is one of Lightricks' and none is missing
    lt_vae = CausalVideoAutoencoder.from_pretrained(path)
    lt_tr = Transformer3DModel.from_pretrained(path)
    for key, value in lt_vae.state_dict().items():
        if key not in ("std_of_means", "mean_of_means"):
            assert torch.equal(value, tensors["vae." + key]), key
    assert torch.equal(lt_vae.std_of_means, vae["latents_std"]) and torch.equal(lt_vae.mean_of_means, vae["latents_mean"])
    assert all(torch.equal(v, tensors["model.diffusion_model." + k]) for k, v in lt_tr.state_dict().items())


def test_upsampler_file_from_lightricks(tmp_path):
    cfg = {"_class_name": "LatentUpsampler", "in_channels": LATENT, "mid_channels": 32, "num_blocks_per_stage": 1,
           "dims": 3, "spatial_upsample": True, "temporal_upsample": False}  # fmt: skip
    lt = LatentUpsampler.from_config(cfg)
    state = randomize(lt.state_dict(), "lt-up")
    lt.load_state_dict(state)
    path = write_single_file(tmp_path / "up.safetensors", state, cfg)
    ours = open_checkpoint(str(path)).load_upsampler(dtype=torch.float32)
    z = torch.randn(1, LATENT, 2, 3, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(ours(z), lt.eval()(z), rtol=1e-4, atol=1e-5)
    assert LatentUpsampler.from_pretrained(path) is not None  # and Lightricks reads the file back


def test_every_lightricks_transformer_config_key_is_handled():
    """Transformer3DModel's config is its __init__ signature: each parameter is copied, fixed or ignored."""
    import inspect

    from ltx_batch.weights import single_file

    params = set(inspect.signature(Transformer3DModel.__init__).parameters) - {"self"}
    handled = set(single_file._TR_DEFAULTS) | single_file._TR_IGNORED
    assert params <= handled, sorted(params - handled)
