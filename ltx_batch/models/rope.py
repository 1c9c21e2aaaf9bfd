"""3D rotary position embedding (RoPE) for LTX-Video tokens.

Contract:
- Token order is (frames, height, width), frames slowest, as the latents are packed
  (``(B, C, F, H, W) -> (B, F*H*W, C)``).
- Coordinates are ``(B, 3, S)`` float32 tensors (axis 1 = frame, row, column). Two sources exist, mirroring the
  two diffusers pipelines:
  * latent indices from ``grid_coords`` scaled by ``grid_from_latent_coords`` with an interpolation scale
    ``(vae_temporal_ratio / frame_rate, vae_spatial_ratio, vae_spatial_ratio)`` (``LTXPipeline``);
  * pixel-space coordinates from ``pixel_coords`` (``LTXConditionPipeline``'s ``video_coords``), turned into a
    grid by ``grid_from_pixel_coords``.
  Both end as a "fractional grid": coordinates divided by the training base size (20 frames, 2048 x 2048 px).
- ``rope_tables(grid, dim)`` -> ``(cos, sin)``, each ``(B, S, dim)`` float32, ``dim`` = the attention inner dim
  (RoPE is applied across all heads at once, before the head split). Build them once per shape and pass them
  to every transformer forward; diffusers rebuilds them on every call. ``B`` may be 1 to share one table
  across a batch whose rows have the same coordinates (CFG pairs, same-size videos): ``apply_rope`` broadcasts.
- ``apply_rope(x, cos, sin)`` rotates interleaved channel pairs ``(x[2i], x[2i+1])`` in float32 and casts back.
  The transformer uses the same rotation as one complex multiply: ``rope_phasors(cos, sin)`` once per sampling
  pass (the sampler passes them in; given tables, the forward builds them), then ``rotate(x, phasors)`` per
  q/k (one pass instead of five; same values to float32 rounding). Under ``torch.compile`` ``rotate`` spells
  the multiply out in real arithmetic (inductor generates no code for complex operators), reading the same
  phasors.

Numerics follow diffusers 0.42 (``LTXVideoRotaryPosEmbed``, ``apply_rotary_emb``) operation by operation, so the
tables agree bit for bit on the same device.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

# Training base size the coordinates are normalised by (frames, height px, width px).
BASE_NUM_FRAMES = 20
BASE_HEIGHT = 2048
BASE_WIDTH = 2048


def grid_coords(
    batch: int, num_frames: int, height: int, width: int, device: torch.device | str | None = None
) -> Tensor:
    """Latent index coordinates of every token, ``(batch, 3, num_frames*height*width)`` float32."""
    axes = [torch.arange(n, dtype=torch.float32, device=device) for n in (num_frames, height, width)]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=0)  # (3, F, H, W)
    # (3, F, H, W) -> (B, 3, F*H*W)
    return grid.flatten(1).unsqueeze(0).expand(batch, -1, -1).contiguous()


def _per_row(value: float | Tensor, like: Tensor) -> float | Tensor:
    """A Python float stays a scalar; a tensor (scalar or one value per batch row) becomes ``(B or 1, 1)``.

    PyTorch rounds a Python scalar to the tensor's float32 before multiplying, so a float32 tensor of the same
    value gives identical results; per-row values let one batch mix frame rates.
    """
    if isinstance(value, Tensor):
        return value.to(device=like.device, dtype=torch.float32).reshape(-1, 1)
    return value


def grid_from_latent_coords(
    coords: Tensor,
    interpolation_scale: tuple[float | Tensor, float, float] | None,
    *,
    patch_size: int = 1,
    patch_size_t: int = 1,
) -> Tensor:
    """Scale latent indices ``(B, 3, S)`` to the fractional grid, as ``LTXPipeline`` does.

    ``interpolation_scale`` is ``(vae_temporal_ratio / frame_rate, vae_spatial_ratio, vae_spatial_ratio)``; its
    first entry may be a ``(B,)`` tensor (one frame rate per row). ``None`` leaves the raw indices, as diffusers
    does when no scale is given.
    """
    grid = coords.float()
    if interpolation_scale is None:
        return grid
    t_scale, h_scale, w_scale = (_per_row(s, grid) for s in interpolation_scale)
    # Same operation order as diffusers (x * scale * patch / base) so float32 rounding matches.
    return torch.stack(
        [
            grid[:, 0] * t_scale * patch_size_t / BASE_NUM_FRAMES,
            grid[:, 1] * h_scale * patch_size / BASE_HEIGHT,
            grid[:, 2] * w_scale * patch_size / BASE_WIDTH,
        ],
        dim=1,
    )


def pixel_coords(
    latent_coords: Tensor,
    *,
    spatial_ratio: int,
    temporal_ratio: int,
    frame_rate: float | Tensor,
    frame_index: int = 0,
) -> Tensor:
    """Latent indices ``(B, 3, S)`` -> pixel-space coordinates, as ``LTXConditionPipeline`` builds ``video_coords``.

    The frame axis is causal: latent frame ``i`` covers pixel frames ending at ``i*temporal_ratio``, i.e. the first
    frame at 0 and later ones shifted back by ``temporal_ratio - 1``; ``frame_index`` moves a conditioning
    segment to where it sits in the video; frame positions are then in seconds (divided by ``frame_rate``, which
    may be a ``(B,)`` tensor). Concatenate segments along ``S`` before calling ``grid_from_pixel_coords``.
    """
    coords = latent_coords.float()
    ratios = torch.tensor([temporal_ratio, spatial_ratio, spatial_ratio], dtype=torch.float32, device=coords.device)
    # Integer-valued until the frame-rate division, so float32 reproduces diffusers' int64 arithmetic exactly.
    coords = coords * ratios[None, :, None]
    frames = (coords[:, 0] + 1 - temporal_ratio).clamp(min=0) + frame_index
    # diffusers multiplies by the reciprocal rather than dividing; keep that for identical rounding.
    frames = frames * _per_row(1.0 / frame_rate, coords)
    return torch.cat([frames.unsqueeze(1), coords[:, 1:]], dim=1)


def grid_from_pixel_coords(video_coords: Tensor) -> Tensor:
    """Pixel-space coordinates ``(B, 3, S)`` (frame axis in seconds) -> fractional grid ``(B, 3, S)``."""
    video_coords = video_coords.float()
    return torch.stack(
        [video_coords[:, 0] / BASE_NUM_FRAMES, video_coords[:, 1] / BASE_HEIGHT, video_coords[:, 2] / BASE_WIDTH],
        dim=1,
    )


def rope_tables(grid: Tensor, dim: int, theta: float = 10000.0) -> tuple[Tensor, Tensor]:
    """Fractional grid ``(B, 3, S)`` -> ``(cos, sin)``, each ``(B, S, dim)`` float32.

    ``dim // 6`` log-spaced frequencies per axis, each used for one channel pair; the ``dim % 6`` leftover
    channels come first and are not rotated (cos 1, sin 0).
    """
    device = grid.device
    freqs = theta ** torch.linspace(
        math.log(1.0, theta), math.log(theta, theta), dim // 6, device=device, dtype=torch.float32
    )
    freqs = freqs * math.pi / 2.0
    # (B, 3, S) -> (B, S, 3, 1); positions mapped from [0, 1] to [-1, 1]
    pos = grid.float().transpose(1, 2).unsqueeze(-1)
    angles = freqs * (pos * 2 - 1)  # (B, S, 3, dim//6)
    # (B, S, 3, dim//6) -> (B, S, dim//6 * 3): frequency-major, axis-minor, as the checkpoints were trained
    angles = angles.transpose(-1, -2).flatten(2)
    cos = angles.cos().repeat_interleave(2, dim=-1)
    sin = angles.sin().repeat_interleave(2, dim=-1)
    pad = dim % 6
    if pad:
        cos = torch.cat([torch.ones_like(cos[:, :, :pad]), cos], dim=-1)
        sin = torch.cat([torch.zeros_like(sin[:, :, :pad]), sin], dim=-1)
    return cos, sin


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate interleaved channel pairs of ``x`` (B, S, dim) by tables (B or 1, S, dim).

    The rotation runs in float32 (the tables' dtype) and the result is cast back to ``x``'s dtype.
    """
    x_real, x_imag = x.unflatten(-1, (-1, 2)).unbind(-1)  # (B, S, dim/2) each
    x_rotated = torch.stack([-x_imag, x_real], dim=-1).flatten(-2)  # (B, S, dim)
    return (x.float() * cos + x_rotated.float() * sin).to(x.dtype)


def rope_phasors(cos: Tensor, sin: Tensor) -> Tensor:
    """Tables ``(B, S, dim)`` -> unit phasors per channel pair as ``(cos, sin)``, ``(B, S, dim/2, 2)`` float32.

    That is the memory layout of complex64 ``cos + i sin``: eager ``rotate`` views it as complex for free, while
    compiled code reads the parts as reals (a complex graph input would keep inductor from generating code).
    Valid for tables from ``rope_tables``, whose two channels of a pair share one angle (it reads the first
    channel of each pair).
    """
    return torch.stack([cos[..., 0::2].float(), sin[..., 0::2].float()], dim=-1)


def rotate(x: Tensor, phasors: Tensor) -> Tensor:
    """``apply_rope`` as one complex multiply: pair ``(x[2i], x[2i+1])`` as ``x[2i] + i x[2i+1]`` times its phasor.

    ``(a + ib)(c + is) = (ac - bs) + i(as + bc)``, the rotation ``apply_rope`` spells out. Runs in float32 and
    returns ``x``'s dtype. May overwrite ``x`` (float32 input): pass a tensor the caller no longer needs.
    """
    if torch.compiler.is_compiling():
        return _rotate_real(x, phasors)
    xf = x.float()  # float32 input: the same tensor, rotated in place below
    torch.view_as_complex(xf.unflatten(-1, (-1, 2))).mul_(torch.view_as_complex(phasors))
    return xf.to(x.dtype)


def _rotate_real(x: Tensor, phasors: Tensor) -> Tensor:
    """``rotate``'s product in real arithmetic, out of place: inductor fuses it into one pointwise kernel."""
    a, b = x.float().unflatten(-1, (-1, 2)).unbind(-1)
    c, s = phasors.unbind(-1)
    return torch.stack([a * c - b * s, a * s + b * c], dim=-1).flatten(-2).to(x.dtype)
