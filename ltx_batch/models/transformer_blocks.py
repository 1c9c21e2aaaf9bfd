"""Building blocks of the LTX-Video transformer: attention, feed-forward, adaLN-single timestep embedding.

Attribute names reproduce diffusers' module tree (``to_out.0``, ``ff.net.0.proj``, ``ff.net.2``,
``time_embed.emb.timestep_embedder.linear_1`` ...) so a diffusers state dict loads with an identity key map.
Numerics follow diffusers 0.42 (``LTXVideoTransformerBlock``, ``LTXAttention``, ``AdaLayerNormSingle``);
the speed-relevant differences are only in how the same maths is dispatched: SDPA with a boolean (or no)
cross-attention mask, RoPE tables passed in instead of rebuilt and applied as one complex multiply, RMSNorm
statistics reduced without a float32 copy, and norms, modulation, gates and residuals applied in place
(no fresh activation-sized buffers: on CPUs each one costs page faults).

Inference only: blocks overwrite their intermediate activations (the sampler runs under
``torch.inference_mode()``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ltx_batch.models.rope import rotate

# Width of the sinusoidal timestep features (PixArt-alpha's adaLN-single; fixed by the checkpoints).
TIMESTEP_FEATURES = 256
# q/k RMSNorm epsilon: hard-coded in the reference attention, not part of the checkpoint config.
QK_NORM_EPS = 1e-5


def timestep_features(timestep: Tensor, channels: int = TIMESTEP_FEATURES, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal features ``(N,) -> (N, channels)`` as ``[cos, sin]`` (flip_sin_to_cos=True, freq shift 0).

    Always float32, whatever the input dtype (timesteps such as 993 are not representable in bfloat16:
    pass them as float32).
    """
    half = channels // 2
    exponent = -math.log(max_period) * torch.arange(0, half, dtype=torch.float32, device=timestep.device)
    exponent = exponent / half
    args = timestep[:, None].float() * torch.exp(exponent)[None, :]  # (N, half)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


# PyTorch's oneDNN linear (the kernel torch.compile's CPU backend emits). Eager ``nn.Linear`` runs float32
# through MKL's sgemm, which on the AMD EPYC (Zen 4) we benchmark on is ~15% slower than oneDNN's (MKL does
# not use AVX-512 there); this op also fuses the feed-forward GELU into the matmul. CPU-only and
# inference-only, and it calls the op directly, so forward hooks on these Linear layers do not run. Set
# ``ONEDNN_CPU_LINEAR = False`` for plain eager ``nn.Linear`` everywhere (bench/models.py reports both).
_ONEDNN_LINEAR = getattr(torch.ops.mkldnn, "_linear_pointwise", None) if torch.backends.mkldnn.is_available() else None
ONEDNN_CPU_LINEAR = True


def linear(layer: nn.Linear, x: Tensor, *, gelu: bool = False) -> Tensor:
    """``layer(x)``, followed by tanh-approximated GELU when ``gelu``; through oneDNN on CPU when possible."""
    if (
        ONEDNN_CPU_LINEAR
        and _ONEDNN_LINEAR is not None
        and x.device.type == "cpu"
        and type(layer) is nn.Linear  # anything else (a quantised or wrapped layer) runs its own forward
        and x.dtype in (torch.float32, torch.bfloat16)
        and layer.weight.dtype == x.dtype
        and not torch.is_grad_enabled()  # the op has no backward
        and not torch.compiler.is_compiling()  # inductor cannot lower this op with dynamic shapes
    ):
        return _ONEDNN_LINEAR(x, layer.weight, layer.bias, "gelu" if gelu else "none", [], "tanh" if gelu else "")
    y = layer(x)
    # In place: the feed-forward's 4x-wide hidden activation is the largest buffer of a block.
    return torch.ops.aten.gelu_(y, approximate="tanh") if gelu else y


def rms_scale(x: Tensor, eps: float) -> Tensor:
    """``1 / sqrt(mean(x**2, -1) + eps)`` as float32 ``(..., 1)``, reduced without a float32 copy of ``x``."""
    ms = torch.linalg.vector_norm(x, dim=-1, keepdim=True, dtype=torch.float32).square_().div_(x.shape[-1])
    return ms.add_(eps).rsqrt_()


def rms_norm(x: Tensor, eps: float) -> Tensor:
    """RMSNorm without affine into a new tensor of ``x``'s dtype; the product runs in float32 (rounded once),
    as diffusers' ``RMSNorm`` and ``torch.nn.RMSNorm`` do."""
    return torch.mul(x, rms_scale(x, eps), out=torch.empty_like(x))


def modulate_(h: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
    """``h * (1 + scale) + shift`` written into ``h``."""
    return torch.addcmul(shift, h, 1 + scale, out=h)


class TimestepMLP(nn.Module):
    """Linear -> SiLU -> Linear over the sinusoidal features (diffusers' ``TimestepEmbedding``)."""

    def __init__(self, in_features: int, dim: int) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(in_features, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


class AdaLayerNormSingle(nn.Module):
    """Timesteps ``(N,)`` -> (block modulation ``(N, 6*dim)``, embedded timestep ``(N, dim)``).

    One shared MLP for all blocks; each block adds its own ``scale_shift_table`` to the 6 vectors.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        # The extra ``emb`` level mirrors diffusers' PixArtAlphaCombinedTimestepSizeEmbeddings so keys match.
        self.emb = nn.ModuleDict({"timestep_embedder": TimestepMLP(TIMESTEP_FEATURES, dim)})
        self.linear = nn.Linear(dim, 6 * dim)

    def forward(self, timestep: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        embedded = self.emb["timestep_embedder"](timestep_features(timestep).to(dtype))
        return self.linear(F.silu(embedded)), embedded


class CaptionProjection(nn.Module):
    """Text-encoder features -> model width: Linear -> GELU(tanh) -> Linear (PixArt-alpha's text projection)."""

    def __init__(self, in_features: int, dim: int) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(in_features, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return linear(self.linear_2, linear(self.linear_1, x, gelu=True))


class Attention(nn.Module):
    """Multi-head attention with RMSNorm on q and k across all heads, optional RoPE (self) or mask (cross)."""

    def __init__(self, dim: int, heads: int, head_dim: int, kv_dim: int, *, bias: bool, out_bias: bool) -> None:
        super().__init__()
        inner = heads * head_dim
        self.heads = heads
        self.to_q = nn.Linear(dim, inner, bias=bias)
        self.to_k = nn.Linear(kv_dim, inner, bias=bias)
        self.to_v = nn.Linear(kv_dim, inner, bias=bias)
        # Normalised over the full inner width (all heads together), not per head.
        self.norm_q = nn.RMSNorm(inner, eps=QK_NORM_EPS)
        self.norm_k = nn.RMSNorm(inner, eps=QK_NORM_EPS)
        # A list so the key is ``to_out.0`` as in diffusers (whose index 1 is a parameterless dropout).
        self.to_out = nn.ModuleList([nn.Linear(inner, dim, bias=out_bias)])

    @staticmethod
    def _norm_(x: Tensor, norm: nn.RMSNorm) -> Tensor:
        # torch.nn.RMSNorm's rounding: (x * rms scale) in float32, rounded to x's dtype, then times the weight.
        return x.mul_(rms_scale(x, norm.eps)).mul_(norm.weight)

    def forward(
        self,
        x: Tensor,
        context: Tensor | None = None,
        phasors: Tensor | None = None,
        mask: Tensor | None = None,
    ) -> Tensor:
        """``phasors`` from ``rope_phasors`` (self-attention); ``mask`` (B, 1, 1, L) bool (cross-attention)."""
        kv = x if context is None else context
        q = self._norm_(linear(self.to_q, x), self.norm_q)
        k = self._norm_(linear(self.to_k, kv), self.norm_k)
        v = linear(self.to_v, kv)
        if phasors is not None:
            q = rotate(q, phasors)
            k = rotate(k, phasors)
        # (B, S, H*Dh) -> (B, H, S, Dh), a view; SDPA's output (B, H, S, Dh) is laid out as (B, S, H, Dh)
        q, k, v = (t.unflatten(-1, (self.heads, -1)).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        # (B, H, S, Dh) -> (B, S, H*Dh)
        return linear(self.to_out[0], out.transpose(1, 2).flatten(2))


class _GeluProjection(nn.Module):
    """Linear followed by tanh-approximated GELU; exists so the key reads ``ff.net.0.proj``."""

    def __init__(self, dim: int, inner: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, inner)

    def forward(self, x: Tensor) -> Tensor:
        return linear(self.proj, x, gelu=True)


class FeedForward(nn.Module):
    """dim -> 4*dim -> dim MLP with tanh-approximated GELU."""

    def __init__(self, dim: int, mult: int = 4) -> None:
        super().__init__()
        inner = dim * mult
        # Index 1 (diffusers' dropout) is kept as an identity so the output layer's key stays ``net.2``.
        self.net = nn.ModuleList([_GeluProjection(dim, inner), nn.Identity(), nn.Linear(inner, dim)])

    def forward(self, x: Tensor) -> Tensor:
        return linear(self.net[2], self.net[0](x))


class TransformerBlock(nn.Module):
    """Self-attention (RoPE) -> cross-attention (text) -> feed-forward, modulated by adaLN-single.

    Note the reference's layout, kept for parity: cross-attention reads the un-normalised residual stream and
    is neither modulated nor gated.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        head_dim: int,
        cross_attention_dim: int,
        *,
        eps: float,
        elementwise_affine: bool,
        attention_bias: bool,
        attention_out_bias: bool,
    ) -> None:
        super().__init__()
        self.norm1 = nn.RMSNorm(dim, eps=eps, elementwise_affine=elementwise_affine)
        self.attn1 = Attention(dim, heads, head_dim, dim, bias=attention_bias, out_bias=attention_out_bias)
        self.norm2 = nn.RMSNorm(dim, eps=eps, elementwise_affine=elementwise_affine)
        self.attn2 = Attention(
            dim, heads, head_dim, cross_attention_dim, bias=attention_bias, out_bias=attention_out_bias
        )
        self.ff = FeedForward(dim)
        # Rows: shift/scale/gate for attention, then shift/scale/gate for the MLP; overwritten by checkpoints.
        self.scale_shift_table = nn.Parameter(torch.randn(6, dim) / dim**0.5)

    def forward(
        self,
        x: Tensor,
        context: Tensor,
        temb: Tensor,
        phasors: Tensor,
        context_mask: Tensor | None,
    ) -> Tensor:
        """``x`` (B, S, D), updated in place and returned; ``context`` (B, L, D); ``temb`` (B, T, 6*D) with
        T = 1 or S; ``phasors`` from ``rope_phasors``; mask (B, 1, 1, L) bool."""
        # (B, T, 6*D) -> (B, T, 6, D) -> six (B, T, D)
        ada = self.scale_shift_table + temb.unflatten(-1, (6, -1))
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = ada.unbind(dim=2)

        h = modulate_(self._pre_norm(x, self.norm1), scale_msa, shift_msa)
        x.addcmul_(self.attn1(h, phasors=phasors), gate_msa)
        x.add_(self.attn2(x, context=context, mask=context_mask))
        h = modulate_(self._pre_norm(x, self.norm2), scale_mlp, shift_mlp)
        return x.addcmul_(self.ff(h), gate_mlp)

    @staticmethod
    def _pre_norm(x: Tensor, norm: nn.RMSNorm) -> Tensor:
        h = rms_norm(x, norm.eps)
        return h if norm.weight is None else h.mul_(norm.weight)
