"""A tiny random diffusers transformer and ours holding the same weights (parity tests share it)."""

from __future__ import annotations

import torch

from ltx_batch.models.transformer import LTXVideoTransformer, TransformerConfig


def transformer_pair(config: dict, *, seed: int = 0, bias_dtype: torch.dtype | None = None):
    """(diffusers' model, ours) with non-trivial modulation tables and q/k norms (their defaults are near
    zero / ones); ``bias_dtype`` rounds biases to values that dtype holds exactly."""
    from diffusers import LTXVideoTransformer3DModel

    torch.manual_seed(seed)
    ref = LTXVideoTransformer3DModel(**config).eval()
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if "scale_shift_table" in name or "norm_" in name:
                p.copy_(torch.randn_like(p) * 0.5 + (1.0 if "norm_" in name else 0.0))
            elif bias_dtype is not None and name.endswith("bias"):
                p.copy_((torch.randn_like(p) * 0.3).to(bias_dtype).float())
    ours = LTXVideoTransformer(TransformerConfig.from_dict(dict(ref.config))).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours
