"""The latent upsampler of the 0.9.7/0.9.8 multi-scale recipes (``ltxv-spatial-upscaler-*``).

It works in the VAE's latent space: (B, C, F, H, W) denormalised latents in, (B, C, F, 2H, 2W) out for the
spatial model. Parameter names follow diffusers' ``LTXLatentUpsamplerModel`` state dict, so a diffusers
folder loads with an identity key map.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .config import config_from_dict


@dataclass(frozen=True, kw_only=True, slots=True)
class UpsamplerConfig:
    in_channels: int = 128  # latent channels of the VAE it pairs with
    mid_channels: int = 512  # width of the residual trunk
    num_blocks_per_stage: int = 4  # residual blocks before and after the pixel shuffle
    dims: int = 3  # 3: Conv3d trunk (released models); 2: per-frame Conv2d trunk
    spatial_upsample: bool = True  # 2x height and width
    temporal_upsample: bool = False  # 2x frames (the first output frame is dropped: causal)

    def __post_init__(self) -> None:
        if self.dims not in (2, 3):
            raise ValueError(f"UpsamplerConfig.dims must be 2 or 3, got {self.dims}")
        if not (self.spatial_upsample or self.temporal_upsample):
            raise ValueError("UpsamplerConfig: spatial_upsample or temporal_upsample must be true")
        if self.mid_channels % 32:
            raise ValueError(f"UpsamplerConfig.mid_channels must be a multiple of 32 (GroupNorm), got {self.mid_channels}")

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "UpsamplerConfig":
        return config_from_dict(cls, raw, where="latent upsampler config")


def _conv(dims: int, cin: int, cout: int) -> nn.Module:
    return (nn.Conv2d if dims == 2 else nn.Conv3d)(cin, cout, kernel_size=3, padding=1)


class _ResBlock(nn.Module):
    def __init__(self, channels: int, dims: int):
        super().__init__()
        self.conv1 = _conv(dims, channels, channels)
        self.norm1 = nn.GroupNorm(32, channels)
        self.conv2 = _conv(dims, channels, channels)
        self.norm2 = nn.GroupNorm(32, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = nn.functional.silu(self.norm1(self.conv1(x)))
        h = self.norm2(self.conv2(h))
        return nn.functional.silu(h + x)


class _PixelShuffle(nn.Module):
    """Depth-to-space over the trailing 1, 2 or 3 axes (factor 2 each), channels-first."""

    def __init__(self, axes: int):
        super().__init__()
        self.axes = axes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.axes == 3:  # (B, C*8, F, H, W) -> (B, C, 2F, 2H, 2W)
            x = x.unflatten(1, (-1, 2, 2, 2)).permute(0, 1, 5, 2, 6, 3, 7, 4)
            return x.flatten(6, 7).flatten(4, 5).flatten(2, 3)
        if self.axes == 2:  # (N, C*4, H, W) -> (N, C, 2H, 2W)
            return nn.functional.pixel_shuffle(x, 2)
        # (B, C*2, F, H, W) -> (B, C, 2F, H, W)
        return x.unflatten(1, (-1, 2)).permute(0, 1, 3, 2, 4, 5).flatten(2, 3)


class LatentUpsampler(nn.Module):
    def __init__(self, config: UpsamplerConfig):
        super().__init__()
        self.config = config
        c, mid, dims = config.in_channels, config.mid_channels, config.dims
        self.initial_conv = _conv(dims, c, mid)
        self.initial_norm = nn.GroupNorm(32, mid)
        self.res_blocks = nn.ModuleList(_ResBlock(mid, dims) for _ in range(config.num_blocks_per_stage))
        if config.spatial_upsample and config.temporal_upsample:
            self.upsampler = nn.Sequential(nn.Conv3d(mid, 8 * mid, 3, padding=1), _PixelShuffle(3))
        elif config.spatial_upsample:
            self.upsampler = nn.Sequential(nn.Conv2d(mid, 4 * mid, 3, padding=1), _PixelShuffle(2))
        else:
            self.upsampler = nn.Sequential(nn.Conv3d(mid, 2 * mid, 3, padding=1), _PixelShuffle(1))
        self.post_upsample_res_blocks = nn.ModuleList(
            _ResBlock(mid, dims) for _ in range(config.num_blocks_per_stage)
        )
        self.final_conv = _conv(dims, mid, c)

    def _trunk(self, x: torch.Tensor, blocks: nn.ModuleList) -> torch.Tensor:
        for block in blocks:
            x = block(x)
        return x

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        b = latents.shape[0]
        cfg = self.config
        if cfg.dims == 2:
            x = latents.transpose(1, 2).flatten(0, 1)  # (B, C, F, H, W) -> (B*F, C, H, W)
            x = nn.functional.silu(self.initial_norm(self.initial_conv(x)))
            x = self._trunk(x, self.res_blocks)
            x = self.upsampler(x)
            x = self._trunk(x, self.post_upsample_res_blocks)
            x = self.final_conv(x)
            return x.unflatten(0, (b, -1)).transpose(1, 2)  # (B*F, C, H, W) -> (B, C, F, H, W)

        x = nn.functional.silu(self.initial_norm(self.initial_conv(latents)))
        x = self._trunk(x, self.res_blocks)
        if cfg.temporal_upsample:
            x = self.upsampler(x)[:, :, 1:]  # the first frame is causal: it has no predecessor to split from
        else:
            x = x.transpose(1, 2).flatten(0, 1)  # 2D conv per frame: (B, C, F, H, W) -> (B*F, C, H, W)
            x = self.upsampler(x)
            x = x.unflatten(0, (b, -1)).transpose(1, 2)
        x = self._trunk(x, self.post_upsample_res_blocks)
        return self.final_conv(x)
