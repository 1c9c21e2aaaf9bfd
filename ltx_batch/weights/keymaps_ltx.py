"""Key tables and config translation for the original Lightricks single-file checkpoints.

Our parameter names are diffusers' (``diffusers_layout.py``); this module maps them to the names of
Lightricks' own modules (``ltx_video/models``), which the single files use. Every table here is the inverse
of a rename in diffusers' ``scripts/convert_ltx_to_diffusers.py`` / ``single_file_utils.py``
(``convert_ltx_transformer_checkpoint_to_diffusers``, ``convert_ltx_vae_checkpoint_to_diffusers``), and the
parity tests check it against those converters and against Lightricks' ``ltx-video`` package.

Direction: each function maps one of OUR keys to the FILE's key, so a loader walks the model's own keys
(strictness: a file key nobody asked for is unexpected, a model key the file lacks is missing).

- Transformer: four module renames, the same at every depth (``_TRANSFORMER_RENAMES``).
- VAE: Lightricks numbers its blocks as one flat list (``encoder_blocks`` / ``decoder_blocks``, or a shared
  ``blocks`` that the decoder walks reversed), diffusers groups them into stages. ``vae_layout`` walks the
  list once and returns both the diffusers config and the block table (ours prefix -> file prefix), so the
  table follows the file's own config instead of a per-release copy: 0.9.0, 0.9.1 and 0.9.5+ are three
  block lists through one walk. Inside a block, a few names differ (``_VAE_INNER_RENAMES``).
- Latent upsampler: identical names (no table).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

TRANSFORMER_PREFIX = "model.diffusion_model."  # optional in the files
VAE_PREFIX = "vae."

# ours (diffusers) -> Lightricks, per dotted segment
_TRANSFORMER_RENAMES = {"proj_in": "patchify_proj", "time_embed": "adaln_single", "norm_q": "q_norm",
                        "norm_k": "k_norm"}  # fmt: skip

# Inside one VAE block: ours -> Lightricks (a dotted sub-path, matched on whole segments)
_VAE_INNER_RENAMES = (("resnets", "res_blocks"), ("conv_shortcut.conv", "conv_shortcut"), ("norm3", "norm3.norm"))
# Whole keys or prefixes outside the blocks: ours -> Lightricks
_VAE_TOP_RENAMES = {
    "decoder.time_embedder": "decoder.last_time_embedder",
    "decoder.scale_shift_table": "decoder.last_scale_shift_table",
    "latents_mean": "per_channel_statistics.mean-of-means",
    "latents_std": "per_channel_statistics.std-of-means",
}
# Latent statistics the files carry that no model reads (diffusers' converter drops them too).
VAE_UNUSED = frozenset(
    VAE_PREFIX + "per_channel_statistics." + s for s in ("channel", "mean-of-stds", "mean-of-stds_over_std-of-means")
)


class LayoutError(ValueError):
    """A Lightricks config that diffusers' (and so our) modules cannot represent; names the field."""


def transformer_file_key(ours: str) -> str:
    """Our transformer key -> the file's key, without the optional ``model.diffusion_model.`` prefix."""
    return ".".join(_TRANSFORMER_RENAMES.get(s, s) for s in ours.split("."))


def _replace_path(key: str, old: str, new: str) -> str:
    """Replace the dotted sub-path ``old`` by ``new`` wherever it stands on whole segments."""
    parts, pat = key.split("."), old.split(".")
    out, i = [], 0
    while i < len(parts):
        if parts[i : i + len(pat)] == pat:
            out.extend(new.split("."))
            i += len(pat)
        else:
            out.append(parts[i])
            i += 1
    return ".".join(out)


@dataclass(frozen=True, slots=True)
class VAELayout:
    config: dict[str, Any]  # diffusers ``AutoencoderKLLTXVideo`` config keys
    blocks: tuple[tuple[str, str], ...]  # (our prefix, the file's prefix, without "vae."), longest first

    def file_key(self, ours: str) -> str:
        """Our VAE key -> the file's key (with the ``vae.`` prefix)."""
        for top, theirs in _VAE_TOP_RENAMES.items():
            if ours == top or ours.startswith(top + "."):
                return VAE_PREFIX + theirs + ours[len(top) :]
        for prefix, theirs in self.blocks:
            if ours.startswith(prefix + "."):
                rest = ours[len(prefix) + 1 :]
                for old, new in _VAE_INNER_RENAMES:
                    rest = _replace_path(rest, old, new)
                return f"{VAE_PREFIX}{theirs}.{rest}"
        return VAE_PREFIX + ours  # conv_in, conv_out, decoder.timestep_scale_multiplier


# --- the Lightricks VAE block list -> diffusers stages ---------------------------------------------------

_RES, _RES_XY = "res_x", "res_x_y"
_ENCODER_DOWN = {"compress_all": "conv", "compress_space_res": "spatial", "compress_time_res": "temporal",
                 "compress_all_res": "spatiotemporal"}  # fmt: skip
# Parameters each block kind reads in Lightricks' Encoder/Decoder ("num_layers" also stands for an int param).
_PARAMS = {_RES: {"num_layers", "inject_noise"}, _RES_XY: {"num_layers", "multiplier", "inject_noise"},
           "compress_all": {"num_layers", "multiplier", "residual"},
           **{name: {"num_layers", "multiplier"} for name in _ENCODER_DOWN if name != "compress_all"}}  # fmt: skip


def _blocks(raw: Any, where: str) -> list[tuple[str, dict[str, Any]]]:
    """``[[name, int | dict], ...]`` -> ``[(name, params)]``; an int param means ``{"num_layers": n}``."""
    if not isinstance(raw, (list, tuple)) or not raw:
        raise LayoutError(f"{where}: expected a non-empty list of [block, params], got {raw!r}")
    out = []
    for i, item in enumerate(raw):
        if not (isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[0], str)):
            raise LayoutError(f"{where}[{i}]: expected [name, params], got {item!r}")
        name, params = item
        params = {"num_layers": params} if isinstance(params, int) else params
        if not isinstance(params, dict):
            raise LayoutError(f"{where}[{i}] ({name}): params must be an int or a mapping, got {params!r}")
        if name not in _PARAMS:
            raise LayoutError(f"{where}[{i}]: block {name!r} has no diffusers equivalent; known: {sorted(_PARAMS)}")
        unknown = sorted(set(params) - _PARAMS[name])
        if unknown:
            raise LayoutError(f"{where}[{i}] ({name}): unknown parameter(s) {unknown}")
        out.append((name, params))
    return out


def _stages(blocks: list[tuple[int, str, dict]], order: dict[str, int], where: str) -> list[dict[str, tuple]]:
    """Group blocks into stages whose slots come in ``order``; a slot at or before the last filled one
    starts a new stage. Each stage maps slot kind -> (file index, name, params)."""
    stages: list[dict[str, tuple]] = []
    last = len(order)
    for j, name, params in blocks:
        slot = next((s for s, kinds in _SLOT_KINDS.items() if name in kinds and s in order), None)
        if slot is None:
            raise LayoutError(f"{where}: block {name!r} (Lightricks module index {j}) has no diffusers equivalent")
        if order[slot] <= last:
            stages.append({})
        stages[-1][slot] = (j, name, params)
        last = order[slot]
    return stages


def _layers(params: dict, where: str) -> int:
    n = params.get("num_layers")
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise LayoutError(f"{where}: res_x needs an integer num_layers, got {params!r}")
    return n


_SLOT_KINDS = {"res": {_RES}, "down": set(_ENCODER_DOWN), "up": {"compress_all"}, "width": {_RES_XY}}


def vae_layout(lt: dict[str, Any]) -> VAELayout:
    """diffusers config + block table from Lightricks' ``CausalVideoAutoencoder`` config (its defaults apply
    to absent keys, as its ``from_config`` does). Raises ``LayoutError`` naming what cannot be represented."""
    enc_raw = lt.get("encoder_blocks", lt.get("blocks"))
    dec_raw = lt.get("decoder_blocks", lt.get("blocks"))
    enc = _blocks(enc_raw, "vae.encoder_blocks" if "encoder_blocks" in lt else "vae.blocks")
    dec = _blocks(dec_raw, "vae.decoder_blocks" if "decoder_blocks" in lt else "vae.blocks")
    table: list[tuple[str, str]] = []
    enc_cfg = _encoder(enc, lt.get("encoder_base_channels", 128), table)
    dec_cfg = _decoder(dec, lt.get("decoder_base_channels", 128), table)
    table.sort(key=lambda pair: -len(pair[0]))
    return VAELayout({**enc_cfg, **dec_cfg}, tuple(table))


def _encoder(blocks: list[tuple[str, dict]], base: int, table: list) -> dict[str, Any]:
    where = "vae.encoder_blocks"
    if blocks[-1][0] != _RES:
        raise LayoutError(f"{where}: the last block must be res_x (diffusers' mid block), got {blocks[-1][0]!r}")
    table.append(("encoder.mid_block", f"encoder.down_blocks.{len(blocks) - 1}"))
    indexed = [(j, n, p) for j, (n, p) in enumerate(blocks[:-1])]
    stages = _stages(indexed, {"res": 0, "down": 1, "width": 2}, where)
    is_095 = any(n.endswith("_res") for _, n, _ in indexed)
    if is_095 and any(n in (_RES_XY, "compress_all") for _, n, _ in indexed):
        raise LayoutError(f"{where}: mixes 0.9.5 (compress_*_res) and 0.9.0 (res_x_y, compress_all) blocks")
    width, outs, layers, scaling, down_types = base, [], [], [], []
    for i, st in enumerate(stages):
        for slot, suffix in (("res", ""), ("down", ".downsamplers.0"), ("width", ".conv_out")):
            if slot in st:
                table.append((f"encoder.down_blocks.{i}{suffix}", f"encoder.down_blocks.{st[slot][0]}"))
        layers.append(_layers(st["res"][2], where) if "res" in st else 0)
        down = st.get("down")
        scaling.append(down is not None)
        down_types.append(_ENCODER_DOWN[down[1]] if down else "conv")
        if down is not None and down[1].endswith("_res"):  # space-to-depth downsamplers change the width
            width *= down[2].get("multiplier", 2)
        if "width" in st:
            width *= st["width"][2].get("multiplier", 2)
        outs.append(width)
    layers.append(_layers(blocks[-1][1], where))
    if is_095:
        block_out = (base, *outs)
    else:  # diffusers' 0.9.0 blocks take their output width from the next entry; the last one keeps its input
        block_out = (base, *outs[:-1])
        if len(outs) > 1 and outs[-1] != outs[-2] or len(outs) == 1 and outs[0] != base:
            raise LayoutError(f"{where}: the last stage changes width, which diffusers' 0.9.0 blocks cannot")
    kind = "LTXVideo095DownBlock3D" if is_095 else "LTXVideoDownBlock3D"
    return {"block_out_channels": block_out, "down_block_types": (kind,) * len(stages),
            "layers_per_block": tuple(layers), "spatio_temporal_scaling": tuple(scaling),
            "downsample_type": tuple(down_types)}  # fmt: skip


def _decoder(blocks: list[tuple[str, dict]], base: int, table: list) -> dict[str, Any]:
    where = "vae.decoder_blocks"
    rev = list(reversed(blocks))  # Lightricks' Decoder builds up_blocks from the reversed list
    if rev[0][0] != _RES:
        raise LayoutError(f"{where}: the last block must be res_x (diffusers' mid block), got {rev[0][0]!r}")
    for name, params in rev:
        if name == "compress_all" and params.get("multiplier", 1) < 1 or name == _RES_XY and params.get("inject_noise"):
            raise LayoutError(f"{where}: block {name} {params} is not supported")
    # The decoder's widest width: the base times every multiplier (Lightricks' Decoder.__init__).
    width = base
    for name, params in rev:
        width *= params.get("multiplier", 2 if name == _RES_XY else 1) if name != _RES else 1
    mid_width = width
    table.append(("decoder.mid_block", "decoder.up_blocks.0"))
    indexed = [(j + 1, n, p) for j, (n, p) in enumerate(rev[1:])]
    stages = _stages(indexed, {"width": 0, "up": 1, "res": 2}, where)
    rev_out, layers, noise, scaling, residual, factor = [], [], [], [], [], []
    for i, st in enumerate(stages):
        for slot, suffix in (("width", ".conv_in"), ("up", ".upsamplers.0"), ("res", "")):
            if slot in st:
                table.append((f"decoder.up_blocks.{i}{suffix}", f"decoder.up_blocks.{st[slot][0]}"))
        if "width" in st:
            width //= st["width"][2].get("multiplier", 2)
        up = st.get("up")
        f = up[2].get("multiplier", 1) if up else 1
        width //= f
        # diffusers' decoder_block_out_channels entry is the stage's output width times its upsample factor
        rev_out.append(width * f)
        res = st.get("res", (None, None, {}))[2]
        layers.append(_layers(res, where) if res else 0)
        noise.append(bool(res.get("inject_noise", False)))
        scaling.append(up is not None)
        residual.append(bool(up[2].get("residual", False)) if up else False)
        factor.append(f)
    if not stages or rev_out[0] != mid_width:
        raise LayoutError(f"{where}: diffusers' decoder needs an upsampling stage after the mid block, and no "
                          "width change (res_x_y) before its first upsampler")
    mid = rev[0][1]
    layers.insert(0, _layers(mid, where))
    noise.insert(0, bool(mid.get("inject_noise", False)))
    return {  # diffusers lists decoder entries finest first (the mid block last)
        "decoder_block_out_channels": tuple(reversed(rev_out)), "decoder_layers_per_block": tuple(reversed(layers)),
        "decoder_inject_noise": tuple(reversed(noise)), "decoder_spatio_temporal_scaling": tuple(reversed(scaling)),
        "upsample_residual": tuple(reversed(residual)), "upsample_factor": tuple(reversed(factor)),
    }  # fmt: skip
