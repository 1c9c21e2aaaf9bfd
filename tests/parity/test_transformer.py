"""Parity of ``ltx_batch.models.transformer`` / ``rope`` with diffusers' ``LTXVideoTransformer3DModel``.

A tiny random diffusers model (2 heads x 8 channels: width 16, so ``16 % 6`` exercises the RoPE padding) is
copied into ours with a strict state-dict load; outputs are compared in float32 on CPU over timestep shapes,
mask shapes and both RoPE coordinate sources, batch 2.
"""

from __future__ import annotations

import pytest
import torch

from ltx_batch.models.config import ConfigError
from ltx_batch.models.rope import (
    grid_coords,
    grid_from_latent_coords,
    grid_from_pixel_coords,
    pixel_coords,
    rope_tables,
)
from ltx_batch.models.transformer import LTXVideoTransformer, TransformerConfig, trim_encoder_padding

from .tiny_transformer import transformer_pair

pytest.importorskip("diffusers")
from diffusers import LTXVideoTransformer3DModel  # noqa: E402
from diffusers.models.transformers.transformer_ltx import LTXVideoRotaryPosEmbed  # noqa: E402
from diffusers.pipelines.ltx.pipeline_ltx_condition import LTXConditionPipeline  # noqa: E402

torch.set_num_threads(1)

TINY = dict(
    in_channels=8,
    out_channels=8,
    num_attention_heads=2,
    attention_head_dim=8,
    cross_attention_dim=16,
    num_layers=2,
    caption_channels=16,
)
B, F_LAT, H_LAT, W_LAT, L_TXT = 2, 3, 4, 5, 7
S = F_LAT * H_LAT * W_LAT
FRAME_RATE = 25.0
VAE_T, VAE_S = 8, 32


@pytest.fixture(scope="module")
def models() -> tuple[LTXVideoTransformer3DModel, LTXVideoTransformer]:
    return transformer_pair(TINY)


def _inputs(per_token: bool, padded: bool) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    if per_token:
        # Condition-pipeline style: min(t, (1 - conditioning_mask) * 1000), first frame fully conditioned.
        timestep = torch.full((B, S), 937.5)
        timestep[:, : H_LAT * W_LAT] = 0.0
        timestep[1, -5:] = 421.0
    else:
        timestep = torch.tensor([937.5, 24.0])
    mask = torch.ones(B, L_TXT)
    if padded:
        mask[0, 4:] = 0.0
    return dict(
        hidden_states=torch.randn(B, S, TINY["in_channels"], generator=g),
        encoder_hidden_states=torch.randn(B, L_TXT, TINY["caption_channels"], generator=g),
        timestep=timestep,
        encoder_attention_mask=mask,
    )


def _video_coords() -> torch.Tensor:
    """``video_coords`` exactly as ``LTXConditionPipeline`` builds them (no extra conditioning tokens)."""
    ids = LTXConditionPipeline._prepare_video_ids(B, F_LAT, H_LAT, W_LAT)
    ids = LTXConditionPipeline._scale_video_ids(ids, scale_factor=VAE_S, scale_factor_t=VAE_T, frame_index=0)
    coords = ids.float()
    coords[:, 0] = coords[:, 0] * (1.0 / FRAME_RATE)
    return coords


def _assert_close(ours: torch.Tensor, ref: torch.Tensor) -> None:
    assert ours.shape == ref.shape and ours.dtype == ref.dtype
    tol = 1e-4 * max(1.0, ref.abs().max().item())
    diff = (ours - ref).abs().max().item()
    assert diff <= tol, f"max|diff| {diff:.3g} > {tol:.3g}"


def test_state_dict_keys_identical(models):
    ref, ours = models
    assert set(ours.state_dict()) == set(ref.state_dict())
    for k, v in ref.state_dict().items():
        assert ours.state_dict()[k].shape == v.shape, k


@pytest.mark.parametrize("rope_mode", ["interpolation_scale", "video_coords"])
@pytest.mark.parametrize("padded", [True, False], ids=["padded", "unpadded"])
@pytest.mark.parametrize("per_token", [False, True], ids=["t_per_video", "t_per_token"])
def test_forward_matches_diffusers(models, rope_mode, padded, per_token):
    ref, ours = models
    inp = _inputs(per_token, padded)
    if rope_mode == "interpolation_scale":
        # LTXPipeline: (vae_temporal_ratio / frame_rate, vae_spatial_ratio, vae_spatial_ratio)
        scale = (VAE_T / FRAME_RATE, VAE_S, VAE_S)
        rope_kwargs = dict(num_frames=F_LAT, height=H_LAT, width=W_LAT, rope_interpolation_scale=scale)
        # One table shared by the batch (broadcast), as the sampler builds it.
        grid = grid_from_latent_coords(grid_coords(1, F_LAT, H_LAT, W_LAT), scale)
    else:
        rope_kwargs = dict(video_coords=_video_coords())
        grid = grid_from_pixel_coords(_video_coords())
    rope = rope_tables(grid, ours.config.inner_dim)

    with torch.no_grad():
        expected = ref(**inp, **rope_kwargs, return_dict=False)[0]
        mask = inp["encoder_attention_mask"] if padded else None  # the caller passes None when nothing is padded
        got = ours(inp["hidden_states"], inp["encoder_hidden_states"], inp["timestep"], mask, rope)
        # A full mask passed as a tensor must give the same result as None.
        got_full_mask = ours(
            inp["hidden_states"], inp["encoder_hidden_states"], inp["timestep"], inp["encoder_attention_mask"], rope
        )
    _assert_close(got, expected)
    _assert_close(got_full_mask, expected)


def test_trimmed_padding_matches_diffusers(models):
    ref, ours = models
    inp = _inputs(per_token=False, padded=True)
    inp["encoder_attention_mask"][:, 5:] = 0.0  # columns 5, 6 unused by every row
    scale = (VAE_T / FRAME_RATE, VAE_S, VAE_S)
    rope = rope_tables(grid_from_latent_coords(grid_coords(B, F_LAT, H_LAT, W_LAT), scale), ours.config.inner_dim)
    context, mask = trim_encoder_padding(inp["encoder_hidden_states"], inp["encoder_attention_mask"])
    assert context.shape[1] == 5 and mask is not None and mask.shape == (B, 5)
    with torch.no_grad():
        expected = ref(
            **inp, num_frames=F_LAT, height=H_LAT, width=W_LAT, rope_interpolation_scale=scale, return_dict=False
        )[0]
        got = ours(inp["hidden_states"], context, inp["timestep"], mask, rope)
    _assert_close(got, expected)

    full = torch.ones(B, L_TXT)
    full[:, 6:] = 0.0
    context, mask = trim_encoder_padding(inp["encoder_hidden_states"], full)
    assert context.shape[1] == 6 and mask is None

    full[1] = 0.0
    with pytest.raises(ValueError, match="row with no token"):
        trim_encoder_padding(inp["encoder_hidden_states"], full)


def test_timestep_shape_checked(models):
    _, ours = models
    inp = _inputs(per_token=False, padded=False)
    rope = rope_tables(grid_from_latent_coords(grid_coords(1, F_LAT, H_LAT, W_LAT), None), ours.config.inner_dim)
    with pytest.raises(ValueError, match="timestep shape"):
        ours(inp["hidden_states"], inp["encoder_hidden_states"], torch.zeros(B, S - 1), None, rope)


def test_bfloat16_close_to_diffusers(models):
    ref, ours = models
    ref_bf16 = LTXVideoTransformer3DModel(**TINY).eval()
    ref_bf16.load_state_dict(ref.state_dict())
    ref_bf16.to(torch.bfloat16)
    ours_bf16 = LTXVideoTransformer(ours.config).eval()
    ours_bf16.load_state_dict(ours.state_dict())
    ours_bf16.to(torch.bfloat16)
    inp = _inputs(per_token=True, padded=True)
    coords = _video_coords()
    with torch.no_grad():
        expected = ref_bf16(
            inp["hidden_states"].bfloat16(),
            inp["encoder_hidden_states"].bfloat16(),
            inp["timestep"],
            inp["encoder_attention_mask"],
            video_coords=coords,
            return_dict=False,
        )[0]
        got = ours_bf16(
            inp["hidden_states"].bfloat16(),
            inp["encoder_hidden_states"].bfloat16(),
            inp["timestep"],
            inp["encoder_attention_mask"],
            rope_tables(grid_from_pixel_coords(coords), ours.config.inner_dim),
        )
    assert got.dtype == torch.bfloat16
    diff = (got.float() - expected.float()).abs().max().item()
    assert diff <= 2e-2 * max(1.0, expected.float().abs().max().item()), diff


@pytest.mark.parametrize("dim", [16, 18, 2048])
@pytest.mark.parametrize("patch", [1, 2])
def test_rope_tables_bitwise_equal(dim, patch):
    rope = LTXVideoRotaryPosEmbed(dim=dim, patch_size=patch, patch_size_t=patch)
    x = torch.zeros(B, S, dim)
    scale = (VAE_T / 24.0, VAE_S, VAE_S)
    ref_cos, ref_sin = rope(x, F_LAT, H_LAT, W_LAT, rope_interpolation_scale=scale)
    grid = grid_from_latent_coords(grid_coords(B, F_LAT, H_LAT, W_LAT), scale, patch_size=patch, patch_size_t=patch)
    cos, sin = rope_tables(grid, dim)
    assert torch.equal(cos, ref_cos) and torch.equal(sin, ref_sin)

    # Per-row frame-rate scale as a tensor gives the same tables as the Python float.
    t_scale = torch.full((B,), VAE_T / 24.0)
    grid_t = grid_from_latent_coords(
        grid_coords(B, F_LAT, H_LAT, W_LAT), (t_scale, VAE_S, VAE_S), patch_size=patch, patch_size_t=patch
    )
    cos_t, sin_t = rope_tables(grid_t, dim)
    assert torch.equal(cos_t, ref_cos) and torch.equal(sin_t, ref_sin)

    coords = _video_coords()
    ref_cos, ref_sin = rope(x, video_coords=coords)
    cos, sin = rope_tables(grid_from_pixel_coords(coords), dim)
    assert torch.equal(cos, ref_cos) and torch.equal(sin, ref_sin)


@pytest.mark.parametrize("frame_index", [0, 9])
def test_pixel_coords_match_condition_pipeline(frame_index):
    ids = LTXConditionPipeline._prepare_video_ids(B, F_LAT, H_LAT, W_LAT)
    ids = LTXConditionPipeline._scale_video_ids(ids, scale_factor=VAE_S, scale_factor_t=VAE_T, frame_index=frame_index)
    expected = ids.float()
    expected[:, 0] = expected[:, 0] * (1.0 / FRAME_RATE)
    got = pixel_coords(
        grid_coords(B, F_LAT, H_LAT, W_LAT),
        spatial_ratio=VAE_S,
        temporal_ratio=VAE_T,
        frame_rate=FRAME_RATE,
        frame_index=frame_index,
    )
    assert torch.equal(got, expected)


def test_config_invariants():
    assert TransformerConfig() == TransformerConfig.from_dict({})
    with pytest.raises(ConfigError, match="caption_dim"):
        TransformerConfig.from_dict({"caption_dim": 4096})
    with pytest.raises(ValueError, match="qk_norm"):
        TransformerConfig(qk_norm="rms_norm")
    with pytest.raises(ValueError, match="activation_fn"):
        TransformerConfig(activation_fn="geglu")
    with pytest.raises(ValueError, match="cross_attention_dim"):
        TransformerConfig(cross_attention_dim=4096)
    with pytest.raises(ValueError, match="num_layers"):
        TransformerConfig(num_layers=0)
