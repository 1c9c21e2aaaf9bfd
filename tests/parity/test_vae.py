"""Parity of ltx_batch.models.vae with diffusers' AutoencoderKLLTXVideo (tiny random models, CPU, float32).

One tiny model per VAE generation (0.9.0: conv downsampling, no timestep; 0.9.1: timestep-conditioned
decoder with noise injection and residual upsampling; 0.9.5: space-to-depth encoder blocks), with the
weights diffusers leaves constant at init (noise scales, LayerNorm affine, latent statistics) randomised.
"""

from __future__ import annotations

import functools

import pytest
import torch

pytest.importorskip("diffusers")
from diffusers import AutoencoderKLLTXVideo  # noqa: E402
from diffusers.pipelines.ltx.pipeline_ltx import LTXPipeline  # noqa: E402

from ltx_batch.models.config import ConfigError  # noqa: E402
from ltx_batch.models.vae import DecodeTiling, VAEConfig, VideoVAE, sample_posterior  # noqa: E402

_COMMON = dict(in_channels=3, out_channels=3, latent_channels=8, patch_size=4, patch_size_t=1, resnet_norm_eps=1e-6)
_LEGACY = ("LTXVideoDownBlock3D",) * 4
VARIANTS = {
    "0.9.0": dict(
        _COMMON, block_out_channels=(8, 16, 32, 32), down_block_types=_LEGACY, decoder_block_out_channels=(8, 16, 32, 32),
        layers_per_block=(1, 1, 1, 1, 1), decoder_layers_per_block=(1, 1, 1, 1, 1),
        spatio_temporal_scaling=(True, True, True, False), decoder_spatio_temporal_scaling=(True, True, True, False),
        decoder_inject_noise=(False,) * 5, downsample_type=("conv",) * 4, upsample_residual=(False,) * 4,
        upsample_factor=(1,) * 4, timestep_conditioning=False, scaling_factor=1.0,
        encoder_causal=True, decoder_causal=False,
    ),
    "0.9.1": dict(
        _COMMON, block_out_channels=(8, 16, 32, 32), down_block_types=_LEGACY, decoder_block_out_channels=(16, 32, 64),
        layers_per_block=(1, 1, 1, 1, 1), decoder_layers_per_block=(1, 1, 1, 1),
        spatio_temporal_scaling=(True, True, True, False), decoder_spatio_temporal_scaling=(True, True, True),
        decoder_inject_noise=(True, True, True, False), downsample_type=("conv",) * 4, upsample_residual=(True,) * 3,
        upsample_factor=(2,) * 3, timestep_conditioning=True, scaling_factor=1.0,
        encoder_causal=True, decoder_causal=False,
    ),
    "0.9.5": dict(
        _COMMON, block_out_channels=(8, 16, 32, 32, 32), down_block_types=("LTXVideo095DownBlock3D",) * 4,
        decoder_block_out_channels=(16, 32, 64), layers_per_block=(1, 1, 1, 1, 1), decoder_layers_per_block=(1, 1, 1, 1),
        spatio_temporal_scaling=(True,) * 4, decoder_spatio_temporal_scaling=(True,) * 3,
        decoder_inject_noise=(False,) * 4, downsample_type=("spatial", "temporal", "spatiotemporal", "spatiotemporal"),
        upsample_residual=(True,) * 3, upsample_factor=(2,) * 3, timestep_conditioning=True, scaling_factor=0.7,
        encoder_causal=True, decoder_causal=False, spatial_compression_ratio=32, temporal_compression_ratio=8,
    ),
}
# Not a release: flips both causal flags to cover the other time padding in each half.
VARIANTS["causal-flip"] = dict(VARIANTS["0.9.5"], encoder_causal=False, decoder_causal=True)


def _close(ours: torch.Tensor, ref: torch.Tensor) -> None:
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    diff = (ours - ref).abs().max().item()
    assert diff <= 1e-4 * max(1.0, ref.abs().max().item()), diff


@functools.cache
def _pair(variant: str) -> tuple[AutoencoderKLLTXVideo, VideoVAE]:
    torch.manual_seed(0)
    ref = AutoencoderKLLTXVideo(**VARIANTS[variant]).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, t in ref.state_dict().items():
            if "per_channel_scale" in name or name.endswith("norm3.bias") or name == "latents_mean":
                t.copy_(0.3 * torch.randn(t.shape, generator=g))
            elif name.endswith("norm3.weight"):
                t.add_(0.3 * torch.randn(t.shape, generator=g))
            elif name == "latents_std":
                t.copy_(0.5 + torch.rand(t.shape, generator=g))
    ours = VideoVAE(VAEConfig.from_dict(dict(ref.config))).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours


def _timestep(variant: str, batch: int) -> torch.Tensor | None:
    return torch.tensor([0.05, 0.4][:batch]) if VARIANTS[variant]["timestep_conditioning"] else None


def _latents(shape: tuple[int, ...], seed: int = 3) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("variant", ["0.9.0", "0.9.1", "0.9.5"])
def test_state_dict_keys_match(variant: str) -> None:
    ref, ours = _pair(variant)
    assert set(ours.state_dict()) == set(ref.state_dict())
    assert all(ours.state_dict()[k].shape == v.shape for k, v in ref.state_dict().items())


@pytest.mark.parametrize("variant", ["0.9.0", "0.9.1", "0.9.5", "causal-flip"])
def test_encode_moments_and_posterior_sample(variant: str) -> None:
    ref, ours = _pair(variant)
    x = torch.rand((2, 3, 9, 64, 64), generator=torch.Generator().manual_seed(2)) * 2 - 1
    with torch.no_grad():
        dist = ref.encode(x).latent_dist
        ref_sample = dist.sample(generator=torch.Generator().manual_seed(5))
    mean, logvar = ours.encode(x)
    _close(mean, dist.mean)
    _close(logvar, dist.logvar)
    _close(sample_posterior(mean, logvar, torch.Generator().manual_seed(5)), ref_sample)


def test_logvar_is_clamped() -> None:
    _, ours = _pair("0.9.0")
    with torch.no_grad():
        ours.encoder.conv_out.conv.bias[-1] = 100.0  # the shared log-variance channel
    try:
        _, logvar = ours.encode(torch.zeros(1, 3, 1, 32, 32))
        assert logvar.max().item() == 20.0
    finally:
        ours.load_state_dict(_pair("0.9.0")[0].state_dict())


@pytest.mark.parametrize("variant", ["0.9.0", "0.9.1", "0.9.5", "causal-flip"])
def test_decode(variant: str) -> None:
    ref, ours = _pair(variant)
    z, t = _latents((2, 8, 3, 2, 3)), _timestep(variant, 2)
    torch.manual_seed(7)  # diffusers' noise injection draws from the global RNG
    with torch.no_grad():
        expected = ref.decode(z, t).sample
    frames = ours.decode(z, t, generator=torch.Generator().manual_seed(7))
    assert frames.shape == (2, 3, 17, 64, 96)
    _close(frames, expected)


@pytest.mark.parametrize("variant", ["0.9.0", "0.9.1", "0.9.5"])
def test_spatially_tiled_decode(variant: str) -> None:
    ref, ours = _pair(variant)
    z, t = _latents((1, 8, 2, 3, 4)), _timestep(variant, 1)
    ref.enable_tiling(tile_sample_min_height=64, tile_sample_min_width=64, tile_sample_stride_height=32,
                      tile_sample_stride_width=32)
    try:
        torch.manual_seed(11)
        with torch.no_grad():
            expected = ref.decode(z, t).sample
    finally:
        ref.use_tiling = False
    tiling = DecodeTiling(tile_height=64, tile_width=64, stride_height=32, stride_width=32)
    frames = ours.decode(z, t, generator=torch.Generator().manual_seed(11), tiling=tiling)
    _close(frames, expected)
    untiled = ours.decode(z, t, generator=torch.Generator().manual_seed(11))
    assert (frames - untiled).abs().max() > 1e-3  # the tiles really were decoded apart


def _frame_windows_oracle(ref: AutoencoderKLLTXVideo, z: torch.Tensor, t: torch.Tensor | None) -> torch.Tensor:
    """diffusers' _temporal_tiled_decode (16-frame windows, stride 8) from its own pieces, with the one change
    ltx_batch makes: later windows drop their first decoded frame, not their last (which misaligns them)."""
    tiles = []
    for k in range(z.shape[2]):
        tile = ref._decode(z[:, :, k : k + 3], t).sample  # spatially tiled when ref.use_tiling
        tiles.append(tile[:, :, 1:] if k > 0 else tile)
    out = [tiles[0][:, :, :9]]
    for k in range(1, len(tiles)):
        out.append(ref.blend_t(tiles[k - 1], tiles[k], 8)[:, :, :8])
    return torch.cat(out, dim=2)[:, :, : (z.shape[2] - 1) * 8 + 1]


def test_frame_windowed_and_tiled_decode() -> None:
    ref, ours = _pair("0.9.1")
    z, t = _latents((1, 8, 4, 3, 2)), _timestep("0.9.1", 1)
    ref.enable_tiling(tile_sample_min_height=64, tile_sample_min_width=64, tile_sample_stride_height=32,
                      tile_sample_stride_width=32)
    try:
        torch.manual_seed(13)
        with torch.no_grad():
            expected = _frame_windows_oracle(ref, z, t)
    finally:
        ref.use_tiling = False
    tiling = DecodeTiling(temporal=True, tile_height=64, tile_width=64, stride_height=32, stride_width=32,
                          tile_frames=16, stride_frames=8)
    frames = ours.decode(z, t, generator=torch.Generator().manual_seed(13), tiling=tiling)
    assert frames.shape == (1, 3, 25, 96, 64)
    _close(frames, expected)


def test_frame_windows_line_up_with_the_full_decode() -> None:
    # A causal decoder's first window is exact; every later frame must sit nearest the full decode's
    # frame at the same index (diffusers' own windows land one frame late after frame 8).
    _, ours = _pair("causal-flip")
    z, t = _latents((1, 8, 5, 2, 2)), torch.tensor([0.05])
    full = ours.decode(z, t)
    windows = ours.decode(z, t, tiling=DecodeTiling(spatial=False, temporal=True, tile_frames=16, stride_frames=8))
    assert windows.shape == full.shape
    _close(windows[:, :, :10], full[:, :, :10])
    for p in range(10, full.shape[2] - 1):
        err = [(windows[:, :, p] - full[:, :, q]).abs().mean() for q in (p - 1, p, p + 1)]
        assert err[1] < min(err[0], err[2]), p


def test_batch_with_one_generator_per_row_matches_rows_alone() -> None:
    _, ours = _pair("0.9.1")
    z, t = _latents((2, 8, 2, 2, 2)), torch.tensor([0.05, 0.4])
    both = ours.decode(z, t, generator=[torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)])
    for row, seed in ((0, 1), (1, 2)):
        alone = ours.decode(z[row : row + 1], t[row : row + 1], generator=torch.Generator().manual_seed(seed))
        _close(both[row : row + 1], alone)


def test_normalize_latents_match_pipeline() -> None:
    ref, ours = _pair("0.9.5")
    z = _latents((2, 8, 2, 2, 3))
    sf = ref.config.scaling_factor
    _close(ours.normalize_latents(z), LTXPipeline._normalize_latents(z, ref.latents_mean, ref.latents_std, sf))
    _close(ours.denormalize_latents(z), LTXPipeline._denormalize_latents(z, ref.latents_mean, ref.latents_std, sf))
    _close(ours.denormalize_latents(ours.normalize_latents(z)), z)


def test_decode_refuses_missing_inputs() -> None:
    _, ours = _pair("0.9.1")
    z = _latents((1, 8, 2, 2, 2))
    with pytest.raises(ValueError, match="Generator"):
        ours.decode(z, 0.05)
    with pytest.raises(ValueError, match="timestep"):
        ours.decode(z, None, generator=torch.Generator())
    with pytest.raises(ValueError, match="timestep"):
        ours.decode(z, torch.tensor([0.1, 0.2]), generator=torch.Generator())
    with pytest.raises(ValueError, match="expected"):
        ours.encode(torch.zeros(1, 3, 8, 64, 64))


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ConfigError, match="not_a_key"):
        VAEConfig.from_dict({**VARIANTS["0.9.0"], "not_a_key": 1})
    with pytest.raises(ValueError, match="downsample_type"):
        VAEConfig.from_dict({**VARIANTS["0.9.5"], "downsample_type": ("spatial", "bogus", "temporal", "conv")})
    with pytest.raises(ValueError, match="encoder block 0"):
        VAEConfig.from_dict({**VARIANTS["0.9.5"], "downsample_type": ("conv",) * 4})
    with pytest.raises(ValueError, match="spatial_compression_ratio"):
        VAEConfig.from_dict({**VARIANTS["0.9.5"], "spatial_compression_ratio": 64})
    with pytest.raises(ValueError, match="decoder_layers_per_block"):
        VAEConfig.from_dict({**VARIANTS["0.9.1"], "decoder_layers_per_block": (1, 1, 1)})
    with pytest.raises(ValueError, match="stride_height"):
        DecodeTiling(tile_height=64, stride_height=96)
    with pytest.raises(ValueError, match="stride_width=48"):
        _pair("0.9.0")[1].decode(_latents((1, 8, 1, 2, 2)), tiling=DecodeTiling(tile_width=64, stride_width=48))
