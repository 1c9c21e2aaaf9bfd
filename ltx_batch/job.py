"""The job spec: YAML/JSON in, frozen dataclasses out (the contract in DESIGN.md).

``load_job`` resolves a spec completely before anything runs: preset defaults, recipe defaults per
pipeline (diffusers' ``__call__`` defaults), ``--set`` overrides, ``--input`` / ``--output``. Unknown keys and
wrong types are errors that name the key; relative paths resolve against the current directory.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from .io.rows import frame_rate_problem, frames_problem, side_problem
from .models.tiling import DecodeTiling
from .spec import SpecError, check_keys, merge, parse_dataclass, set_path
from .weights.presets import get_preset
from .weights.errors import CheckpointError

STAGES = ("text_encode", "base_sample", "latent_upsample", "refine", "decode")
WEIGHT_DTYPES = ("float8_e4m3fn", "float8_e5m2")  # model.weight_dtype: storage of the transformer's Linear weights
MAX_STEPS = 1000  # the schedulers' 1000 training timesteps: more steps than that only repeat them
MAX_SEQUENCE_LENGTH = 4096  # prompt tokens; the released recipes use 128 or 256


@dataclass(frozen=True, kw_only=True, slots=True)
class LoraSpec:
    path: str  # hub id, folder or .safetensors file
    scale: float = 1.0


@dataclass(frozen=True, kw_only=True, slots=True)
class ModelSpec:
    preset: str | None = None  # a name from weights/presets.py
    checkpoint: str | None = None  # hub repo id | diffusers-layout folder | single .safetensors | fsspec URL
    upsampler: str | None = None  # set => multi-scale; "none" disables a preset's upsampler
    text_encoder: str | None = None  # folder/hub repo with text_encoder/ + tokenizer/, or a T5 model itself
    vae: str | None = None  # VAE override
    loras: tuple[LoraSpec, ...] = ()
    weight_dtype: str | None = None  # storage dtype of the transformer's Linear weights: WEIGHT_DTYPES
    dtype: Literal["float32", "float16", "bfloat16"] = "bfloat16"  # compute dtype
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # torch.compile the transformer's blocks (models/compile.py): how it runs, not what it computes, so it stays
    # out of the row fingerprint (fingerprint.py) but keys the per-process model cache (stages/models.py)
    compile: bool = False


@dataclass(frozen=True, kw_only=True, slots=True)
class RefineRecipe:
    num_inference_steps: int = 10
    timesteps: tuple[float, ...] | None = None  # overrides num_inference_steps
    denoise_strength: float = 0.4
    guidance_scale: float = 1.0
    guidance_rescale: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 < self.denoise_strength < 1.0:
            raise SpecError(
                f"recipe.multiscale.refine.denoise_strength must be in (0, 1), got {self.denoise_strength} "
                "(1 would discard the upsampled latents)"
            )
        _check_steps("recipe.multiscale.refine", self.num_inference_steps, self.timesteps)


@dataclass(frozen=True, kw_only=True, slots=True)
class MultiscaleRecipe:
    downscale: float = 0.6667  # base pass at this fraction of the target, rounded down to multiples of 32
    adain_factor: float = 0.0
    tone_map_compression_ratio: float = 0.0
    refine: RefineRecipe = field(default_factory=RefineRecipe)

    def __post_init__(self) -> None:
        if not 0.0 < self.downscale <= 1.0:
            raise SpecError(f"recipe.multiscale.downscale must be in (0, 1], got {self.downscale}")
        if not 0.0 <= self.tone_map_compression_ratio <= 1.0:
            raise SpecError(
                f"recipe.multiscale.tone_map_compression_ratio must be in [0, 1], got {self.tone_map_compression_ratio}"
            )


@dataclass(frozen=True, kw_only=True, slots=True)
class Recipe:
    pipeline: Literal["condition", "base"] = "condition"
    num_inference_steps: int = 50
    timesteps: tuple[float, ...] | None = None
    guidance_scale: float = 3.0  # <= 1 skips the unconditional pass
    guidance_rescale: float = 0.0
    image_cond_noise_scale: float = 0.15
    decode_timestep: float = 0.0
    decode_noise_scale: float | None = None  # None: decode_timestep, as diffusers
    max_sequence_length: int = 256  # condition pipeline 256, base pipeline 128 (diffusers' defaults)
    frame_rate: float = 25.0
    multiscale: MultiscaleRecipe = field(default_factory=MultiscaleRecipe)
    vae_tiling: DecodeTiling | None = None  # tiled decode (diffusers' vae.enable_tiling()); None: whole frames

    def __post_init__(self) -> None:
        _check_steps("recipe", self.num_inference_steps, self.timesteps)
        if self.guidance_scale < 0:
            raise SpecError(f"recipe.guidance_scale must be >= 0, got {self.guidance_scale}")
        _check_unit("recipe.guidance_rescale", self.guidance_rescale)
        _check_unit("recipe.decode_timestep", self.decode_timestep)
        if self.decode_noise_scale is not None:
            _check_unit("recipe.decode_noise_scale", self.decode_noise_scale)
        if self.image_cond_noise_scale < 0:
            raise SpecError(f"recipe.image_cond_noise_scale must be >= 0, got {self.image_cond_noise_scale}")
        if not 1 <= self.max_sequence_length <= MAX_SEQUENCE_LENGTH:
            raise SpecError(f"recipe.max_sequence_length must be in [1, {MAX_SEQUENCE_LENGTH}], "
                            f"got {self.max_sequence_length}")  # fmt: skip
        if problem := frame_rate_problem(self.frame_rate):
            raise SpecError(f"recipe.frame_rate {problem}")


def _check_unit(where: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise SpecError(f"{where} must be in [0, 1], got {value}")


def _check_steps(where: str, steps: int, timesteps) -> None:
    if not 1 <= steps <= MAX_STEPS:
        raise SpecError(f"{where}.num_inference_steps must be in [1, {MAX_STEPS}], got {steps}")
    if timesteps is not None:
        if not timesteps:
            raise SpecError(f"{where}.timesteps must not be empty")
        if any(b >= a for a, b in zip(timesteps, timesteps[1:])):
            raise SpecError(f"{where}.timesteps must be strictly decreasing, got {list(timesteps)}")
        if not all(0 <= t <= 1000 for t in timesteps):
            raise SpecError(f"{where}.timesteps must lie in [0, 1000], got {list(timesteps)}")


@dataclass(frozen=True, kw_only=True, slots=True)
class RowDefaults:
    """Values for the optional manifest columns a row leaves empty (its own values win). The frame rate's
    default is ``recipe.frame_rate``; a row's seed without one here is derived from its id."""

    width: int = 768
    height: int = 512
    num_frames: int = 121
    negative_prompt: str | None = None
    seed: int | None = None  # one seed for every row without its own (prompt studies); None: from the id

    def __post_init__(self) -> None:
        # SpecError: a default every row may take is the job's fault (exit 2), not each row's
        for name in ("width", "height"):
            if problem := side_problem(getattr(self, name)):
                raise SpecError(f"defaults.{name} {problem}")
        if problem := frames_problem(self.num_frames):
            raise SpecError(f"defaults.num_frames {problem}")
        if self.seed is not None and not 0 <= self.seed < 2**63:
            raise SpecError(f"defaults.seed must satisfy 0 <= seed < 2**63, got {self.seed}")

    def as_dict(self) -> dict[str, Any]:
        return {"width": self.width, "height": self.height, "num_frames": self.num_frames,
                "negative_prompt": self.negative_prompt, "seed": self.seed}  # fmt: skip


@dataclass(frozen=True, kw_only=True, slots=True)
class PoolSpec:
    num_gpus: float | None = None  # None: derived from the cluster (0 on a CPU-only cluster)
    num_cpus: float | None = None
    concurrency: int | tuple[int, ...] | None = None  # n, or [min, max]
    batch_size: int = 1

    def __post_init__(self) -> None:
        # ValueError, not SpecError: the spec parser prefixes the pool's path (pools.decode: batch_size ...)
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        for name in ("num_gpus", "num_cpus"):
            if (getattr(self, name) or 0) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        c = self.concurrency
        if isinstance(c, tuple):
            valid = len(c) == 2 and 1 <= c[0] <= c[1]
        else:
            valid = c is None or c >= 1
        if not valid:
            shown = list(c) if isinstance(c, tuple) else c
            raise ValueError(f"concurrency must be n >= 1 or [min, max] with 1 <= min <= max, got {shown}")


@dataclass(frozen=True, kw_only=True, slots=True)
class FusionSpec:
    base_refine: bool = False  # base sample + latent upsample + refine in one actor (one transformer copy)
    refine_decode: bool = False  # refine + decode in one actor (no hop for the final latents)
    # every stage in one actor pool sized by pools.base_sample: rows run whole, actors are data-parallel; the
    # other pools' settings and fusion flags then do not apply. None: on when the job runs without GPUs
    # (pools.uses_gpu; CPU cores gain nothing from the hops between stages)
    all_stages: bool | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class PoolsSpec:
    text_encode: PoolSpec = field(default_factory=PoolSpec)
    base_sample: PoolSpec = field(default_factory=PoolSpec)
    latent_upsample: PoolSpec = field(default_factory=PoolSpec)
    refine: PoolSpec = field(default_factory=PoolSpec)
    decode: PoolSpec = field(default_factory=PoolSpec)
    fusion: FusionSpec = field(default_factory=FusionSpec)


@dataclass(frozen=True, kw_only=True, slots=True)
class Job:
    name: str = "job"
    model: ModelSpec = field(default_factory=ModelSpec)
    recipe: Recipe = field(default_factory=Recipe)
    defaults: RowDefaults = field(default_factory=RowDefaults)
    input: str | None = None
    output: str = "outputs/job"
    save: tuple[Literal["mp4", "latents", "frames"], ...] = ("mp4",)
    storage_options: dict[str, Any] = field(default_factory=dict, repr=False)  # credentials: never in logs
    pools: PoolsSpec = field(default_factory=PoolsSpec)

    def __post_init__(self) -> None:
        if not self.save:
            raise SpecError("save: name at least one of mp4, latents, frames (otherwise nothing is kept)")

    @property
    def multiscale(self) -> bool:
        return self.model.upsampler is not None

    def run(self, *, address: str | None = None, overwrite: bool = False):
        """Render the manifest on Ray (``address``/``RAY_ADDRESS``, a Ray that ``ray start`` left on this machine,
        else a new local one); returns a ``RunSummary``."""
        from .pipeline import run_job

        return run_job(self, address=address, overwrite=overwrite)

    def submit(self, address: str, *, wait: bool = False, overwrite: bool = False):
        """Submit to a Ray cluster's Jobs API (``http://head:8265``); returns a ``Submission`` (its id, and
        with ``wait`` the final status and exit code)."""
        from . import submit as submission

        sub = submission.submit_job(self, address, overwrite=overwrite)
        return submission.wait(address, sub, follow=False) if wait else sub

    def render(self, request: dict[str, Any]):
        """One row in this process, without Ray; returns a ``RenderResult``."""
        from .render import render_one

        return render_one(self, request)

    def to_dict(self, *, redact: bool = True) -> dict[str, Any]:
        """The resolved job as plain data; storage options (credentials, endpoints) removed unless
        ``redact=False``: what is written to outputs and logs (DESIGN.md) never holds them."""
        data = asdict(self)
        if redact:
            data["storage_options"] = {}
        return data


def _read_spec(source: str | os.PathLike | dict) -> dict:
    if isinstance(source, dict):
        return source
    path = Path(source)
    try:
        text = path.read_text()
    except OSError as e:
        raise SpecError(f"job file {str(path)!r}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise SpecError(f"job file {str(path)!r} is not UTF-8 text (byte {e.start})") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as e:
        raise SpecError(f"job file {str(path)!r} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {e}") from None
    if not isinstance(data, dict):
        raise SpecError(f"job file {str(path)!r}: expected a mapping at the top level")
    return data


def _parse_set(item: str) -> tuple[str, Any]:
    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise SpecError(f"--set {item!r}: expected key.path=value")
    try:
        value = yaml.safe_load(raw)  # numbers, booleans, null and lists as YAML reads them
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def _local_path(value: str | None) -> str | None:
    if value is None or "://" in value:
        return value
    return str(Path(value).expanduser().resolve())


def _checkpoint_path(ref: str | None) -> str | None:
    """Local checkpoint paths become absolute (actors may run elsewhere); names, ids and URLs stay."""
    if isinstance(ref, str) and "://" not in ref and Path(ref).expanduser().exists():
        return _local_path(ref)
    return ref


def _missing_local(ref: str) -> bool:
    """A reference written as a local path (absolute, ./, ../ or ~) that names nothing: a typo, not a hub
    repo id (``org/name``), which would otherwise fail later as an unreachable download. A ``file://`` URL is
    taken as meant for the machines that read it (a cluster's shared mount) and checked there."""
    if not ref.startswith(("/", "./", "../", "~")):
        return False
    return not Path(ref).expanduser().exists()


def _lora_ref_ok(ref: str) -> bool:
    from .weights.resolve import is_hub_file_ref, is_hub_folder_ref

    local = Path(ref).expanduser()
    return bool(ref.strip()) and ("://" in ref or local.exists() or is_hub_folder_ref(ref) or is_hub_file_ref(ref))


def pipeline_default(checkpoint: str) -> str:
    """``base`` for a checkpoint whose scheduler uses dynamic shifting (0.9.0/0.9.1), else ``condition``."""
    from .weights.checkpoint import open_checkpoint
    from .weights.resolve import hub_scheduler_config, is_hub_file_ref, is_hub_folder_ref
    from .weights.single_file import hub_file_scheduler_config

    # on the driver, read one small JSON or a file header, never the weights
    if checkpoint.split("@")[0].endswith(".gguf"):
        return "condition"  # a GGUF file carries no scheduler: the 0.9.5+ flow-match defaults (weights/gguf.py)
    if is_hub_folder_ref(checkpoint):
        config = hub_scheduler_config(checkpoint)
    elif is_hub_file_ref(checkpoint):
        config = hub_file_scheduler_config(checkpoint)
    else:
        config = open_checkpoint(checkpoint).scheduler_config()
    return "base" if config.use_dynamic_shifting else "condition"


def load_job(
    source: str | os.PathLike | dict,
    *,
    sets: list[str] = (),
    input: str | None = None,
    output: str | None = None,
) -> Job:
    """Parse and fully resolve a job spec. Raises ``SpecError`` naming the bad key."""
    data = _read_spec(source)
    for item in sets:
        key, value = _parse_set(item)
        data = set_path(data, key, value)
    if input is not None:
        data = {**data, "input": input}
    if output is not None:
        data = {**data, "output": output}

    check_keys(Job, data, "")  # before anything reads the keys: a typo is named as one
    for key, kind in (("input", str), ("output", str), ("name", str), ("defaults", dict), ("recipe", dict),
                      ("model", dict)):  # fmt: skip
        if data.get(key) is not None and not isinstance(data[key], kind):
            raise SpecError(f"{key}: expected {'a string' if kind is str else 'a mapping'}, got {data[key]!r}")
    for key in ("input", "output"):
        if isinstance(data.get(key), str) and not data[key].strip():
            raise SpecError(f"{key}: must not be empty (a path or URL)")
    name = data.get("name")
    names_folder = data.get("output") is None  # the default output is outputs/NAME
    path_like = isinstance(name, str) and ("/" in name or "\\" in name or name in (".", ".."))
    if isinstance(name, str) and (not name.strip() or names_folder and path_like):
        raise SpecError(f"name: must be a non-empty name without '/' or '\\' (it names the default output "
                        f"folder outputs/NAME), got {name!r}")  # fmt: skip
    model = parse_dataclass(ModelSpec, data.get("model"), "model")
    if model.weight_dtype is not None and model.weight_dtype not in WEIGHT_DTYPES:
        raise SpecError(f"model.weight_dtype: expected null or one of {list(WEIGHT_DTYPES)}, got {model.weight_dtype!r}")
    for i, lora in enumerate(model.loras):
        if not _lora_ref_ok(lora.path):
            raise SpecError(f"model.loras[{i}].path: {lora.path!r} is no local file or folder, URL or hub repo id "
                            "(org/name or org/name/file.safetensors)")  # fmt: skip
    raw_recipe = {k: v for k, v in (data.get("recipe") or {}).items() if not (k == "pipeline" and v is None)}
    preset_recipe: dict = {}
    preset_defaults: dict = {}
    checkpoint, upsampler, text_encoder = model.checkpoint, model.upsampler, model.text_encoder
    if model.preset is not None:
        preset = get_preset(model.preset)
        preset_recipe, preset_defaults = preset.recipe, preset.defaults
        checkpoint = checkpoint or preset.checkpoint
        upsampler = upsampler or preset.upsampler
        text_encoder = text_encoder or preset.text_encoder
    if checkpoint is None:
        raise SpecError("model: set model.preset or model.checkpoint")
    if checkpoint.split("@")[0].endswith(".gguf"):
        absent = [k for k, v in (("model.vae", model.vae), ("model.text_encoder", text_encoder)) if v is None]
        if absent:
            raise SpecError(f"{', '.join(absent)}: a GGUF checkpoint holds only the transformer; name a folder, hub "
                            "repo or single file for the VAE, and one with text_encoder/ + tokenizer/ for the T5")
    if checkpoint.split("@")[0].endswith(".safetensors") and text_encoder is None:
        raise SpecError("model.text_encoder: a single-file checkpoint carries no T5; name a folder or hub repo with "
                        "text_encoder/ + tokenizer/ (e.g. PixArt-alpha/PixArt-XL-2-1024-MS)")
    if upsampler is not None and upsampler.lower() == "none":
        upsampler = None
    for key, ref in (("model.checkpoint", checkpoint), ("model.upsampler", upsampler),
                     ("model.text_encoder", text_encoder), ("model.vae", model.vae)):  # fmt: skip
        if ref is not None and _missing_local(ref):
            raise SpecError(f"{key}: no such file or folder: {ref!r} (local paths must exist where the job is "
                            "loaded; for a checkpoint only a cluster can read, name a hub repo or a URL, "
                            "file:// for a shared mount)")  # fmt: skip
    recipe = merge(preset_recipe, raw_recipe)
    if upsampler is None:  # single-scale: a preset's multi-scale settings do not apply
        recipe = {k: v for k, v in recipe.items() if k != "multiscale" or k in raw_recipe}
    pipeline = recipe.get("pipeline")
    if not pipeline and checkpoint.split("@")[0].endswith(".gguf") and model.vae:
        # a GGUF carries no scheduler: its release shows in the VAE's checkpoint (the stage reads it there too)
        try:
            pipeline = pipeline_default(_checkpoint_path(model.vae))
        except (CheckpointError, OSError):  # unreadable here (offline driver): the 0.9.5+ default, as for the file
            pipeline = "condition"
    pipeline = pipeline or pipeline_default(_checkpoint_path(checkpoint))
    base_defaults = {"pipeline": pipeline}
    if pipeline == "base":  # LTXPipeline's __call__ defaults differ from LTXConditionPipeline's
        base_defaults["max_sequence_length"] = 128
        if upsampler is not None:
            raise SpecError("recipe.pipeline: multi-scale (model.upsampler) needs pipeline: condition")
    recipe = merge(base_defaults, recipe)

    raw_model = dict(data.get("model") or {})
    raw_model.update(checkpoint=_checkpoint_path(checkpoint), upsampler=_checkpoint_path(upsampler),
                     text_encoder=_checkpoint_path(text_encoder), vae=_checkpoint_path(raw_model.get("vae")))
    if isinstance(raw_model.get("loras"), list):
        raw_model["loras"] = [{**lo, "path": _checkpoint_path(lo.get("path"))} if isinstance(lo, dict) else lo
                              for lo in raw_model["loras"]]  # fmt: skip
    resolved = {
        **data,
        "model": raw_model,
        "recipe": recipe,
        "defaults": merge(preset_defaults, data.get("defaults") or {}),
    }
    resolved["input"] = _local_path(resolved.get("input"))
    resolved["output"] = _local_path(resolved.get("output", "outputs/" + str(resolved.get("name", "job"))))
    out = resolved["output"]
    if isinstance(out, str) and "://" not in out and Path(out).is_file():
        raise SpecError(f"output: {out!r} is a file; name a folder (created if missing) or a URL")
    return parse_dataclass(Job, resolved, "")
