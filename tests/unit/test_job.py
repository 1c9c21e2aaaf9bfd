"""The job spec contract (DESIGN.md "Job spec"): strict keys and types, overrides, presets, recipe defaults."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ltx_batch.job import load_job
from ltx_batch.spec import SpecError
from ltx_batch.weights.presets import PRESETS

REPO = Path(__file__).resolve().parents[2]
DEBUG = {"model": {"preset": "ltxv-debug"}}


@pytest.fixture()
def offline(monkeypatch):
    """No network: huggingface_hub reads HF_HUB_OFFLINE at import, so set its constant too."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", "/nonexistent-ltx-batch-test-hub-cache")


def _error(spec, **kwargs) -> str:
    with pytest.raises(SpecError) as info:
        load_job(spec, **kwargs)
    return str(info.value)


# -- unknown keys and wrong types -----------------------------------------------------------------------------


def test_unknown_top_level_key():
    message = _error({**DEBUG, "modle": {}})
    assert "modle" in message and "'model'" in message and "'recipe'" in message


@pytest.mark.parametrize(
    "spec, key, allowed",
    [
        ({"recipe": {"multiscale": {"refine": {"foo": 1}}}}, "recipe.multiscale.refine.foo", "'denoise_strength'"),
        ({"recipe": {"multiscale": {"scale": 2}}}, "recipe.multiscale.scale", "'downscale'"),
        ({"recipe": {"steps": 8}}, "recipe.steps", "'num_inference_steps'"),
        ({"model": {"preset": "ltxv-debug", "precision": "fp16"}}, "model.precision", "'dtype'"),
        ({"pools": {"decode": {"gpus": 1}}}, "pools.decode.gpus", "'num_gpus'"),
        ({"model": {"preset": "ltxv-debug", "loras": [{"path": "x", "weight": 1.0}]}}, "model.loras[0].weight",
         "'scale'"),
    ],
)
def test_unknown_nested_key(spec, key, allowed):
    message = _error({**DEBUG, **spec} if "model" not in spec else spec)
    assert key in message and allowed in message


@pytest.mark.parametrize(
    "spec, field",
    [
        ({"recipe": {"num_inference_steps": "eight"}}, "recipe.num_inference_steps"),
        ({"recipe": {"num_inference_steps": 8.5}}, "recipe.num_inference_steps"),
        ({"recipe": {"guidance_scale": "high"}}, "recipe.guidance_scale"),
        ({"recipe": {"pipeline": "img2vid"}}, "recipe.pipeline"),
        ({"recipe": {"timesteps": [1000, "x"]}}, "recipe.timesteps[1]"),
        ({"recipe": "fast"}, "recipe"),
        ({"recipe": {"multiscale": {"refine": {"guidance_scale": [1]}}}}, "recipe.multiscale.refine.guidance_scale"),
        ({"recipe": {"frame_rate": float("nan")}}, "recipe.frame_rate"),  # YAML's .nan passes no range check
        ({"recipe": {"guidance_scale": float("inf")}}, "recipe.guidance_scale"),
        ({"defaults": {"width": 512.5}}, "defaults.width"),
        ({"save": "mp4"}, "save"),
        ({"save": ["mp4", "gif"]}, "save[1]"),
        ({"name": ["a"]}, "name"),
        ({"storage_options": ["key"]}, "storage_options"),
        ({"pools": {"refine": {"batch_size": "2"}}}, "pools.refine.batch_size"),
        ({"pools": {"refine": {"concurrency": [4, 1]}}}, "pools.refine: concurrency"),
        ({"pools": {"decode": {"concurrency": 0}}}, "pools.decode: concurrency"),
        ({"pools": {"decode": {"concurrency": [0, 2]}}}, "pools.decode: concurrency"),
        ({"pools": {"decode": {"concurrency": [1, 2, 3]}}}, "pools.decode: concurrency"),
        ({"pools": {"text_encode": {"batch_size": 0}}}, "pools.text_encode: batch_size"),
        ({"pools": {"base_sample": {"num_gpus": -1}}}, "pools.base_sample: num_gpus"),
        ({"pools": {"base_sample": {"num_cpus": -2}}}, "pools.base_sample: num_cpus"),
        ({"defaults": {"seed": -1}}, "defaults.seed must satisfy"),
        ({"defaults": {"negative_prompt": 3}}, "defaults.negative_prompt"),
    ],
)
def test_wrong_type_names_the_field(spec, field):
    assert field in _error({**DEBUG, **spec})


@pytest.mark.parametrize("spec, field", [({"output": 5}, "output"), ({"input": ["a"]}, "input"),
                                         ({"defaults": "small"}, "defaults")])  # fmt: skip
def test_wrong_type_before_parsing_names_the_field(spec, field):
    assert field in _error({**DEBUG, **spec})


@pytest.mark.parametrize(
    "model, field",
    [
        ({"preset": "ltxv-debug", "dtype": "float64"}, "model.dtype"),
        ({"preset": "ltxv-debug", "device": "tpu"}, "model.device"),
        ({"preset": "ltxv-debug", "loras": [{"path": "x", "scale": "big"}]}, "model.loras[0].scale"),
        ({"checkpoint": 7}, "model.checkpoint"),
        ({"preset": "ltxv-9000"}, "model.preset"),
        ({}, "model"),
    ],
)
def test_bad_model_names_the_field(model, field):
    assert field in _error({"model": model})


def test_unknown_preset_lists_the_known_ones():
    assert "ltxv-debug" in _error({"model": {"preset": "nope"}})


def test_refine_denoise_strength_one_is_an_error():
    message = _error({**DEBUG, "recipe": {"multiscale": {"refine": {"denoise_strength": 1.0}}}})
    assert "recipe.multiscale.refine.denoise_strength" in message
    job = load_job({**DEBUG, "recipe": {"multiscale": {"refine": {"denoise_strength": 0.999}}}})
    assert job.recipe.multiscale.refine.denoise_strength == 0.999


@pytest.mark.parametrize("timesteps", [[], [900, 1000], [1000, 1000], [2000, 10]])
def test_bad_timesteps(timesteps):
    assert "recipe.timesteps" in _error({**DEBUG, "recipe": {"timesteps": timesteps}})


def test_file_errors(tmp_path):
    assert "nope.yaml" in _error(str(tmp_path / "nope.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    assert "bad.yaml" in _error(str(bad))
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    assert "mapping" in _error(str(listy))


# -- overrides ------------------------------------------------------------------------------------------------


def test_set_overrides(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = tmp_path / "job.yaml"
    spec.write_text("model: {preset: ltxv-debug}\nrecipe: {num_inference_steps: 4}\nsave: [mp4]\n")
    job = load_job(str(spec), sets=["recipe.num_inference_steps=8", "save=[mp4, frames]",
                                    "recipe.multiscale.refine.guidance_scale=2", "model.dtype=float32",
                                    "recipe.decode_noise_scale=null", "storage_options.anon=true"])  # fmt: skip
    assert job.recipe.num_inference_steps == 8
    assert job.save == ("mp4", "frames")
    assert job.recipe.multiscale.refine.guidance_scale == 2.0
    assert job.model.dtype == "float32"
    assert job.recipe.decode_noise_scale is None
    assert job.storage_options == {"anon": True}
    # the file is untouched, and the overrides are strict too
    assert "num_inference_steps: 4" in spec.read_text()
    assert "recipe.bogus" in _error(str(spec), sets=["recipe.bogus=1"])
    assert "recipe.num_inference_steps" in _error(str(spec), sets=["recipe.num_inference_steps=many"])
    assert "key.path=value" in _error(str(spec), sets=["recipe.num_inference_steps"])
    assert "name" in _error(str(spec), sets=["name=x", "name.sub=1"])


def test_input_output_overrides(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    job = load_job({**DEBUG, "input": "in.parquet", "output": "out"})
    assert job.input == str(tmp_path / "in.parquet") and job.output == str(tmp_path / "out")  # against the cwd
    job = load_job({**DEBUG, "input": "in.parquet", "output": "out"},
                   input="s3://bucket/prompts.parquet", output="s3://bucket/renders")  # fmt: skip
    assert job.input == "s3://bucket/prompts.parquet" and job.output == "s3://bucket/renders"
    job = load_job({**DEBUG, "name": "nightly"})
    assert job.input is None and job.output == str(tmp_path / "outputs" / "nightly")


# -- presets and recipe defaults ------------------------------------------------------------------------------


def test_preset_fills_checkpoint_upsampler_recipe_defaults(offline):
    preset = PRESETS["ltxv-13b-0.9.7-dev"]
    job = load_job({"model": {"preset": "ltxv-13b-0.9.7-dev"}})
    assert job.model.checkpoint == preset.checkpoint and job.model.upsampler == preset.upsampler
    assert job.multiscale
    r = job.recipe
    assert (r.pipeline, r.num_inference_steps, r.guidance_scale, r.guidance_rescale) == ("condition", 30, 5.0, 0.7)
    assert (r.decode_timestep, r.decode_noise_scale, r.image_cond_noise_scale) == (0.05, 0.025, 0.0)
    assert (r.multiscale.refine.num_inference_steps, r.multiscale.refine.denoise_strength) == (10, 0.4)
    assert (job.defaults.width, job.defaults.height, job.defaults.num_frames) == (1152, 768, 161)


def test_job_recipe_wins_over_preset(offline):
    job = load_job({
        "model": {"preset": "ltxv-13b-0.9.7-dev", "checkpoint": "org/my-finetune", "upsampler": "org/my-upscaler"},
        "recipe": {"guidance_scale": 2.0, "multiscale": {"refine": {"num_inference_steps": 4}}},
        "defaults": {"num_frames": 9},
    })  # fmt: skip
    assert job.model.checkpoint == "org/my-finetune" and job.model.upsampler == "org/my-upscaler"
    r = job.recipe
    assert r.guidance_scale == 2.0 and r.guidance_rescale == 0.7 and r.num_inference_steps == 30
    assert r.multiscale.refine.num_inference_steps == 4 and r.multiscale.refine.denoise_strength == 0.4
    assert (job.defaults.width, job.defaults.height, job.defaults.num_frames) == (1152, 768, 9)


def test_distilled_preset_timesteps(offline):
    from ltx_batch.weights.presets import DISTILLED_BASE_TIMESTEPS, DISTILLED_REFINE_TIMESTEPS

    job = load_job({"model": {"preset": "ltxv-13b-0.9.8-distilled"}})
    assert job.recipe.timesteps == tuple(DISTILLED_BASE_TIMESTEPS)
    assert job.recipe.multiscale.refine.timesteps == tuple(DISTILLED_REFINE_TIMESTEPS)
    assert job.recipe.multiscale.tone_map_compression_ratio == 0.6 and job.recipe.multiscale.adain_factor == 1.0


@pytest.mark.parametrize("none", ["none", "None", "NONE"])
def test_upsampler_none_disables_the_presets(offline, none):
    job = load_job({"model": {"preset": "ltxv-13b-0.9.7-dev", "upsampler": none}})
    assert job.model.upsampler is None and not job.multiscale
    # the preset's multi-scale settings went with it; its base recipe stays
    assert job.recipe.multiscale.refine.guidance_scale == 1.0 and job.recipe.guidance_scale == 5.0


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_loads_offline(offline, name):
    job = load_job({"model": {"preset": name}})
    assert job.model.checkpoint == PRESETS[name].checkpoint
    assert job.multiscale == (PRESETS[name].upsampler is not None)


def test_max_sequence_length_defaults(offline, debug_dir):
    assert load_job({"model": {"checkpoint": str(debug_dir)}}).recipe.max_sequence_length == 256
    assert load_job({**DEBUG}).recipe.max_sequence_length == 256
    base = load_job({"model": {"checkpoint": str(debug_dir)}, "recipe": {"pipeline": "base"}})
    assert base.recipe.max_sequence_length == 128
    assert load_job({"model": {"preset": "ltxv-2b-0.9.1"}}).recipe.max_sequence_length == 128
    explicit = load_job({"model": {"preset": "ltxv-2b-0.9.1"}, "recipe": {"max_sequence_length": 200}})
    assert explicit.recipe.max_sequence_length == 200


def test_bare_checkpoint_gets_diffusers_call_defaults(debug_dir):
    r = load_job({"model": {"checkpoint": str(debug_dir)}}).recipe
    assert (r.pipeline, r.num_inference_steps, r.guidance_scale) == ("condition", 50, 3.0)
    assert r.image_cond_noise_scale == 0.15
    assert (r.decode_timestep, r.decode_noise_scale, r.frame_rate) == (0.0, None, 25.0)


@pytest.fixture()
def dynamic_shift_dir(debug_dir, tmp_path) -> Path:
    root = tmp_path / "ltxv-0.9.1-like"
    root.mkdir()
    shutil.copy(debug_dir / "model_index.json", root)
    shutil.copytree(debug_dir / "scheduler", root / "scheduler")
    path = root / "scheduler" / "scheduler_config.json"
    config = json.loads(path.read_text())
    config.update(use_dynamic_shifting=True, base_shift=0.95, max_shift=2.05, base_image_seq_len=1024,
                  max_image_seq_len=4096, shift_terminal=0.1)  # fmt: skip
    path.write_text(json.dumps(config))
    return root


def test_dynamic_shifting_checkpoint_defaults_to_base(dynamic_shift_dir, debug_dir):
    job = load_job({"model": {"checkpoint": str(dynamic_shift_dir)}})
    assert job.recipe.pipeline == "base" and job.recipe.max_sequence_length == 128
    assert job.model.checkpoint == str(dynamic_shift_dir)
    explicit = load_job({"model": {"checkpoint": str(dynamic_shift_dir)}, "recipe": {"pipeline": "condition"}})
    assert explicit.recipe.pipeline == "condition" and explicit.recipe.max_sequence_length == 256
    assert load_job({"model": {"checkpoint": str(debug_dir)}}).recipe.pipeline == "condition"


def test_relative_checkpoint_resolves_against_cwd(debug_dir, tmp_path, monkeypatch):
    shutil.copytree(debug_dir / "scheduler", tmp_path / "ckpt" / "scheduler")
    shutil.copy(debug_dir / "model_index.json", tmp_path / "ckpt")
    monkeypatch.chdir(tmp_path)
    assert load_job({"model": {"checkpoint": "ckpt"}}).model.checkpoint == str(tmp_path / "ckpt")


def test_relative_component_paths_resolve_against_cwd(tmp_path, monkeypatch):
    (tmp_path / "up").mkdir()
    monkeypatch.chdir(tmp_path)
    job = load_job({"model": {"preset": "ltxv-debug", "upsampler": "up", "vae": "up", "text_encoder": "up"}})
    m = job.model
    assert m.upsampler == m.vae == m.text_encoder == str(tmp_path / "up")


def test_loras_and_weight_dtype(tmp_path, monkeypatch):
    (tmp_path / "style.safetensors").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    job = load_job({"model": {"preset": "ltxv-debug", "weight_dtype": "float8_e4m3fn",
                              "loras": [{"path": "style.safetensors"}, {"path": "org/repo", "scale": -0.5}]}})  # fmt: skip
    assert job.model.weight_dtype == "float8_e4m3fn"
    assert [(lo.path, lo.scale) for lo in job.model.loras] == [(str(tmp_path / "style.safetensors"), 1.0),
                                                               ("org/repo", -0.5)]  # fmt: skip


@pytest.mark.parametrize("model, key", [({"loras": [{"path": "missing.safetensors"}]}, r"model.loras\[0\].path"),
                                        ({"loras": [{"path": " "}]}, r"model.loras\[0\].path"),
                                        ({"weight_dtype": "int4"}, "model.weight_dtype: expected null or one of")])
def test_bad_loras_and_weight_dtype_are_named(model, key, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SpecError, match=key):
        load_job({"model": {"preset": "ltxv-debug", **model}})


def test_model_compile_parses_and_stays_out_of_the_fingerprint():
    from ltx_batch.fingerprint import fingerprint
    from ltx_batch.io.rows import validate_row

    eager = load_job({"model": {"preset": "ltxv-debug"}})
    compiled = load_job({"model": {"preset": "ltxv-debug", "compile": True}})
    assert (eager.model.compile, compiled.model.compile) == (False, True)
    assert load_job({"model": {"preset": "ltxv-debug"}}, sets=["model.compile=true"]).model.compile is True
    assert compiled.to_dict()["model"]["compile"] is True
    row = validate_row({"id": "a", "prompt": "p"}, defaults={"width": 64, "height": 64, "num_frames": 9},
                       frame_rate=25.0)  # fmt: skip
    assert fingerprint(compiled, row) == fingerprint(eager, row)  # how it runs, not what it renders


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_model_compile_must_be_a_bool(value):
    with pytest.raises(SpecError, match="^model.compile: expected bool"):
        load_job({"model": {"preset": "ltxv-debug", "compile": value}})


def test_gguf_checkpoint_needs_vae_and_text_encoder(tmp_path):
    with pytest.raises(SpecError, match="model.vae, model.text_encoder: a GGUF checkpoint"):
        load_job({"model": {"checkpoint": str(tmp_path / "t.gguf")}})
    with pytest.raises(SpecError, match="^model.text_encoder: a GGUF checkpoint"):
        load_job({"model": {"checkpoint": "city96/LTX-Video-gguf/ltx-video-2b-v0.9-Q8_0.gguf", "vae": "x"}})
    job = load_job({"model": {"checkpoint": "city96/LTX-Video-gguf/ltx-video-2b-v0.9-Q8_0.gguf", "vae": "org/vae",
                              "text_encoder": "org/t5"}})  # fmt: skip
    assert job.recipe.pipeline == "condition"  # a GGUF file carries no scheduler: read nothing on the driver
    from ltx_batch.weights.resolve import is_hub_file_ref

    assert is_hub_file_ref("city96/LTX-Video-gguf/ltx-video-2b-v0.9-Q8_0.gguf@main")


def test_missing_local_checkpoint_is_a_clear_error(tmp_path, monkeypatch, offline):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SpecError, match=r"model.checkpoint: no such file or folder: '\./no-such-folder'"):
        load_job({"model": {"checkpoint": "./no-such-folder"}})


def test_bare_hub_checkpoint_offline_names_it(offline, tmp_path, capsys):
    """With no recipe.pipeline, the default needs the checkpoint's scheduler config: offline it cannot be had.
    That is the network's fault, not the job's: exit 1 (infrastructure), not 2 (invalid)."""
    from ltx_batch.cli import main
    from ltx_batch.weights.resolve import CheckpointUnavailable

    with pytest.raises(CheckpointUnavailable, match="ltx-batch-tests/no-such-repo"):
        load_job({"model": {"checkpoint": "ltx-batch-tests/no-such-repo"}})
    (tmp_path / "job.yaml").write_text("model: {checkpoint: ltx-batch-tests/no-such-repo}\n")
    assert main(["validate", str(tmp_path / "job.yaml")]) == 1
    assert "ltx-batch-tests/no-such-repo" in capsys.readouterr().err
    # with the pipeline stated nothing is fetched
    job = load_job({"model": {"checkpoint": "ltx-batch-tests/no-such-repo"}, "recipe": {"pipeline": "base"}})
    assert job.model.checkpoint == "ltx-batch-tests/no-such-repo" and job.recipe.max_sequence_length == 128


# -- output of the resolved job -------------------------------------------------------------------------------


def test_to_dict_removes_storage_options():
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    options = {"key": "AKIAEXAMPLE", "secret": secret, "client_kwargs": {"endpoint_url": "x"}}
    job = load_job({**DEBUG, "output": "s3://bucket/out", "storage_options": options})
    data = job.to_dict()
    assert data["storage_options"] == {}
    assert job.to_dict(redact=False)["storage_options"] == options  # submit hands the cluster the real ones
    text = json.dumps(data, default=str)
    assert secret not in text and "AKIAEXAMPLE" not in text
    assert job.storage_options["secret"] == secret  # still usable by the job itself
    assert job.to_dict(redact=False)["storage_options"]["secret"] == secret
    assert data["model"]["checkpoint"] == "ltxv-debug" and data["output"] == "s3://bucket/out"


def test_repr_does_not_leak_storage_options():
    job = load_job({**DEBUG, "storage_options": {"secret": "wJalrXUtnFEMI-EXAMPLE"}})
    assert "wJalrXUtnFEMI-EXAMPLE" not in repr(job) and "wJalrXUtnFEMI-EXAMPLE" not in str(job)


# -- the shipped job files ------------------------------------------------------------------------------------

JOB_FILES = sorted((REPO / "jobs").glob("*.y*ml")) + sorted((REPO / "jobs").glob("*.json"))


def test_there_are_job_files():
    assert any(p.name == "demo.yaml" for p in JOB_FILES)


@pytest.mark.parametrize("path", JOB_FILES, ids=lambda p: p.name)
def test_every_job_file_loads_offline(offline, path, monkeypatch):
    monkeypatch.chdir(REPO)
    job = load_job(str(path))
    assert job.model.checkpoint
    assert job.input is None or "://" in job.input or Path(job.input).is_absolute()
