"""The LTX-Video causal video VAE (every release: 0.9.0, 0.9.1, 0.9.5 and later).

Contract:
- ``VAEConfig``: the fields of diffusers' ``AutoencoderKLLTXVideo`` ``config.json``, with its defaults (a
  published config may omit keys). Unknown keys and unbuildable architectures are a ``ValueError`` naming
  the field.
- ``VideoVAE``: parameter and buffer names equal diffusers' state-dict keys (identity key map, strict load).
  ``encode(x)`` takes ``(B, 3, F, H, W)`` in [-1, 1] with ``F = 1 + k*temporal_ratio`` and H, W multiples of
  the spatial ratio, and returns the posterior ``(mean, logvar)``, each ``(B, L, F', H', W')``;
  ``decode(z, timestep, generator, tiling)`` returns frames ``(B, 3, F, H, W)`` (the decoder output,
  nominally [-1, 1], not clamped). ``normalize_latents`` / ``denormalize_latents`` map between VAE
  latents and the transformer's latent space as diffusers' pipelines do.
- ``sample_posterior(mean, logvar, generator)`` draws exactly as diffusers'
  ``DiagonalGaussianDistribution.sample`` with the same generator.
- Decode randomness (0.9.1's noise injection) comes only from the ``generator`` argument.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ltx_batch.models.config import config_from_dict
from ltx_batch.models.tiling import DecodeTiling
from ltx_batch.models.vae_blocks import (
    DOWNSAMPLE_STRIDES,
    LEGACY_DOWN,
    CausalConv3d,
    DownBlock3d,
    Generators,
    MidBlock3d,
    TimestepEmbedder,
    UpBlock3d,
    decoder_plan,
    encoder_plan,
    host_to_device,
    rms_norm_channels,
)

_LOGVAR_RANGE = (-30.0, 20.0)  # diffusers' DiagonalGaussianDistribution clamp


@dataclass(frozen=True, kw_only=True, slots=True)
class VAEConfig:
    in_channels: int = 3  # video channels in
    out_channels: int = 3  # video channels out
    latent_channels: int = 128  # L, channels of the latent video
    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)  # encoder widths (conv_in, then per block)
    down_block_types: tuple[str, ...] = (LEGACY_DOWN,) * 4  # per encoder block; last one picks the layout
    decoder_block_out_channels: tuple[int, ...] = (128, 256, 512, 512)  # decoder widths, finest first
    layers_per_block: tuple[int, ...] = (4, 3, 3, 3, 4)  # encoder resnets per block; last = mid block
    decoder_layers_per_block: tuple[int, ...] = (4, 3, 3, 3, 4)  # decoder, finest first; last = mid block
    spatio_temporal_scaling: tuple[bool, ...] = (True, True, True, False)  # encoder block downsamples
    decoder_spatio_temporal_scaling: tuple[bool, ...] = (True, True, True, False)  # decoder block upsamples
    decoder_inject_noise: tuple[bool, ...] = (False,) * 5  # per decoder block, finest first; last = mid
    downsample_type: tuple[str, ...] = ("conv",) * 4  # 0.9.5 blocks: conv|spatial|temporal|spatiotemporal
    upsample_residual: tuple[bool, ...] = (False,) * 4  # decoder upsampler adds its shuffled input
    upsample_factor: tuple[int, ...] = (1,) * 4  # decoder upsampler divides the width by this
    timestep_conditioning: bool = False  # decoder takes a decode timestep (0.9.1+)
    patch_size: int = 4  # spatial patchify of the pixels before the encoder
    patch_size_t: int = 1  # temporal patchify; diffusers' model only works with 1
    resnet_norm_eps: float = 1e-6  # eps of the shortcut LayerNorm
    scaling_factor: float = 1.0  # latent scale used by normalize/denormalize
    encoder_causal: bool = True  # encoder pads time with the first frame only
    decoder_causal: bool = False  # decoder pads time with the first frame only
    spatial_compression_ratio: int | None = None  # pixels per latent pixel; None = from the blocks
    temporal_compression_ratio: int | None = None  # frames per latent frame (after the first); None = from blocks

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VAEConfig:
        return config_from_dict(cls, d, where="VAE config")

    def __post_init__(self) -> None:
        for name in ("in_channels", "out_channels", "latent_channels", "patch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"VAE config: {name} must be >= 1, got {getattr(self, name)}")
        if self.patch_size_t != 1:
            raise ValueError(f"VAE config: patch_size_t must be 1 (as in every LTX-Video VAE), got {self.patch_size_t}")
        if not self.resnet_norm_eps > 0 or not self.scaling_factor > 0:
            raise ValueError("VAE config: resnet_norm_eps and scaling_factor must be > 0")
        spatial, temporal = self.ratios()
        ups = sum(s.upsample for s in decoder_plan(self)[0])
        if (spatial // self.patch_size, temporal) != (2**ups, 2**ups):
            raise ValueError(
                f"VAE config: the encoder downsamples (space, time) by {(spatial // self.patch_size, temporal)} but "
                f"the decoder upsamples by {(2**ups, 2**ups)}; check spatio_temporal_scaling, "
                "decoder_spatio_temporal_scaling and downsample_type"
            )
        for name, true in (("spatial_compression_ratio", spatial), ("temporal_compression_ratio", temporal)):
            given = getattr(self, name)
            if given is not None and given != true:
                raise ValueError(f"VAE config: {name} is {given} but the blocks compress by {true}")

    def ratios(self) -> tuple[int, int]:
        """(spatial, temporal) compression from the blocks. (diffusers' fallback when the config omits them,
        ``patch_size * 2**sum(spatio_temporal_scaling)``, is wrong for 0.9.5 blocks; published configs state them.)"""
        stages = encoder_plan(self)[0]
        s = math.prod(DOWNSAMPLE_STRIDES[st.downsample][1] for st in stages if st.downsample)
        t = math.prod(DOWNSAMPLE_STRIDES[st.downsample][0] for st in stages if st.downsample)
        return self.patch_size * s, t


class Encoder3d(nn.Module):
    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        stages, mid_ch, mid_layers = encoder_plan(cfg)
        eps, causal = cfg.resnet_norm_eps, cfg.encoder_causal
        self.patch_size = cfg.patch_size
        self.conv_in = CausalConv3d(cfg.in_channels * cfg.patch_size**2, cfg.block_out_channels[0], 3, causal=causal)
        self.down_blocks = nn.ModuleList(
            DownBlock3d(s.cin, s.cout, num_layers=s.layers, eps=eps, causal=causal, downsample=s.downsample,
                        out_resnet=s.out_resnet)
            for s in stages
        )
        self.mid_block = MidBlock3d(mid_ch, num_layers=mid_layers, eps=eps, causal=causal)
        self.conv_out = CausalConv3d(mid_ch, cfg.latent_channels + 1, 3, causal=causal)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, F, H, W) -> (B, L + 1, F', H', W'): L means and one log-variance shared by all channels."""
        b, c, f, h, w = x.shape
        p = self.patch_size
        # (B, C, F, H, W) -> (B, C*p*p, F, H/p, W/p), channels ordered (c, pw, ph) as diffusers' patchify
        x = x.reshape(b, c, f, h // p, p, w // p, p).permute(0, 1, 6, 4, 2, 3, 5)
        x = x.reshape(b, c * p * p, f, h // p, w // p)
        x = self.conv_in(x)
        for block in self.down_blocks:
            x = block(x)
        x = self.mid_block(x)
        return self.conv_out(nn.functional.silu(rms_norm_channels(x), inplace=True))


class Decoder3d(nn.Module):
    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        stages, mid_ch, mid_layers, mid_noise = decoder_plan(cfg)
        eps, causal, tc = cfg.resnet_norm_eps, cfg.decoder_causal, cfg.timestep_conditioning
        self.patch_size = cfg.patch_size
        self.injects_noise = mid_noise or any(s.inject_noise for s in stages)
        self.conv_in = CausalConv3d(cfg.latent_channels, mid_ch, 3, causal=causal)
        self.mid_block = MidBlock3d(mid_ch, num_layers=mid_layers, eps=eps, causal=causal, inject_noise=mid_noise,
                                    timestep_conditioning=tc)
        self.up_blocks = nn.ModuleList(
            UpBlock3d(s.cin, s.cout, num_layers=s.layers, eps=eps, causal=causal, inject_noise=s.inject_noise,
                      timestep_conditioning=tc, upsample=s.upsample, upsample_residual=s.residual,
                      upsample_factor=s.factor)
            for s in stages
        )
        out_ch = stages[-1].cout
        self.conv_out = CausalConv3d(out_ch, cfg.out_channels * cfg.patch_size**2, 3, causal=causal)
        self.timestep_scale_multiplier: nn.Parameter | None = None
        self.time_embedder: TimestepEmbedder | None = None
        self.scale_shift_table: nn.Parameter | None = None
        if tc:
            self.timestep_scale_multiplier = nn.Parameter(torch.tensor(1000.0))
            self.time_embedder = TimestepEmbedder(out_ch * 2)
            self.scale_shift_table = nn.Parameter(torch.randn(2, out_ch) / out_ch**0.5)

    def forward(
        self, z: torch.Tensor, t: torch.Tensor | None = None, generator: Generators | None = None
    ) -> torch.Tensor:
        """(B, L, F, H, W) latents, (B,) decode timesteps in [0, 1] -> (B, C, 1 + 8(F-1), H*r, W*r) frames."""
        h = self.conv_in(z)
        if self.timestep_scale_multiplier is not None:
            t = t * self.timestep_scale_multiplier  # the embedders were trained on timesteps in [0, 1000]
        h = self.mid_block(h, t, generator)
        for block in self.up_blocks:
            h = block(h, t, generator)
        buf, frames = self.conv_out.padded_input(h)
        rms_norm_channels(h, out=frames)
        if self.time_embedder is not None:
            # (B, 2*C) -> shift, scale, each (B, C, 1, 1, 1)
            ada = self.time_embedder(t, h.dtype).unflatten(1, (2, -1))[..., None, None, None]
            shift, scale = (ada + self.scale_shift_table[None, :, :, None, None, None]).unbind(1)
            torch.addcmul(shift, frames, 1 + scale, out=frames)
        nn.functional.silu(frames, inplace=True)
        h = self.conv_out.conv_padded(buf)
        b, _, f, hh, ww = h.shape
        p = self.patch_size
        # (B, C*p*p, F, H, W) -> (B, C, F, H*p, W*p), channels ordered (c, pw, ph) as in the encoder
        h = h.reshape(b, -1, p, p, f, hh, ww).permute(0, 1, 4, 5, 3, 6, 2)
        return h.reshape(b, -1, f, hh * p, ww * p)


def draw_normal(
    shape: tuple[int, ...], generator: Generators, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """Standard normal noise drawn as diffusers' ``randn_tensor``: on the generator's device, then moved;
    with a list of generators, row i comes from generator i."""
    if isinstance(generator, torch.Generator):
        return host_to_device(torch.randn(shape, generator=generator, device=generator.device, dtype=dtype), device)
    if len(generator) != shape[0]:
        raise ValueError(f"got {len(generator)} generators for a batch of {shape[0]}")
    rows = [torch.randn((1, *shape[1:]), generator=g, device=g.device, dtype=dtype) for g in generator]
    return host_to_device(torch.cat(rows), device)


def sample_posterior(mean: torch.Tensor, logvar: torch.Tensor, generator: Generators) -> torch.Tensor:
    """A draw from N(mean, exp(logvar)), the same as diffusers' ``latent_dist.sample(generator)``."""
    if generator is None:
        raise ValueError("sample_posterior needs a torch.Generator")
    eps = draw_normal(tuple(mean.shape), generator, mean.device, mean.dtype)
    return mean + torch.exp(0.5 * logvar) * eps


def _blend_into(a: torch.Tensor, b: torch.Tensor, extent: int, dim: int) -> None:
    """Overwrite the first ``extent`` slices of ``b`` along ``dim`` with a linear ramp from the last slices
    of ``a`` to ``b`` (diffusers' blend_v / blend_h / blend_t, vectorised)."""
    extent = min(a.shape[dim], b.shape[dim], extent)
    if extent <= 0:
        return
    # diffusers' Python-float weights y / extent, made on b's device (a host copy would wait for the GPU)
    w = torch.arange(extent, dtype=torch.float64, device=b.device) / extent
    shape = [1] * b.ndim
    shape[dim] = extent
    wb = w.to(b.dtype).view(shape)
    wa = (1 - w).to(b.dtype).view(shape)
    head = b.narrow(dim, 0, extent)
    head.copy_(a.narrow(dim, a.shape[dim] - extent, extent) * wa + head * wb)


class VideoVAE(nn.Module):
    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder3d(config)
        self.decoder = Decoder3d(config)
        self.register_buffer("latents_mean", torch.zeros(config.latent_channels))
        self.register_buffer("latents_std", torch.ones(config.latent_channels))
        self.spatial_compression_ratio, self.temporal_compression_ratio = config.ratios()

    @property
    def dtype(self) -> torch.dtype:
        return self.latents_mean.dtype

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, F, H, W) video in [-1, 1] -> posterior (mean, logvar), each (B, L, F', H', W')."""
        rs, rt = self.spatial_compression_ratio, self.temporal_compression_ratio
        bad_shape = x.ndim != 5 or x.shape[1] != self.config.in_channels
        if bad_shape or (x.shape[2] - 1) % rt or x.shape[3] % rs or x.shape[4] % rs:
            raise ValueError(f"VAE encode: expected (B, {self.config.in_channels}, 1 + {rt}k, H, W) with H and W "
                             f"multiples of {rs}, got {tuple(x.shape)}")
        h = self.encoder(x)
        latent = self.config.latent_channels
        mean = h[:, :latent]
        # One predicted log-variance channel serves every latent channel (diffusers repeats it).
        logvar = h[:, latent:].clamp(*_LOGVAR_RANGE).expand_as(mean)
        return mean, logvar

    def normalize_latents(self, z: torch.Tensor) -> torch.Tensor:
        """VAE latents -> the transformer's latent space (diffusers' ``_normalize_latents``)."""
        mean = self.latents_mean.view(1, -1, 1, 1, 1).to(z.device, z.dtype)
        std = self.latents_std.view(1, -1, 1, 1, 1).to(z.device, z.dtype)
        return (z - mean) * self.config.scaling_factor / std

    def denormalize_latents(self, z: torch.Tensor) -> torch.Tensor:
        """The transformer's latent space -> VAE latents (diffusers' ``_denormalize_latents``)."""
        mean = self.latents_mean.view(1, -1, 1, 1, 1).to(z.device, z.dtype)
        std = self.latents_std.view(1, -1, 1, 1, 1).to(z.device, z.dtype)
        return z * std / self.config.scaling_factor + mean

    @torch.no_grad()
    def decode(
        self,
        z: torch.Tensor,
        timestep: torch.Tensor | float | None = None,
        generator: Generators | None = None,
        tiling: DecodeTiling | None = None,
    ) -> torch.Tensor:
        """(B, L, F, H, W) VAE latents (denormalized) -> (B, C, 1 + rt(F-1), rs H, rs W) frames.

        ``timestep``: the decode timestep, a float or (B,) tensor; required by timestep-conditioned decoders
        (0.9.1+) and ignored by 0.9.0's, as diffusers does. ``generator``: a torch.Generator (or one per row)
        for the decoder's noise injection; required when the decoder injects noise, ignored otherwise.
        """
        b = z.shape[0]
        t = None
        if self.config.timestep_conditioning:
            if timestep is None:
                raise ValueError("VAE decode: this decoder is timestep-conditioned; pass the decode timestep")
            t = torch.as_tensor(timestep, dtype=z.dtype, device=z.device)
            t = t.expand(b) if t.ndim == 0 else t
            if t.shape != (b,):
                raise ValueError(f"VAE decode: timestep must be a float or shape ({b},), got {tuple(t.shape)}")
        gen = None
        if self.decoder.injects_noise:
            if generator is None:
                raise ValueError("VAE decode: this decoder injects noise; pass a torch.Generator")
            gen = generator
        if tiling is not None:
            rs, rt = self.spatial_compression_ratio, self.temporal_compression_ratio
            sizes = {"tile_height": rs, "tile_width": rs, "stride_height": rs, "stride_width": rs,
                     "tile_frames": rt, "stride_frames": rt}
            bad = [f"{k}={getattr(tiling, k)}" for k, r in sizes.items() if getattr(tiling, k) % r]
            if bad:
                raise ValueError(f"DecodeTiling: {', '.join(bad)} not multiples of the compression ratios ({rs}, {rt})")
            if tiling.temporal and z.shape[2] > tiling.tile_frames // rt:
                return self._decode_frame_windows(z, t, gen, tiling)
        return self._decode_spatial(z, t, gen, tiling)

    def _decode_spatial(
        self, z: torch.Tensor, t: torch.Tensor | None, gen: Generators | None, tiling: DecodeTiling | None
    ) -> torch.Tensor:
        r = self.spatial_compression_ratio
        _, _, _, height, width = z.shape
        if tiling is None or not tiling.spatial:
            return self.decoder(z, t, gen)
        tile_h, tile_w = tiling.tile_height // r, tiling.tile_width // r
        step_h, step_w = tiling.stride_height // r, tiling.stride_width // r
        if height <= tile_h and width <= tile_w:
            return self.decoder(z, t, gen)
        # Decode every tile first, in row-major order, so noise draws follow diffusers' order.
        rows = [
            [self.decoder(z[:, :, :, i : i + tile_h, j : j + tile_w], t, gen) for j in range(0, width, step_w)]
            for i in range(0, height, step_h)
        ]
        out_rows = []
        for i, row in enumerate(rows):
            for j, tile in enumerate(row):
                if i > 0:
                    _blend_into(rows[i - 1][j], tile, tiling.tile_height - tiling.stride_height, dim=3)
                if j > 0:
                    _blend_into(row[j - 1], tile, tiling.tile_width - tiling.stride_width, dim=4)
            crops = [tile[..., : tiling.stride_height, : tiling.stride_width] for tile in row]
            out_rows.append(torch.cat(crops, dim=4))
        return torch.cat(out_rows, dim=3)[..., : height * r, : width * r]

    def _decode_frame_windows(
        self, z: torch.Tensor, t: torch.Tensor | None, gen: Generators | None, tiling: DecodeTiling
    ) -> torch.Tensor:
        # diffusers' _temporal_tiled_decode with one fix. A window starting at latent frame s decodes to
        # output frames 8s .. 8s + 8*win, its first frame from a latent decoded as if it were frame 0.
        # diffusers drops each later window's *last* frame, which misaligns the blend with the first window
        # and shifts every frame after the first window by one (duplicating frame 8, losing the last one).
        # Dropping the *first* frame instead (as its _temporal_tiled_encode does) lines windows up exactly
        # and discards the frame that saw no past context. Not used by any diffusers pipeline.
        rt = self.temporal_compression_ratio
        n_frames = z.shape[2]
        win, step = tiling.tile_frames // rt, tiling.stride_frames // rt
        tiles = []
        for k in range(0, n_frames - 1, step):  # a window of only the last latent would keep no frame
            tile = self._decode_spatial(z[:, :, k : k + win + 1], t, gen, tiling)
            tiles.append(tile[:, :, 1:] if k > 0 else tile)
        out = [tiles[0][:, :, : tiling.stride_frames + 1]]
        for k in range(1, len(tiles)):
            _blend_into(tiles[k - 1], tiles[k], tiling.tile_frames - tiling.stride_frames, dim=2)
            out.append(tiles[k][:, :, : tiling.stride_frames])
        return torch.cat(out, dim=2)[:, :, : (n_frames - 1) * rt + 1]
