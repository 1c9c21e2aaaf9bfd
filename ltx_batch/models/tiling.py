"""Tiled VAE decode settings: a plain dataclass the job spec parses, apart from the VAE so reading a job
does not import torch."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True, slots=True)
class DecodeTiling:
    """Tiled decode to bound memory: the tiles, order and linear blending of diffusers' ``enable_tiling``
    (``tile_sample_min_*`` = ``tile_*``, ``tile_sample_stride_*`` = ``stride_*``), in output pixels/frames.

    ``temporal`` is diffusers' ``use_framewise_decoding`` (overlapping windows of latent frames, each
    spatially tiled when ``spatial`` is set too) with its frame alignment fixed, see ``_decode_frame_windows``.
    Sizes must be multiples of the compression ratios (32 pixels, 8 frames).
    """

    spatial: bool = True
    temporal: bool = False
    tile_height: int = 512
    tile_width: int = 512
    tile_frames: int = 16
    stride_height: int = 448
    stride_width: int = 448
    stride_frames: int = 8

    def __post_init__(self) -> None:
        for axis in ("height", "width", "frames"):
            tile, stride = getattr(self, f"tile_{axis}"), getattr(self, f"stride_{axis}")
            if not 0 < stride <= tile:
                raise ValueError(f"DecodeTiling: need 0 < stride_{axis} <= tile_{axis}, got {stride} and {tile}")
