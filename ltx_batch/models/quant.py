"""Linear layers whose weights are stored in low precision and computed in the activations' dtype.

- ``Float8Linear``: weight stored as float8 (``model.weight_dtype: float8_e4m3fn``), cast to the input's
  dtype per forward with no scale: what diffusers' ``enable_layerwise_casting`` does and what the Lightricks
  ``-fp8`` releases hold. Halves the weight bytes of bf16.
- ``GGUFLinear``: weight stored as the raw blocks of a GGUF (llama.cpp) quantisation, ``Q8_0``, ``Q4_0``,
  ``Q4_1``, ``Q5_0`` or ``Q5_1``, dequantised per forward (``dequantize``; the same arithmetic, in float32, as
  the ``gguf`` package's reference ``gguf.quants.dequantize``).

Both keep the bias in the compute dtype and the state-dict keys of ``nn.Linear`` (``weight``, ``bias``), and
take LoRA adapters as an unmerged low-rank side path (``add_lora``): merging into a quantised weight would
round the adapter away. ``use_float8`` swaps a model's ``nn.Linear`` modules for ``Float8Linear`` ones; norms,
``scale_shift_table``s and biases stay in high precision, and so do ``proj_in`` / ``proj_out`` (diffusers'
default skip list for layerwise casting). ``parameter_bytes`` measures the result. Torch only.
"""

from __future__ import annotations

import re
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

FLOAT8 = {"float8_e4m3fn": torch.float8_e4m3fn, "float8_e5m2": torch.float8_e5m2}
# Linear layers kept in high precision (diffusers' DEFAULT_SKIP_MODULES_PATTERN for layerwise casting).
KEEP_HIGH_PRECISION = re.compile(r"^(proj_in|proj_out)$|norm")

# GGML block quantisations kept quantised: type id -> (elements per block, bytes per block).
GGML_BLOCKS = {2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34)}
GGML_NAMES = {2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0"}


class _StoredLinear(nn.Module):
    """Common part: features, bias in the compute dtype, and the optional LoRA side path."""

    def __init__(self, in_features: int, out_features: int, bias: Tensor | None) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)
        # Non-persistent buffers (they move with .to(device), stay out of the state dict):
        self.register_buffer("lora_down", None, persistent=False)  # (R, in): every adapter's A along the rank
        self.register_buffer("lora_up", None, persistent=False)  # (out, R): every adapter's B times its scale

    def dequantized(self, dtype: torch.dtype) -> Tensor:
        raise NotImplementedError

    def add_lora(self, down: Tensor, up: Tensor, scale: float, dtype: torch.dtype) -> None:
        """Add ``scale * up @ down`` to the layer as a side path computed in ``dtype`` (the compute dtype)."""
        down = down.to(device=self.weight.device, dtype=dtype)
        up = (up.to(device=self.weight.device, dtype=torch.float32) * scale).to(dtype)
        self.lora_down = down if self.lora_down is None else torch.cat([self.lora_down, down])
        self.lora_up = up if self.lora_up is None else torch.cat([self.lora_up, up], dim=1)

    def forward(self, x: Tensor) -> Tensor:
        out = F.linear(x, self.dequantized(x.dtype), self.bias)
        if self.lora_down is not None:
            out = out.add_(F.linear(F.linear(x, self.lora_down), self.lora_up))
        return out

    def extra_repr(self) -> str:
        rank = 0 if self.lora_down is None else self.lora_down.shape[0]
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}" + (
            f", lora_rank={rank}" if rank else "")  # fmt: skip


class Float8Linear(_StoredLinear):
    """``F.linear(x, weight.to(x.dtype), bias)`` with ``weight`` stored as float8."""

    def __init__(self, weight: Tensor, bias: Tensor | None) -> None:
        if weight.dtype not in FLOAT8.values():
            raise TypeError(f"Float8Linear needs a float8 weight, got {weight.dtype}")
        super().__init__(weight.shape[1], weight.shape[0], bias)
        self.weight = nn.Parameter(weight, requires_grad=False)

    def dequantized(self, dtype: torch.dtype) -> Tensor:
        return self.weight.to(dtype)


def to_float8(t: Tensor, dtype: torch.dtype) -> Tensor:
    """``t`` cast to a float8 ``dtype``, saturating at its largest finite value (no NaN for big weights)."""
    if t.dtype == dtype:
        return t
    big = torch.finfo(dtype).max
    return t.float().clamp(-big, big).to(dtype)


def float8_names(model: nn.Module) -> list[str]:
    """Names of the ``nn.Linear`` modules whose weights float8 storage applies to."""
    return [name for name, m in model.named_modules() if type(m) is nn.Linear and not KEEP_HIGH_PRECISION.search(name)]


def float8_keys(model: nn.Module) -> frozenset[str]:
    """State-dict keys of the weights float8 storage applies to."""
    return frozenset(f"{n}.weight" for n in float8_names(model))


def float8_state_(model: nn.Module, state: dict[str, Tensor], dtype: torch.dtype) -> frozenset[str]:
    """Cast, in ``state``, the weights of ``float8_names(model)`` to ``dtype`` (before they reach a device);
    returns their keys, which loading must keep in that dtype (``load_strict(keep_dtype=...)``)."""
    keys = float8_keys(model)
    for k in keys & state.keys():
        state[k] = to_float8(state[k], dtype)
    return keys


def use_float8(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Replace each ``nn.Linear`` of ``float8_names(model)`` by a ``Float8Linear`` (casting weights that are not
    float8 yet). In place; returns ``model``."""
    for name in float8_names(model):
        linear = model.get_submodule(name)
        _replace(model, name, Float8Linear(to_float8(linear.weight.data, dtype), _data(linear.bias)))
    return model


# --- GGUF block quantisations ------------------------------------------------------------------------------


class GGUFLinear(_StoredLinear):
    """``F.linear(x, dequantize(weight), bias)`` with ``weight`` the raw GGML blocks, (out, bytes per row) uint8."""

    def __init__(self, in_features: int, out_features: int, qtype: int, *, bias: Tensor | None,
                 weight: Tensor | None = None, device: torch.device | str | None = None) -> None:  # fmt: skip
        if qtype not in GGML_BLOCKS:
            raise ValueError(f"GGML type {qtype} is not kept quantised; supported: {sorted(GGML_NAMES.values())}")
        block, nbytes = GGML_BLOCKS[qtype]
        if in_features % block:
            raise ValueError(f"in_features {in_features} is not a multiple of the {GGML_NAMES[qtype]} block ({block})")
        super().__init__(in_features, out_features, bias)
        self.qtype = qtype
        shape = (out_features, in_features // block * nbytes)
        if weight is None:
            weight = torch.empty(shape, dtype=torch.uint8, device=device)
        elif tuple(weight.shape) != shape or weight.dtype != torch.uint8:
            raise ValueError(f"{GGML_NAMES[qtype]} weight must be uint8 {shape}, got {weight.dtype} {tuple(weight.shape)}")
        self.register_buffer("weight", weight)

    def dequantized(self, dtype: torch.dtype) -> Tensor:
        return dequantize(self.weight, self.qtype, (self.out_features, self.in_features)).to(dtype)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", qtype={GGML_NAMES[self.qtype]}"


def _f16(b: Tensor) -> Tensor:
    """(M, 2) little-endian bytes -> (M, 1) float32."""
    return b.contiguous().view(torch.float16).float()


def _nibbles(qs: Tensor) -> Tensor:
    """(M, 16) bytes -> (M, 32): low nibbles are elements 0..15, high nibbles 16..31 (GGML's layout)."""
    return torch.cat([qs & 0x0F, qs >> 4], dim=1)


def _high_bits(qh: Tensor) -> Tensor:
    """(M, 4) bytes of a little-endian uint32 -> (M, 32) with bit j at column j, shifted to bit 4."""
    shifts = torch.arange(8, dtype=torch.uint8, device=qh.device)
    return (((qh[:, :, None] >> shifts) & 1) << 4).flatten(1)


def dequantize(raw: Tensor, qtype: int, shape: tuple[int, int]) -> Tensor:
    """Raw GGML blocks (rows, bytes per row) uint8 -> float32 ``shape``; ``d * q (+ m)`` as ggml computes it."""
    block, nbytes = GGML_BLOCKS[qtype]
    b = raw.reshape(-1, nbytes)  # (M blocks, bytes per block)
    if qtype == 8:  # Q8_0: d, 32 x int8
        w = b[:, 2:].contiguous().view(torch.int8).float() * _f16(b[:, :2])
    elif qtype == 2:  # Q4_0: d, 16 bytes of nibbles; q - 8
        w = _f16(b[:, :2]) * (_nibbles(b[:, 2:]).to(torch.int8) - 8).float()
    elif qtype == 3:  # Q4_1: d, m, nibbles
        w = _f16(b[:, :2]) * _nibbles(b[:, 4:]).float() + _f16(b[:, 2:4])
    elif qtype == 6:  # Q5_0: d, 32 high bits, nibbles; q - 16
        w = _f16(b[:, :2]) * ((_nibbles(b[:, 6:]) | _high_bits(b[:, 2:6])).to(torch.int8) - 16).float()
    else:  # Q5_1: d, m, 32 high bits, nibbles
        w = _f16(b[:, :2]) * (_nibbles(b[:, 8:]) | _high_bits(b[:, 4:8])).float() + _f16(b[:, 2:4])
    return w.reshape(shape)


# --- helpers ---------------------------------------------------------------------------------------------


def _data(p: Tensor | None) -> Tensor | None:
    return None if p is None else p.data


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def replace_linears(model: nn.Module, modules: dict[str, nn.Module]) -> None:
    """Put ``modules`` (name -> module) in place of the model's submodules of those names."""
    for name, module in modules.items():
        _replace(model, name, module)


def linear_names(model: nn.Module) -> Iterable[str]:
    """Every linear layer of ``model``: ``nn.Linear`` and the stored kinds above."""
    return [n for n, m in model.named_modules() if isinstance(m, (nn.Linear, _StoredLinear))]


def is_stored(module: nn.Module) -> bool:
    """A linear layer with low-precision storage (LoRA goes in as a side path, not merged)."""
    return isinstance(module, _StoredLinear)


def parameter_bytes(model: nn.Module) -> dict[str, int]:
    """Bytes held by the model's parameters and buffers, in total and for the linear layers' weights."""
    def size(t: Tensor | None) -> int:
        return 0 if t is None else t.numel() * t.element_size()

    total = sum(size(t) for t in (*model.parameters(), *model.buffers()))
    linear = sum(size(model.get_submodule(n).weight) for n in linear_names(model))
    lora = sum(size(m.lora_down) + size(m.lora_up) for m in model.modules() if is_stored(m))
    return {"total": total, "linear_weights": linear, "lora": lora}
