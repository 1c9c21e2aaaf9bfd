"""Latent upsampler against diffusers' LTXLatentUpsamplerModel on tiny random weights."""

import pytest
import torch

from ltx_batch.models.upsampler import LatentUpsampler, UpsamplerConfig

diffusers_upsampler = pytest.importorskip("diffusers.pipelines.ltx.modeling_latent_upsampler")


@pytest.mark.parametrize(
    "cfg",
    [
        dict(in_channels=8, mid_channels=32, num_blocks_per_stage=2, dims=3, spatial_upsample=True),
        dict(in_channels=8, mid_channels=32, num_blocks_per_stage=1, dims=2, spatial_upsample=True),
        dict(in_channels=8, mid_channels=32, num_blocks_per_stage=1, dims=3, spatial_upsample=True,
             temporal_upsample=True),
        dict(in_channels=8, mid_channels=32, num_blocks_per_stage=1, dims=3, spatial_upsample=False,
             temporal_upsample=True),
    ],
)
def test_upsampler_matches_diffusers(cfg):
    torch.manual_seed(0)
    ref = diffusers_upsampler.LTXLatentUpsamplerModel(**cfg).eval()
    with torch.no_grad():  # GroupNorm affine params start at 1/0: randomise so they matter
        for name, p in ref.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    ours = LatentUpsampler(UpsamplerConfig.from_dict(cfg)).eval()
    assert set(ours.state_dict()) == set(ref.state_dict())
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 8, 3, 4, 6)
    with torch.no_grad():
        want, got = ref(x), ours(x)
    assert got.shape == want.shape
    assert (got - want).abs().max() <= 1e-4 * max(1.0, want.abs().max().item())


def test_upsampler_config_rejects_unknown_key():
    with pytest.raises(ValueError, match="mystery"):
        UpsamplerConfig.from_dict({"in_channels": 8, "mystery": 1})
