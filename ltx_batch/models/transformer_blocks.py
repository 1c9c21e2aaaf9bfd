"""Building blocks of the LTX-Video transformer: attention, feed-forward, adaLN-single timestep embedding.

Attribute names reproduce diffusers' module tree (``to_out.0``, ``ff.net.0.proj``, ``ff.net.2``,
``time_embed.emb.timestep_embedder.linear_1`` ...) so a diffusers state dict loads with an identity key map.
Numerics follow diffusers 0.42 (``LTXVideoTransformerBlock``, ``LTXAttention``, ``AdaLayerNormSingle``);
the speed-relevant differences are only in how the same maths is dispatched: SDPA with a boolean (or no)
cross-attention mask, and RoPE tables passed in instead of rebuilt.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ltx_batch.models.rope import apply_rope

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
        return self.linear_2(F.gelu(self.linear_1(x), approximate="tanh"))


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

    def forward(
        self,
        x: Tensor,
        context: Tensor | None = None,
        rope: tuple[Tensor, Tensor] | None = None,
        mask: Tensor | None = None,
    ) -> Tensor:
        kv = x if context is None else context
        q = self.norm_q(self.to_q(x))
        k = self.norm_k(self.to_k(kv))
        v = self.to_v(kv)
        if rope is not None:
            q = apply_rope(q, *rope)
            k = apply_rope(k, *rope)
        # (B, S, H*Dh) -> (B, H, S, Dh)
        q, k, v = (t.unflatten(-1, (self.heads, -1)).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        # (B, H, S, Dh) -> (B, S, H*Dh)
        return self.to_out[0](out.transpose(1, 2).flatten(2))


class _GeluProjection(nn.Module):
    """Linear followed by tanh-approximated GELU; exists so the key reads ``ff.net.0.proj``."""

    def __init__(self, dim: int, inner: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, inner)

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(self.proj(x), approximate="tanh")


class FeedForward(nn.Module):
    """dim -> 4*dim -> dim MLP with tanh-approximated GELU."""

    def __init__(self, dim: int, mult: int = 4) -> None:
        super().__init__()
        inner = dim * mult
        # Index 1 (diffusers' dropout) is kept as an identity so the output layer's key stays ``net.2``.
        self.net = nn.ModuleList([_GeluProjection(dim, inner), nn.Identity(), nn.Linear(inner, dim)])

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.net:
            x = layer(x)
        return x


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
        rope: tuple[Tensor, Tensor],
        context_mask: Tensor | None,
    ) -> Tensor:
        """``x`` (B, S, D); ``context`` (B, L, D); ``temb`` (B, T, 6*D) with T = 1 or S; mask (B, 1, 1, L) bool."""
        # (B, T, 6*D) -> (B, T, 6, D) -> six (B, T, D)
        ada = self.scale_shift_table + temb.unflatten(-1, (6, -1))
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = ada.unbind(dim=2)

        h = self.norm1(x) * (1 + scale_msa) + shift_msa
        x = x + self.attn1(h, rope=rope) * gate_msa
        x = x + self.attn2(x, context=context, mask=context_mask)
        h = self.norm2(x) * (1 + scale_mlp) + shift_mlp
        return x + self.ff(h) * gate_mlp
