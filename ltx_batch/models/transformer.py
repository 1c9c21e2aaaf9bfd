"""The LTX-Video transformer (the denoiser), equivalent to diffusers' ``LTXVideoTransformer3DModel``.

Contract:
- ``LTXVideoTransformer(config)``; its ``state_dict`` keys equal diffusers' for the same config, so a diffusers
  ``transformer/`` folder loads with ``load_state_dict(..., strict=True)`` and no key map.
- ``forward(hidden_states, encoder_hidden_states, timestep, encoder_attention_mask, rope)``:
  * ``hidden_states`` (B, S, in_channels): packed latent tokens, order (frames, height, width);
  * ``encoder_hidden_states`` (B, L, caption_channels): text-encoder features;
  * ``timestep`` (B,) one per video, or (B, S) one per token (conditioning tokens carry smaller timesteps);
    sigma * 1000 as float32 (bfloat16 cannot hold values such as 993);
  * ``encoder_attention_mask`` (B, L), 1 = token, 0 = padding, or ``None`` for "no padding" (lets SDPA use
    the flash kernel). Every row must keep at least one token. ``trim_encoder_padding`` prepares both once per
    video;
  * ``rope``: ``(cos, sin)`` from ``ltx_batch.models.rope.rope_tables``, built once per shape by the caller;
  * returns (B, S, out_channels): the velocity prediction, in the model's dtype.
- No host syncs and no branching on tensor values inside ``forward``.
- Inference only: the blocks update activations in place (run it under ``torch.inference_mode()``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ltx_batch.models.config import config_from_dict
from ltx_batch.models.rope import rope_phasors
from ltx_batch.models.transformer_blocks import AdaLayerNormSingle, CaptionProjection, TransformerBlock

# Final LayerNorm epsilon: hard-coded in the reference, not part of the checkpoint config.
NORM_OUT_EPS = 1e-6

_POSITIVE_INT_FIELDS = (
    "in_channels",
    "out_channels",
    "patch_size",
    "patch_size_t",
    "num_attention_heads",
    "attention_head_dim",
    "cross_attention_dim",
    "num_layers",
    "caption_channels",
)


@dataclass(frozen=True, kw_only=True, slots=True)
class TransformerConfig:
    """Architecture of the transformer; field names are diffusers' ``config.json`` keys, defaults the 2B model."""

    in_channels: int = 128  # latent channels per token in
    out_channels: int = 128  # channels per token out (velocity), normally = in_channels
    patch_size: int = 1  # spatial patch size of the tokens; only scales RoPE coordinates (all releases: 1)
    patch_size_t: int = 1  # temporal patch size; only scales RoPE coordinates (all releases: 1)
    num_attention_heads: int = 32  # heads in self- and cross-attention
    attention_head_dim: int = 64  # channels per head; model width = heads * head_dim
    cross_attention_dim: int = 2048  # width of the projected text features; must equal the model width
    num_layers: int = 28  # transformer blocks (2B: 28, 13B: 48)
    activation_fn: str = "gelu-approximate"  # feed-forward activation; only GELU(tanh) exists in LTX-Video
    qk_norm: str = "rms_norm_across_heads"  # q/k normalisation; only RMSNorm over all heads is supported
    norm_elementwise_affine: bool = False  # learned weight in the blocks' RMSNorms (False in all releases)
    norm_eps: float = 1e-6  # epsilon of the blocks' RMSNorms
    caption_channels: int = 4096  # text-encoder feature width (T5-XXL: 4096)
    attention_bias: bool = True  # bias in the q/k/v projections
    attention_out_bias: bool = True  # bias in the attention output projection

    def __post_init__(self) -> None:
        if self.qk_norm != "rms_norm_across_heads":
            raise ValueError(f"qk_norm={self.qk_norm!r}: only 'rms_norm_across_heads' is implemented")
        if self.activation_fn != "gelu-approximate":
            raise ValueError(f"activation_fn={self.activation_fn!r}: only 'gelu-approximate' is implemented")
        for name in _POSITIVE_INT_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}={value!r}: expected a positive integer")
        if self.cross_attention_dim != self.inner_dim:
            # The caption projection outputs the model width and cross-attention reads it unchanged.
            raise ValueError(
                f"cross_attention_dim={self.cross_attention_dim} must equal num_attention_heads * attention_head_dim"
                f" = {self.inner_dim}"
            )
        if self.inner_dim < 6:
            raise ValueError(f"model width {self.inner_dim} is below 6: 3D RoPE needs a frequency per axis")

    @property
    def inner_dim(self) -> int:
        """Model width (also the RoPE table width)."""
        return self.num_attention_heads * self.attention_head_dim

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TransformerConfig:
        """From a diffusers ``transformer/config.json`` dict; unknown keys are an error naming the key."""
        return config_from_dict(cls, dict(raw), where="transformer config")



class LTXVideoTransformer(nn.Module):
    """The denoising transformer; see the module docstring for the forward contract."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.config = config
        dim = config.inner_dim
        self.proj_in = nn.Linear(config.in_channels, dim)
        # Final modulation (shift, scale) added to the embedded timestep; overwritten by checkpoints.
        self.scale_shift_table = nn.Parameter(torch.randn(2, dim) / dim**0.5)
        self.time_embed = AdaLayerNormSingle(dim)
        self.caption_projection = CaptionProjection(config.caption_channels, dim)
        self.transformer_blocks = nn.ModuleList(
            TransformerBlock(
                dim,
                config.num_attention_heads,
                config.attention_head_dim,
                config.cross_attention_dim,
                eps=config.norm_eps,
                elementwise_affine=config.norm_elementwise_affine,
                attention_bias=config.attention_bias,
                attention_out_bias=config.attention_out_bias,
            )
            for _ in range(config.num_layers)
        )
        self.norm_out = nn.LayerNorm(dim, eps=NORM_OUT_EPS, elementwise_affine=False)
        self.proj_out = nn.Linear(dim, config.out_channels)

    def forward(
        self,
        hidden_states: Tensor,
        encoder_hidden_states: Tensor,
        timestep: Tensor,
        encoder_attention_mask: Tensor | None,
        rope: tuple[Tensor, Tensor] | Tensor,
    ) -> Tensor:
        """``rope``: the ``(cos, sin)`` tables of ``rope_tables``, or their ``rope_phasors`` (a sampler builds
        those once for all its steps); batch 1 serves a batch whose rows share positions."""
        batch, seq = hidden_states.shape[:2]
        if timestep.shape not in ((batch,), (batch, 1), (batch, seq)):
            # Shapes only (no values are read): a wrong shape would otherwise fail deep inside a view.
            raise ValueError(f"timestep shape {tuple(timestep.shape)}: expected ({batch},) or ({batch}, {seq})")
        x = self.proj_in(hidden_states)  # (B, S, in) -> (B, S, D)

        # (B,) or (B, S) -> (B*T,) -> (B, T, 6*D) and (B, T, D), T = 1 or S
        temb, embedded_timestep = self.time_embed(timestep.flatten(), x.dtype)
        temb = temb.view(batch, -1, temb.shape[-1])
        embedded_timestep = embedded_timestep.view(batch, -1, embedded_timestep.shape[-1])

        context = self.caption_projection(encoder_hidden_states)  # (B, L, caption) -> (B, L, D)
        mask = None
        if encoder_attention_mask is not None:
            # (B, L) -> (B, 1, 1, L), broadcast over heads and queries; True = attend. Equal to diffusers'
            # -10000 additive bias whenever a row keeps at least one token (exp underflows to 0 either way).
            mask = encoder_attention_mask.bool()[:, None, None, :]

        # built once per forward at most: every block rotates q and k with it
        phasors = rope if isinstance(rope, Tensor) else rope_phasors(*rope)
        for block in self.transformer_blocks:
            x = block(x, context, temb, phasors, mask)

        # (2, D) + (B, T, 1, D) -> shift, scale each (B, T, D)
        shift, scale = (self.scale_shift_table + embedded_timestep[:, :, None]).unbind(dim=2)
        x = torch.addcmul(shift, self.norm_out(x), 1 + scale, out=x)
        return self.proj_out(x)  # (B, S, D) -> (B, S, out)


def trim_encoder_padding(
    encoder_hidden_states: Tensor, encoder_attention_mask: Tensor | None
) -> tuple[Tensor, Tensor | None]:
    """Drop padding columns no row uses and return ``None`` for the mask when no padding is left.

    Call once per video (it syncs with the host), outside the step loop. Masked keys contribute exactly zero
    to the softmax, so the result is the same as attending over the full padded length; cross-attention gets
    shorter and, with the mask gone, eligible for the flash kernel.
    """
    if encoder_attention_mask is None:
        return encoder_hidden_states, None
    keep = encoder_attention_mask.bool()
    if not bool(keep.any(dim=1).all()):
        raise ValueError("encoder_attention_mask has a row with no token; attention over it is undefined")
    length = int(keep.any(dim=0).nonzero().max()) + 1  # one past the last column any row uses
    keep = keep[:, :length]
    hidden = encoder_hidden_states[:, :length]
    return hidden, (None if bool(keep.all()) else encoder_attention_mask[:, :length])
