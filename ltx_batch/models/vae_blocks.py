"""Building blocks of the LTX-Video causal video VAE, and the stage plans that size them from a VAEConfig.

Every tensor is channels-first video, ``(B, C, F, H, W)``. Parameter names follow diffusers'
``AutoencoderKLLTXVideo`` module tree (``conv.conv.weight``, ``resnets.0.per_channel_scale1``, ...), so a
diffusers state dict loads into these modules with an identity key map.

Inference only: activations are applied in place, so run the blocks under ``torch.no_grad()``
(``VideoVAE`` does).

Randomness: the only random op is the 0.9.1 decoder's noise injection. It draws from an explicit
``torch.Generator`` (or one per batch row), never from the global RNG, with the shape, dtype and order of
diffusers' draws, so a CPU generator seeded ``s`` reproduces diffusers after ``torch.manual_seed(s)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from ltx_batch.models.vae import VAEConfig

Generators = torch.Generator | Sequence[torch.Generator]

# Per-axis (time, height, width) strides of each encoder downsampler kind (diffusers' downsample_type).
DOWNSAMPLE_STRIDES: dict[str, tuple[int, int, int]] = {
    "conv": (2, 2, 2),
    "spatial": (1, 2, 2),
    "temporal": (2, 1, 1),
    "spatiotemporal": (2, 2, 2),
}
LEGACY_DOWN = "LTXVideoDownBlock3D"  # 0.9.0/0.9.1: conv downsampling, width change in a resnet
DOWN_095 = "LTXVideo095DownBlock3D"  # 0.9.5+: space-to-depth downsampling that changes the width


def _channel_mean_square(x: torch.Tensor) -> torch.Tensor:
    """mean(x**2) over dim 1 as float32 ``(B, 1, ...)``, without a float32 copy of ``x``.

    CUDA: one ``vector_norm`` reduction. CPU: ``vector_norm`` over a strided dim is ~10x slower than an
    elementwise pass there, so channels are summed in groups of about 2**20 elements, which bounds the
    temporary and keeps the accumulator cache-resident.
    """
    c = x.shape[1]
    if x.device.type != "cpu":
        return torch.linalg.vector_norm(x, dim=1, keepdim=True, dtype=torch.float32).square_().div_(c)
    group = max(1, min(c, (1 << 20) // max(1, x[:, :1].numel())))
    if group == 1:  # large frames: stream channels one at a time into the accumulator
        acc = torch.zeros_like(x[:, :1], dtype=torch.float32)
        for chunk in x.split(1, dim=1):
            acc.addcmul_(chunk, chunk)
        return acc.div_(c)
    acc = None
    for chunk in x.split(group, dim=1):
        part = (chunk.float().square_() if chunk.dtype != torch.float32 else chunk.square()).sum(1, keepdim=True)
        acc = part if acc is None else acc.add_(part)
    return acc.div_(c)


def rms_norm_channels(
    x: torch.Tensor, eps: float = 1e-8, *, out: torch.Tensor | None = None
) -> torch.Tensor:
    """RMS norm over the channel dim without moving channels last (diffusers' RMSNorm, no affine).

    The statistic is reduced in float32 without materialising a float32 copy of ``x``; in bf16 the scale is
    rounded before the multiply, which keeps the output in one low-precision pass. ``out`` (which may be ``x``)
    receives the result instead of a new tensor.
    """
    scale = _channel_mean_square(x).add_(eps).rsqrt_().to(x.dtype)
    return torch.mul(x, scale, out=out) if out is not None else x * scale


def timestep_sinusoids(t: torch.Tensor, dim: int = 256, max_period: float = 10000.0) -> torch.Tensor:
    """(B,) -> (B, dim) [cos | sin] embedding, as diffusers' Timesteps(flip_sin_to_cos=True, shift 0)."""
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    args = t[:, None].float() * torch.exp(exponent)[None, :]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimestepMLP(nn.Module):
    def __init__(self, in_dim: int, dim: int) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


class TimestepEmbedder(nn.Module):
    """Decode-timestep embedding (diffusers' PixArtAlphaCombinedTimestepSizeEmbeddings without size terms)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.timestep_embedder = TimestepMLP(256, dim)

    def forward(self, t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return self.timestep_embedder(timestep_sinusoids(t.flatten()).to(dtype))  # (B, dim)


class CausalConv3d(nn.Module):
    """Conv3d padded in time by repeating edge frames (only the first frame when causal); space is
    zero-padded by the conv itself.

    Callers that compute the conv's input anyway write it straight into a time-padded buffer
    (``padded_input`` then ``conv_padded``), so no separate padded copy is ever made."""

    def __init__(self, cin: int, cout: int, kernel_size: int = 3, stride: int = 1, causal: bool = True) -> None:
        super().__init__()
        self.time_kernel = kernel_size
        self.causal = causal
        pad = kernel_size // 2
        self.conv = nn.Conv3d(cin, cout, kernel_size, stride=stride, padding=(0, pad, pad))
        k = kernel_size - 1
        self.time_pad = (k, 0) if causal else (k // 2, k // 2)  # frames repeated before, after

    def padded_input(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """An uninitialised time-padded buffer for an input shaped like ``like``, and the view of its
        unpadded frames to write that input into."""
        before, after = self.time_pad
        b, c, f, h, w = like.shape
        buf = like.new_empty((b, c, before + f + after, h, w))
        return buf, buf[:, :, before : before + f]

    def conv_padded(self, buf: torch.Tensor) -> torch.Tensor:
        """Fill the padding frames of a ``padded_input`` buffer from its edge frames and convolve it."""
        before, after = self.time_pad
        end = buf.shape[2] - after
        if before:
            buf[:, :, :before] = buf[:, :, before : before + 1]
        if after:
            buf[:, :, end:] = buf[:, :, end - 1 : end]
        return self.conv(buf)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.time_pad == (0, 0):
            return self.conv(x)
        buf, frames = self.padded_input(x)
        frames.copy_(x)
        return self.conv_padded(buf)


def host_to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """CPU-drawn noise onto ``device``. A copy from pageable host memory to a GPU makes the host wait for all
    queued GPU work first; the condition sampler draws noise every step (hard-condition renoising) and the
    0.9.1 decoder at every injection point, so that would stall the GPU each time. From pinned memory the
    copy is queued behind the work instead."""
    device = torch.device(device)
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def _spatial_noise(h: torch.Tensor, scale: torch.Tensor, generator: Generators | None) -> torch.Tensor:
    """Noise of shape (1 or B, C, 1, H, W) for one injection point, drawn like diffusers' decoder.

    diffusers draws one (H, W) field per call, shared by every row and frame; with a list of generators
    each row draws its own field from its own generator, so a row decodes the same alone or in a batch.
    """
    if generator is None:
        raise ValueError("this decoder injects noise: decode needs a torch.Generator (none was given)")
    b, _, _, hh, ww = h.shape
    if isinstance(generator, torch.Generator):
        noise = torch.randn((hh, ww), generator=generator, device=generator.device, dtype=h.dtype)[None]
        return (host_to_device(noise, h.device) * scale)[None, :, None]  # (H, W) -> (1, C, 1, H, W)
    if len(generator) != b:
        raise ValueError(f"got {len(generator)} generators for a batch of {b}")
    noise = host_to_device(
        torch.stack([torch.randn((hh, ww), generator=g, device=g.device, dtype=h.dtype) for g in generator]), h.device
    )
    return (noise[:, None] * scale[None])[:, :, None]  # (B, H, W) -> (B, C, 1, H, W)


class ResnetBlock3d(nn.Module):
    """RMSNorm-SiLU-conv twice plus a shortcut; optional timestep scale/shift and noise injection."""

    def __init__(
        self,
        cin: int,
        cout: int,
        *,
        eps: float,
        causal: bool,
        inject_noise: bool = False,
        timestep_conditioning: bool = False,
    ) -> None:
        super().__init__()
        self.conv1 = CausalConv3d(cin, cout, 3, causal=causal)
        self.conv2 = CausalConv3d(cout, cout, 3, causal=causal)
        self.norm3: nn.LayerNorm | None = None
        self.conv_shortcut: CausalConv3d | None = None
        if cin != cout:
            self.norm3 = nn.LayerNorm(cin, eps=eps)
            self.conv_shortcut = CausalConv3d(cin, cout, 1, causal=causal)
        self.per_channel_scale1: nn.Parameter | None = None
        self.per_channel_scale2: nn.Parameter | None = None
        if inject_noise:
            self.per_channel_scale1 = nn.Parameter(torch.zeros(cin, 1, 1))
            self.per_channel_scale2 = nn.Parameter(torch.zeros(cin, 1, 1))
        self.scale_shift_table: nn.Parameter | None = None
        if timestep_conditioning:
            self.scale_shift_table = nn.Parameter(torch.randn(4, cin) / cin**0.5)

    def forward(
        self, x: torch.Tensor, temb: torch.Tensor | None = None, generator: Generators | None = None
    ) -> torch.Tensor:
        # norm -> modulate -> SiLU written straight into each conv's time-padded input buffer
        buf, h = self.conv1.padded_input(x)
        rms_norm_channels(x, out=h)
        if self.scale_shift_table is not None:
            # temb (B, 4*C, 1, 1, 1) -> 4 x (B, C, 1, 1, 1)
            ada = temb.unflatten(1, (4, -1)) + self.scale_shift_table[None, :, :, None, None, None]
            shift1, scale1, shift2, scale2 = ada.unbind(1)
            torch.addcmul(shift1, h, 1 + scale1, out=h)
        F.silu(h, inplace=True)
        h = self.conv1.conv_padded(buf)
        if self.per_channel_scale1 is not None:
            h.add_(_spatial_noise(h, self.per_channel_scale1, generator))
        buf, h2 = self.conv2.padded_input(h)
        rms_norm_channels(h, out=h2)
        if self.scale_shift_table is not None:
            torch.addcmul(shift2, h2, 1 + scale2, out=h2)
        F.silu(h2, inplace=True)
        h = self.conv2.conv_padded(buf)
        if self.per_channel_scale2 is not None:
            h.add_(_spatial_noise(h, self.per_channel_scale2, generator))
        if self.norm3 is not None:
            x = self.norm3(x.movedim(1, -1)).movedim(-1, 1)
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        return h.add_(x)


def _space_to_depth(x: torch.Tensor, stride: tuple[int, int, int]) -> torch.Tensor:
    # (B, C, F*st, H*sh, W*sw) -> (B, C*st*sh*sw, F, H, W), channel-major then (st, sh, sw) as diffusers
    st, sh, sw = stride
    x = x.unflatten(4, (-1, sw)).unflatten(3, (-1, sh)).unflatten(2, (-1, st))
    return x.permute(0, 1, 3, 5, 7, 2, 4, 6).flatten(1, 4)


class SpaceToDepthDownsampler(nn.Module):
    """0.9.5+ encoder downsampler: conv then space-to-depth, plus a space-to-depth residual averaged over
    channel groups (diffusers' LTXVideoDownsampler3d)."""

    def __init__(self, cin: int, cout: int, stride: tuple[int, int, int], causal: bool) -> None:
        super().__init__()
        n = math.prod(stride)
        self.stride = stride
        self.group_size = cin * n // cout
        self.conv = CausalConv3d(cin, cout // n, 3, causal=causal)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        st = self.stride[0]
        if st > 1:  # repeat the first st-1 frames so that 1 + 8k frames stay 1 + 8k/st
            x = torch.cat([x[:, :, : st - 1], x], dim=2)
        residual = _space_to_depth(x, self.stride).unflatten(1, (-1, self.group_size)).mean(dim=2)
        return _space_to_depth(self.conv(x), self.stride).add_(residual)


class DepthToSpaceUpsampler(nn.Module):
    """Decoder upsampler: conv then depth-to-space by (2, 2, 2), dropping the first frame (causal time
    upsampling: F -> 2F - 1); optionally adds the depth-to-space of the input (diffusers' LTXVideoUpsampler3d)."""

    def __init__(self, cin: int, *, causal: bool, residual: bool, upscale_factor: int) -> None:
        super().__init__()
        self.stride = (2, 2, 2)
        self.residual = residual
        self.upscale_factor = upscale_factor
        self.conv = CausalConv3d(cin, cin * 8 // upscale_factor, 3, causal=causal)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, f, h, w = x.shape
        st, sh, sw = self.stride
        y = self.conv(x).unflatten(1, (-1, st, sh, sw))  # (B, C', st, sh, sw, F, H, W)
        if self.residual:
            # diffusers shuffles the input and tiles it `repeats` times over channels; adding it before the
            # shuffle, broadcast over the repeat axis, gives the same sums without materialising the repeats.
            repeats = st * sh * sw // self.upscale_factor
            y.unflatten(1, (repeats, -1)).add_(x.unflatten(1, (1, -1, st, sh, sw)))
        # (B, C', st, sh, sw, F, H, W) -> (B, C', F*st, H*sh, W*sw)
        y = y.permute(0, 1, 5, 2, 6, 3, 7, 4).reshape(b, -1, f * st, h * sh, w * sw)
        return y[:, :, st - 1 :]


class DownBlock3d(nn.Module):
    """Encoder stage: resnets at the input width, an optional downsampler, and (0.9.0 blocks only) a
    resnet that changes the width; 0.9.5 blocks change width inside their space-to-depth downsampler."""

    def __init__(
        self,
        cin: int,
        cout: int,
        *,
        num_layers: int,
        eps: float,
        causal: bool,
        downsample: str | None,
        out_resnet: bool,
    ) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(ResnetBlock3d(cin, cin, eps=eps, causal=causal) for _ in range(num_layers))
        self.downsamplers: nn.ModuleList | None = None
        if downsample == "conv":
            self.downsamplers = nn.ModuleList([CausalConv3d(cin, cin, 3, stride=2, causal=causal)])
        elif downsample is not None:
            self.downsamplers = nn.ModuleList(
                [SpaceToDepthDownsampler(cin, cout, DOWNSAMPLE_STRIDES[downsample], causal)]
            )
        self.conv_out = ResnetBlock3d(cin, cout, eps=eps, causal=causal) if out_resnet else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for resnet in self.resnets:
            x = resnet(x)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
        if self.conv_out is not None:
            x = self.conv_out(x)
        return x


class MidBlock3d(nn.Module):
    def __init__(
        self,
        channels: int,
        *,
        num_layers: int,
        eps: float,
        causal: bool,
        inject_noise: bool = False,
        timestep_conditioning: bool = False,
    ) -> None:
        super().__init__()
        flags = dict(eps=eps, causal=causal, inject_noise=inject_noise, timestep_conditioning=timestep_conditioning)
        self.time_embedder = TimestepEmbedder(channels * 4) if timestep_conditioning else None
        self.resnets = nn.ModuleList(ResnetBlock3d(channels, channels, **flags) for _ in range(num_layers))

    def forward(
        self, x: torch.Tensor, t: torch.Tensor | None = None, generator: Generators | None = None
    ) -> torch.Tensor:
        temb = None
        if self.time_embedder is not None:
            temb = self.time_embedder(t, x.dtype).view(x.shape[0], -1, 1, 1, 1)  # (B, 4C, 1, 1, 1)
        for resnet in self.resnets:
            x = resnet(x, temb, generator)
        return x


class UpBlock3d(nn.Module):
    """Decoder stage: optional width-changing resnet, optional 2x upsampler, then resnets."""

    def __init__(
        self,
        cin: int,
        cout: int,
        *,
        num_layers: int,
        eps: float,
        causal: bool,
        inject_noise: bool,
        timestep_conditioning: bool,
        upsample: bool,
        upsample_residual: bool,
        upsample_factor: int,
    ) -> None:
        super().__init__()
        flags = dict(eps=eps, causal=causal, inject_noise=inject_noise, timestep_conditioning=timestep_conditioning)
        self.time_embedder = TimestepEmbedder(cin * 4) if timestep_conditioning else None
        self.conv_in = ResnetBlock3d(cin, cout, **flags) if cin != cout else None
        self.upsamplers: nn.ModuleList | None = None
        if upsample:
            up = DepthToSpaceUpsampler(
                cout * upsample_factor, causal=causal, residual=upsample_residual, upscale_factor=upsample_factor
            )
            self.upsamplers = nn.ModuleList([up])
        self.resnets = nn.ModuleList(ResnetBlock3d(cout, cout, **flags) for _ in range(num_layers))

    def forward(
        self, x: torch.Tensor, t: torch.Tensor | None = None, generator: Generators | None = None
    ) -> torch.Tensor:
        if self.conv_in is not None:  # the config forbids a width change together with timestep conditioning
            x = self.conv_in(x, None, generator)
        temb = None
        if self.time_embedder is not None:
            temb = self.time_embedder(t, x.dtype).view(x.shape[0], -1, 1, 1, 1)  # (B, 4C, 1, 1, 1)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x)
        for resnet in self.resnets:
            x = resnet(x, temb, generator)
        return x


# Stage plans: the per-block arguments diffusers' constructors derive from a config, with the channel flow
# checked so that a config our modules cannot run fails in VAEConfig with the field named.


@dataclass(frozen=True, slots=True)
class EncoderStage:
    cin: int
    cout: int
    layers: int
    downsample: str | None  # a DOWNSAMPLE_STRIDES key
    out_resnet: bool


@dataclass(frozen=True, slots=True)
class DecoderStage:
    cin: int
    cout: int
    layers: int
    upsample: bool
    residual: bool
    factor: int
    inject_noise: bool


def _need(cfg: VAEConfig, name: str, n: int) -> tuple:
    value = getattr(cfg, name)
    if len(value) < n:
        raise ValueError(f"VAE config: {name} needs at least {n} entries, got {len(value)}: {value}")
    return value


def encoder_plan(cfg: VAEConfig) -> tuple[list[EncoderStage], int, int]:
    """Encoder stages as diffusers builds them, plus (mid width, mid layers); checks the channel flow."""
    boc = cfg.block_out_channels
    if not boc or not cfg.down_block_types:
        raise ValueError("VAE config: block_out_channels and down_block_types must not be empty")
    is_095 = cfg.down_block_types[-1] == DOWN_095
    n = len(boc) - (1 if is_095 else 0)
    types = _need(cfg, "down_block_types", n)
    layers = _need(cfg, "layers_per_block", n)
    scaling = _need(cfg, "spatio_temporal_scaling", n)
    stages, ch = [], boc[0]
    for i in range(n):
        cin, cout = ch, boc[i + 1] if i + 1 < len(boc) else boc[i]
        if types[i] not in (LEGACY_DOWN, DOWN_095):
            raise ValueError(f"VAE config: down_block_types[{i}] is {types[i]!r}; known: {[LEGACY_DOWN, DOWN_095]}")
        legacy = types[i] == LEGACY_DOWN
        down = None
        if scaling[i]:
            down = "conv" if legacy else _need(cfg, "downsample_type", i + 1)[i]
            if down not in DOWNSAMPLE_STRIDES:
                raise ValueError(f"VAE config: downsample_type[{i}] is {down!r}; known: {sorted(DOWNSAMPLE_STRIDES)}")
        # A 0.9.5 block changes its width only through a space-to-depth downsampler.
        out = cout if legacy or down not in (None, "conv") else cin
        if out != cout:
            raise ValueError(f"VAE config: encoder block {i} ({types[i]}, downsample {down}) keeps {cin} channels "
                             f"but block_out_channels asks for {cout}")
        if down not in (None, "conv"):
            n_sub = math.prod(DOWNSAMPLE_STRIDES[down])
            if cout % n_sub or (cin * n_sub) % cout:
                raise ValueError(f"VAE config: encoder block {i}: {down} downsampling cannot map {cin} -> {cout} "
                                 "channels")
        stages.append(EncoderStage(cin, cout, layers[i], down, legacy and cin != cout))
        ch = cout
    return stages, ch, layers[-1]


def decoder_plan(cfg: VAEConfig) -> tuple[list[DecoderStage], int, int, bool]:
    """Decoder stages (coarsest first) as diffusers builds them, plus (mid width, mid layers, mid noise)."""
    boc = tuple(reversed(cfg.decoder_block_out_channels))
    n = len(boc)
    if n == 0:
        raise ValueError("VAE config: decoder_block_out_channels must not be empty")
    # diffusers reverses each per-block tuple and indexes it from the coarse end.
    layers = tuple(reversed(_need(cfg, "decoder_layers_per_block", n + 1)))
    noise = tuple(reversed(_need(cfg, "decoder_inject_noise", n + 1)))
    scaling = tuple(reversed(_need(cfg, "decoder_spatio_temporal_scaling", n)))
    residual = tuple(reversed(_need(cfg, "upsample_residual", n)))
    factor = tuple(reversed(_need(cfg, "upsample_factor", n)))
    stages, width, actual = [], boc[0], boc[0]
    for i in range(n):
        if factor[i] < 1 or 8 % factor[i]:
            raise ValueError(f"VAE config: upsample_factor entries must divide 8, got {factor[i]}")
        cin, cout = width // factor[i], boc[i] // factor[i]
        width = cout
        st = DecoderStage(cin, cout, layers[i + 1], bool(scaling[i]), bool(residual[i]), factor[i], bool(noise[i + 1]))
        if cin != cout:
            if cfg.timestep_conditioning or st.inject_noise:
                raise ValueError(f"VAE config: decoder block {i} changes width ({cin} -> {cout}), which diffusers' "
                                 "model cannot combine with timestep_conditioning or decoder_inject_noise")
            if actual != cin:
                raise ValueError(f"VAE config: decoder block {i} expects {cin} channels, gets {actual}")
            actual = cout
        if st.upsample:
            if actual != cout * st.factor or (st.residual and actual % 8):
                raise ValueError(f"VAE config: decoder block {i} upsampler expects {cout * st.factor} channels "
                                 f"(divisible by 8 with upsample_residual), gets {actual}")
            actual = cout
        if actual != cout:
            raise ValueError(f"VAE config: decoder block {i} resnets expect {cout} channels, gets {actual}")
        stages.append(st)
    return stages, boc[0], layers[0], bool(noise[0])
