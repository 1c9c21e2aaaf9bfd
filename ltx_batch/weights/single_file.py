"""The original Lightricks single-file checkpoints: one ``.safetensors`` with the architecture in its metadata.

Two kinds of file, told apart by the metadata's ``config`` JSON (never by tensor shapes):

- a model file (``ltx-video-2b-v0.9.safetensors``, ``ltxv-13b-0.9.8-distilled.safetensors``, the ``-fp8``
  files): ``{"transformer": {...}, "vae": {...}, "scheduler": {...}}`` in Lightricks' own schema
  (``Transformer3DModel`` / ``CausalVideoAutoencoder`` configs); transformer keys with or without
  ``model.diffusion_model.``, VAE keys under ``vae.``; no text encoder (``model.text_encoder`` names one);
- a latent upsampler file (``ltxv-spatial-upscaler-0.9.7.safetensors``): the upsampler's config itself.

Configs translate to our (diffusers-keyed) dataclasses here, reading absent keys with Lightricks' defaults
and refusing keys or values our modules do not compute, by name. Keys map through ``keymaps_ltx``; loading
is strict. The release (and so the scheduler and default pipeline diffusers gives it) comes from the config:
see ``detect_release``. fp8 files (float8_e4m3fn weights) load cast to the compute dtype as they are read,
or stay float8 when the transformer is loaded with float8 weight storage (``weight_dtype``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Callable, Iterable

import torch
from safetensors import safe_open

from ..models.quant import float8_keys, to_float8, use_float8
from ..sampling.schedules import SchedulerConfig
from .keymaps_ltx import TRANSFORMER_PREFIX, VAE_PREFIX, VAE_UNUSED, transformer_file_key, vae_layout
from .resolve import ResolvedCheckpoint
from .errors import CheckpointError, _names
from .strict import build_on_meta, load_strict

_FP8 = {getattr(torch, n) for n in ("float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz")
        if hasattr(torch, n)}  # fmt: skip
_BOOKKEEPING = {"_class_name", "_diffusers_version", "_name_or_path"}


# --- releases --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Release:
    name: str  # "0.9.0" | "0.9.1" | "0.9.5" | "0.9.7"
    covers: str  # the published files that share this architecture (their configs cannot tell them apart)
    dynamic_shifting: bool  # diffusers' conversion gives 0.9.0/0.9.1 a dynamically shifted scheduler

    @property
    def pipeline(self) -> str:
        """The default ``recipe.pipeline``: ``LTXConditionPipeline`` refuses dynamic shifting."""
        return "base" if self.dynamic_shifting else "condition"

    def scheduler_config(self) -> SchedulerConfig:
        """What ``scripts/convert_ltx_to_diffusers.py`` writes for the release."""
        if self.dynamic_shifting:
            return SchedulerConfig(use_dynamic_shifting=True, base_shift=0.95, max_shift=2.05,
                                   base_image_seq_len=1024, max_image_seq_len=4096, shift_terminal=0.1)  # fmt: skip
        return SchedulerConfig(use_dynamic_shifting=False)


RELEASES = {
    "0.9.0": Release("0.9.0", "ltx-video-2b-v0.9 (VAE without timestep conditioning)", True),
    "0.9.1": Release("0.9.1", "ltx-video-2b-v0.9.1 (timestep-aware VAE, 0.9.0 encoder)", True),
    "0.9.5": Release("0.9.5", "2B with the 0.9.5 VAE: 0.9.5, 0.9.6 dev/distilled, 0.9.8 2B distilled (+ fp8)", False),
    "0.9.7": Release("0.9.7", "13B: 0.9.7 and 0.9.8 dev/distilled (+ fp8)", False),
}


def detect_release(configs: dict[str, Any]) -> Release:
    """The release family of a model file's metadata config. The VAE config separates 0.9.0 (legacy blocks,
    no timestep conditioning), 0.9.1 (legacy encoder, timestep-aware decoder) and 0.9.5+ (``compress_*_res``
    encoder blocks); the transformer's configured width separates 2B from 13B."""
    vae, tr = configs.get("vae"), configs.get("transformer")
    if not isinstance(vae, dict) or not isinstance(tr, dict):
        raise CheckpointError("single-file config: needs 'transformer' and 'vae' mappings (Lightricks' schema)")
    encoder = vae.get("encoder_blocks", vae.get("blocks")) or []
    if not any(isinstance(b, (list, tuple)) and b and str(b[0]).endswith("_res") for b in encoder):
        return RELEASES["0.9.1" if vae.get("timestep_conditioning", False) else "0.9.0"]
    width = tr.get("num_attention_heads", 16) * tr.get("attention_head_dim", 88)  # Lightricks' defaults
    return RELEASES["0.9.7" if width >= 4096 else "0.9.5"]


# --- config translation: Lightricks' schema -> our dataclasses (diffusers keys) -----------------------------


_REQUIRED = object()  # a key Lightricks' code reads without a default


def _translate(raw: dict, where: str, class_name: str, defaults: dict, fixed: dict, ignored: set) -> dict:
    """``raw`` with Lightricks' ``defaults`` filled in (what its code does with an absent key); the keys in
    ``fixed`` must then hold the given value (the only one diffusers' modules, and ours, compute)."""
    if raw.get("_class_name", class_name) != class_name:
        raise CheckpointError(f"{where}._class_name is {raw['_class_name']!r}; expected {class_name!r}")
    known = set(defaults) | ignored | _BOOKKEEPING
    unknown = sorted(set(raw) - known)
    if unknown:
        raise CheckpointError(f"{where}: unknown key(s) {unknown}; known keys: {sorted(known - _BOOKKEEPING)}")
    full = {**defaults, **raw}
    for key, value in full.items():
        if value is _REQUIRED:
            raise CheckpointError(f"{where}.{key} is missing; Lightricks' model needs it")
        if key in fixed and value != fixed[key]:
            absent = " (Lightricks' default for an absent key)" if key not in raw else ""
            raise CheckpointError(f"{where}.{key} is {value!r}{absent}; only {fixed[key]!r} is implemented")
    return full


# Transformer3DModel.__init__ defaults (what an absent key means) for the keys we copy ...
_TR_COPIED = {"num_attention_heads": 16, "attention_head_dim": 88, "in_channels": _REQUIRED, "out_channels": None,
              "num_layers": 1, "cross_attention_dim": _REQUIRED, "attention_bias": False, "activation_fn": "geglu",
              "norm_elementwise_affine": True, "norm_eps": 1e-5, "caption_channels": _REQUIRED}  # fmt: skip
# ... and for the keys that select what the model computes, with the one value diffusers' model implements.
_TR_DEFAULTS = {**_TR_COPIED, "qk_norm": None, "standardization_norm": "layer_norm",
                "adaptive_norm": "single_scale_shift", "attention_type": "default", "positional_embedding_type": "rope",
                "positional_embedding_theta": None, "positional_embedding_max_pos": None,
                "timestep_scale_multiplier": None, "use_linear_projection": False, "only_cross_attention": False,
                "double_self_attention": False, "upcast_attention": False, "num_vector_embeds": None}  # fmt: skip
_TR_FIXED = {"qk_norm": "rms_norm", "standardization_norm": "rms_norm", "adaptive_norm": "single_scale_shift",
             "attention_type": "default", "positional_embedding_type": "rope", "positional_embedding_theta": 10000.0,
             "positional_embedding_max_pos": [20, 2048, 2048], "timestep_scale_multiplier": 1000,
             "use_linear_projection": False, "only_cross_attention": False, "double_self_attention": False,
             "upcast_attention": False, "num_vector_embeds": None}  # fmt: skip
# Keys that do not change the forward: training switches, kernel choices, unused legacy fields, and
# causal_temporal_positioning (RoPE frame offsets are the pipeline's business: it follows the release).
_TR_IGNORED = {"dropout", "norm_num_groups", "num_embeds_ada_norm", "use_tpu_flash_attention", "project_to_2d_pos",
               "causal_temporal_positioning"}  # fmt: skip


def transformer_config_dict(raw: dict[str, Any]) -> dict[str, Any]:
    """Lightricks ``Transformer3DModel`` config -> diffusers ``LTXVideoTransformer3DModel`` config."""
    c = _translate(raw, "transformer", "Transformer3DModel", _TR_DEFAULTS, _TR_FIXED, _TR_IGNORED)
    out = {k: c[k] for k in _TR_COPIED}
    out["out_channels"] = c["out_channels"] if c["out_channels"] is not None else c["in_channels"]
    # Lightricks' "rms_norm" q/k norm spans all heads; its attention output projection always has a bias.
    return {**out, "qk_norm": "rms_norm_across_heads", "attention_out_bias": True, "patch_size": 1, "patch_size_t": 1}


# CausalVideoAutoencoder.from_config defaults for the keys we read.
_VAE_DEFAULTS = {"in_channels": 3, "out_channels": 3, "latent_channels": _REQUIRED, "patch_size": 1,
                 "causal_decoder": False, "timestep_conditioning": False, "encoder_base_channels": 128,
                 "decoder_base_channels": 128, "blocks": None, "encoder_blocks": None, "decoder_blocks": None,
                 "dims": _REQUIRED, "norm_layer": "group_norm", "latent_log_var": "per_channel", "use_quant_conv": True,
                 "normalize_latent_channels": False, "spatial_padding_mode": "zeros"}  # fmt: skip
_VAE_FIXED = {"dims": 3, "norm_layer": "pixel_norm", "latent_log_var": "uniform", "use_quant_conv": False,
              "normalize_latent_channels": False, "spatial_padding_mode": "zeros"}  # fmt: skip
# double_z only sets latent_log_var's default (fixed above); scaling_factor is not read by Lightricks' model,
# whose latents are scaled by the per-channel statistics alone (diffusers' conversion writes 1.0).
_VAE_IGNORED = {"double_z", "scaling_factor"}


def vae_config_dict(raw: dict[str, Any]) -> dict[str, Any]:
    """Lightricks ``CausalVideoAutoencoder`` config -> diffusers ``AutoencoderKLLTXVideo`` config."""
    if "latent_log_var" not in raw and raw.get("double_z", True) is False:
        raw = {**raw, "latent_log_var": "none"}  # Lightricks' default when double_z is off
    c = _translate(raw, "vae", "CausalVideoAutoencoder", _VAE_DEFAULTS, _VAE_FIXED, _VAE_IGNORED)
    try:
        layout = vae_layout(raw)
    except ValueError as e:
        raise CheckpointError(str(e)) from None
    return {"in_channels": c["in_channels"], "out_channels": c["out_channels"], "latent_channels": c["latent_channels"],
            "patch_size": c["patch_size"], "patch_size_t": 1, "resnet_norm_eps": 1e-6, "scaling_factor": 1.0,
            "encoder_causal": True, "decoder_causal": c["causal_decoder"],
            "timestep_conditioning": c["timestep_conditioning"], **layout.config}  # fmt: skip


# LatentUpsampler.from_config defaults (they differ from diffusers' for in/mid channels and dims).
_UP_DEFAULTS = {"in_channels": 4, "mid_channels": 128, "num_blocks_per_stage": 4, "dims": 2, "spatial_upsample": True,
                "temporal_upsample": False}  # fmt: skip


def upsampler_config_dict(raw: dict[str, Any]) -> dict[str, Any]:
    """Lightricks ``LatentUpsampler`` config -> diffusers ``LTXLatentUpsamplerModel`` config."""
    return {k: v for k, v in _translate(raw, "upsampler", "LatentUpsampler", _UP_DEFAULTS, {}, set()).items()
            if k in _UP_DEFAULTS}  # fmt: skip


# --- the checkpoint ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SingleFileCheckpoint(ResolvedCheckpoint):
    """``Checkpoint``'s interface over one Lightricks ``.safetensors`` file (see the module docstring)."""


    @cached_property
    def _header(self) -> tuple[dict[str, Any], tuple[str, ...]]:
        try:
            with safe_open(str(self.path), framework="pt", device="cpu") as fh:
                metadata, keys = fh.metadata() or {}, tuple(fh.keys())
        except Exception as e:  # noqa: BLE001 - safetensors raises its own types for a corrupt header
            raise CheckpointError(
                f"checkpoint {self.ref!r}: {self.path.name} is not a readable safetensors file: {e}"
            ) from None
        return _configs(metadata, self.ref, self.path.name), keys

    @property
    def configs(self) -> dict[str, Any]:
        return self._header[0]

    @property
    def is_upsampler(self) -> bool:
        return "transformer" not in self.configs and "vae" not in self.configs

    def _require(self, what: str) -> None:
        if self.is_upsampler != (what == "upsampler"):
            kind = "a latent upsampler" if self.is_upsampler else "a transformer + VAE"
            raise CheckpointError(f"checkpoint {self.ref!r}: {self.path.name} is {kind} file; it has no {what}")

    def _config(self, what: str, translate: Callable[[dict], dict], cls):
        self._require(what)
        raw = self.configs if what == "upsampler" else self.configs[what]
        if not isinstance(raw, dict):
            raise CheckpointError(f"checkpoint {self.ref!r}: metadata config {what!r} is not a mapping")
        try:
            return cls.from_dict(translate(raw))
        except ValueError as e:  # ConfigError, CheckpointError, a model config's own check
            raise CheckpointError(f"checkpoint {self.ref!r} ({self.path.name}): {e}") from None

    @cached_property
    def release(self) -> Release:
        self._require("transformer")
        try:
            return detect_release(self.configs)
        except CheckpointError as e:
            raise CheckpointError(f"checkpoint {self.ref!r} ({self.path.name}): {e}") from None

    def scheduler_config(self) -> SchedulerConfig:
        return self.release.scheduler_config()

    @cached_property
    def transformer_config(self):
        from ..models.transformer import TransformerConfig

        return self._config("transformer", transformer_config_dict, TransformerConfig)

    @cached_property
    def vae_config(self):
        from ..models.vae import VAEConfig

        return self._config("vae", vae_config_dict, VAEConfig)

    @cached_property
    def upsampler_config(self):
        from ..models.upsampler import UpsamplerConfig

        return self._config("upsampler", upsampler_config_dict, UpsamplerConfig)

    def load_transformer(self, *, dtype: torch.dtype, device: torch.device | str = "cpu",
                         weight_dtype: torch.dtype | None = None):  # fmt: skip
        """``weight_dtype`` (float8): Linear weights stored so (``models/quant.py``); an ``-fp8`` file's weights
        are then kept as they are read, never widened."""
        from ..models.transformer import LTXVideoTransformer

        model = build_on_meta(lambda: LTXVideoTransformer(self.transformer_config))
        keys = [k for k in self._header[1] if not k.startswith(VAE_PREFIX)]
        prefix = TRANSFORMER_PREFIX if any(k.startswith(TRANSFORMER_PREFIX) for k in keys) else ""
        key_map = {k: prefix + transformer_file_key(k) for k in model.state_dict()}
        model = self._load(model, key_map, keys, frozenset(), "transformer", dtype, device, weight_dtype)
        return model if weight_dtype is None else use_float8(model, weight_dtype)

    def load_vae(self, *, dtype: torch.dtype, device: torch.device | str = "cpu"):
        from ..models.vae import VideoVAE

        model = build_on_meta(lambda: VideoVAE(self.vae_config))
        layout = vae_layout(self.configs["vae"])
        key_map = {k: layout.file_key(k) for k in model.state_dict()}
        keys = [k for k in self._header[1] if k.startswith(VAE_PREFIX)]
        return self._load(model, key_map, keys, VAE_UNUSED, "VAE", dtype, device)

    def load_upsampler(self, *, dtype: torch.dtype, device: torch.device | str = "cpu"):
        from ..models.upsampler import LatentUpsampler

        model = build_on_meta(lambda: LatentUpsampler(self.upsampler_config))
        key_map = {k: k for k in model.state_dict()}
        return self._load(model, key_map, self._header[1], frozenset(), "latent upsampler", dtype, device)

    def load_text_encoder(self, *, dtype: torch.dtype, device: torch.device | str = "cpu"):
        raise CheckpointError(
            f"checkpoint {self.ref!r} is a single-file checkpoint, which carries no text encoder: set "
            "model.text_encoder to a folder or hub repo with text_encoder/ + tokenizer/ (e.g. "
            "PixArt-alpha/PixArt-XL-2-1024-MS, as Lightricks' configs do) or to a T5 model folder"
        )

    def _load(self, model, key_map: dict[str, str], file_keys: Iterable[str], unused: frozenset, what: str,
              dtype: torch.dtype, device, weight_dtype: torch.dtype | None = None) -> Any:  # fmt: skip
        present = set(file_keys)
        wanted = set(key_map.values())
        assert len(wanted) == len(key_map), "key table maps two model keys to one file key"
        missing = sorted(f for f in wanted if f not in present)
        unexpected = present - wanted - unused
        if missing or unexpected:
            parts = [f"missing key(s): {_names(missing)}"] if missing else []
            parts += [f"unexpected key(s): {_names(unexpected)}"] if unexpected else []
            raise CheckpointError(f"checkpoint {self.ref!r} ({self.path.name}): the {what} weights do not match "
                                  "its config: " + "; ".join(parts))  # fmt: skip
        keep = float8_keys(model) if weight_dtype is not None else frozenset()
        with safe_open(str(self.path), framework="pt", device="cpu") as fh:
            state = {ours: _read(fh, theirs, dtype, weight_dtype if ours in keep else None)
                     for ours, theirs in key_map.items()}  # fmt: skip
        load_strict(model, state, what=f"{self.path.name} ({what})", dtype=dtype, device=device,
                    keep_dtype=keep.__contains__)  # fmt: skip
        return model.eval().requires_grad_(False)


def _configs(metadata: dict[str, str], ref: str, name: str) -> dict[str, Any]:
    """The ``config`` JSON of a single file's safetensors metadata."""
    if "config" not in metadata:
        raise CheckpointError(
            f"checkpoint {ref!r}: {name} has no 'config' in its safetensors metadata; ltx_batch reads the "
            "architecture from it (original Lightricks single files carry it)"
        )
    try:
        configs = json.loads(metadata["config"])
    except json.JSONDecodeError as e:
        raise CheckpointError(f"checkpoint {ref!r}: the metadata 'config' is not valid JSON: {e}") from None
    if not isinstance(configs, dict):
        raise CheckpointError(f"checkpoint {ref!r}: the metadata 'config' is not a JSON object")
    return configs


def hub_file_scheduler_config(ref: str) -> SchedulerConfig:
    """The scheduler of a hub single file (``org/name/file.safetensors[@revision]``) from its header alone
    (huggingface_hub reads the safetensors header with a range request): what the driver needs to pick the
    default pipeline, without downloading the weights."""
    from huggingface_hub import HfApi

    from .resolve import hub_error

    path, _, revision = ref.partition("@")
    parts = path.split("/")
    repo, filename = "/".join(parts[:2]), "/".join(parts[2:])
    try:
        header = HfApi().parse_safetensors_file_metadata(repo, filename, revision=revision or None)
    except Exception as e:  # noqa: BLE001 - sorted into the job's fault or the network's
        raise hub_error(f"checkpoint {ref!r}: cannot read the safetensors header", e) from None
    try:
        return detect_release(_configs(header.metadata or {}, ref, filename)).scheduler_config()
    except CheckpointError as e:
        raise CheckpointError(f"checkpoint {ref!r}: {e}") from None


def _read(fh, key: str, dtype: torch.dtype | None, storage: torch.dtype | None = None) -> torch.Tensor:
    """One tensor; float8 weights (the ``-fp8`` releases) are cast to the compute dtype as they are read, so
    a 13B fp8 file never holds a second, wider copy of every weight at once; with a ``storage`` dtype (float8
    storage of this weight) the tensor is cast to that instead (a no-op for an fp8 file)."""
    t = fh.get_tensor(key)
    if storage is not None:
        return to_float8(t, storage)
    if t.dtype in _FP8 and dtype is not None:
        t = t.to(dtype)
    return t
