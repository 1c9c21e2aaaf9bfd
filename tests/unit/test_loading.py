"""The loading layer: diffusers-layout folders load exactly, strictly, in any dtype; references resolve or fail clearly.

Real files throughout: the ``ltxv-debug`` checkpoint the code under test makes, tampered copies of it, and
diffusers / transformers (test-only references) reading the same folders.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from ltx_batch.weights.checkpoint import open_checkpoint
from ltx_batch.weights.debug import make_debug_checkpoint
from ltx_batch.weights.resolve import resolve
from ltx_batch.weights.errors import CheckpointError

WEIGHTS = "diffusion_pytorch_model.safetensors"


def _same_state(ours: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> None:
    assert sorted(ours) == sorted(ref)
    for k, t in ref.items():
        assert ours[k].dtype == t.dtype, k
        assert ours[k].shape == t.shape, k
        assert torch.equal(ours[k], t), k


@pytest.fixture(scope="module")
def ckpt(debug_dir):
    return open_checkpoint(str(debug_dir))


# -- exact loading -----------------------------------------------------------------------------------------


def test_transformer_equals_diffusers(ckpt, debug_dir):
    from diffusers import LTXVideoTransformer3DModel

    ref = LTXVideoTransformer3DModel.from_pretrained(str(debug_dir), subfolder="transformer", torch_dtype=torch.float32)
    _same_state(ckpt.load_transformer(dtype=torch.float32).state_dict(), ref.state_dict())


def test_vae_equals_diffusers(ckpt, debug_dir):
    from diffusers import AutoencoderKLLTXVideo

    ref = AutoencoderKLLTXVideo.from_pretrained(str(debug_dir), subfolder="vae", torch_dtype=torch.float32)
    _same_state(ckpt.load_vae(dtype=torch.float32).state_dict(), ref.state_dict())


def test_text_encoder_equals_transformers(ckpt, debug_dir):
    from transformers import T5EncoderModel

    ref = T5EncoderModel.from_pretrained(str(debug_dir / "text_encoder"), dtype=torch.float32)
    ours = ckpt.load_text_encoder(dtype=torch.float32)
    _same_state(ours.model.state_dict(), ref.state_dict())
    assert ours.tokenizer("a cat").input_ids[-1] == 1  # the debug tokenizer, with its end-of-sequence token


def test_debug_upsampler_loads_and_equals_diffusers(debug_upsampler_dir):
    from diffusers.pipelines.ltx.modeling_latent_upsampler import LTXLatentUpsamplerModel

    ours = open_checkpoint("ltxv-debug-upsampler").load_upsampler(dtype=torch.float32)
    ref = LTXLatentUpsamplerModel.from_pretrained(str(debug_upsampler_dir), subfolder="latent_upsampler")
    _same_state(ours.state_dict(), ref.state_dict())
    # the bare model folder (no pipeline around it) loads too
    bare = open_checkpoint(str(debug_upsampler_dir / "latent_upsampler")).load_upsampler(dtype=torch.float32)
    _same_state(bare.state_dict(), ref.state_dict())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_any_dtype(ckpt, dtype):
    for load in (ckpt.load_transformer, ckpt.load_vae):
        full = load(dtype=torch.float32).state_dict()
        state = load(dtype=dtype).state_dict()
        for k, t in state.items():
            if full[k].is_floating_point():
                assert t.dtype == dtype, k
                assert torch.equal(t, full[k].to(dtype)), k
            assert t.device.type == "cpu" and not t.is_meta, k


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_text_encoder_dtype_as_transformers(ckpt, debug_dir, dtype):
    """T5 keeps its ``wo`` projections in float32 under float16 (transformers' rule); ours is transformers' model."""
    from transformers import T5EncoderModel

    ref = T5EncoderModel.from_pretrained(str(debug_dir / "text_encoder"), dtype=dtype)
    ours = ckpt.load_text_encoder(dtype=dtype)
    assert ours.dtype == dtype
    _same_state(ours.model.state_dict(), ref.state_dict())


# -- strictness: a tampered copy names what is wrong ----------------------------------------------------------


@pytest.fixture()
def transformer_copy(debug_dir, tmp_path) -> Path:
    """A checkpoint folder holding only a copy of the debug transformer."""
    shutil.copytree(debug_dir / "transformer", tmp_path / "ckpt" / "transformer")
    return tmp_path / "ckpt"


def _rewrite(folder: Path, edit) -> None:
    path = folder / "transformer" / WEIGHTS
    state = load_file(str(path))
    edit(state)
    save_file(state, str(path), metadata={"format": "pt"})


def _load_error(folder: Path) -> str:
    with pytest.raises(CheckpointError) as info:
        open_checkpoint(str(folder)).load_transformer(dtype=torch.float32)
    return str(info.value)


def test_missing_key_is_named(transformer_copy):
    _rewrite(transformer_copy, lambda s: s.pop("proj_out.weight"))
    message = _load_error(transformer_copy)
    assert "missing" in message and "proj_out.weight" in message


def test_unexpected_key_is_named(transformer_copy):
    _rewrite(transformer_copy, lambda s: s.__setitem__("extra.lora_A.weight", torch.zeros(2, 2)))
    message = _load_error(transformer_copy)
    assert "unexpected" in message and "extra.lora_A.weight" in message


def test_wrong_shape_is_named(transformer_copy):
    def edit(state):
        state["proj_out.weight"] = torch.zeros(state["proj_out.weight"].shape[0] + 1, state["proj_out.weight"].shape[1])

    _rewrite(transformer_copy, edit)
    message = _load_error(transformer_copy)
    assert "shape" in message and "proj_out.weight" in message


def test_unknown_config_key_is_named(transformer_copy):
    config_path = transformer_copy / "transformer" / "config.json"
    config = json.loads(config_path.read_text())
    config["mystery_switch"] = True
    config_path.write_text(json.dumps(config))
    assert "mystery_switch" in _load_error(transformer_copy)


def test_pickle_only_folder_is_refused(transformer_copy):
    folder = transformer_copy / "transformer"
    state = load_file(str(folder / WEIGHTS))
    (folder / WEIGHTS).unlink()
    torch.save(state, folder / "diffusion_pytorch_model.bin")
    assert "safetensors only" in _load_error(transformer_copy)


def test_no_weights_at_all(transformer_copy):
    (transformer_copy / "transformer" / WEIGHTS).unlink()
    assert "no safetensors" in _load_error(transformer_copy)


def test_missing_component_folder(transformer_copy):
    with pytest.raises(CheckpointError, match="vae/"):
        open_checkpoint(str(transformer_copy)).load_vae(dtype=torch.float32)


def test_not_a_checkpoint_folder(tmp_path):
    (tmp_path / "readme.txt").write_text("hello")
    with pytest.raises(CheckpointError, match="not a diffusers-layout folder"):
        open_checkpoint(str(tmp_path))


# -- sharded safetensors --------------------------------------------------------------------------------------


def test_sharded_by_diffusers_loads_identically(ckpt, debug_dir, tmp_path):
    from diffusers import AutoencoderKLLTXVideo, LTXVideoTransformer3DModel

    root = tmp_path / "sharded"
    LTXVideoTransformer3DModel.from_pretrained(str(debug_dir), subfolder="transformer").save_pretrained(
        str(root / "transformer"), max_shard_size="60KB"
    )
    AutoencoderKLLTXVideo.from_pretrained(str(debug_dir), subfolder="vae").save_pretrained(
        str(root / "vae"), max_shard_size="2MB"
    )
    for name in ("transformer", "vae"):
        assert (root / name / f"{WEIGHTS}.index.json").is_file()
        assert not (root / name / WEIGHTS).exists()
        assert len(list((root / name).glob("*.safetensors"))) > 1
    sharded = open_checkpoint(str(root))
    for name in ("transformer", "vae"):
        load, ref = getattr(sharded, f"load_{name}"), getattr(ckpt, f"load_{name}")
        _same_state(load(dtype=torch.float32).state_dict(), ref(dtype=torch.float32).state_dict())


def _write_shards(folder: Path, state: dict[str, torch.Tensor], groups: list[list[str]]) -> None:
    weight_map = {}
    for i, keys in enumerate(groups):
        name = f"diffusion_pytorch_model-{i + 1:05d}-of-{len(groups):05d}.safetensors"
        save_file({k: state[k] for k in keys}, str(folder / name), metadata={"format": "pt"})
        weight_map.update({k: name for k in keys})
    (folder / f"{WEIGHTS}.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def test_hand_written_shards(ckpt, transformer_copy):
    folder = transformer_copy / "transformer"
    state = load_file(str(folder / WEIGHTS))
    (folder / WEIGHTS).unlink()
    keys = sorted(state)
    _write_shards(folder, state, [keys[0::3], keys[1::3], keys[2::3]])
    loaded = open_checkpoint(str(transformer_copy)).load_transformer(dtype=torch.float32)
    _same_state(loaded.state_dict(), ckpt.load_transformer(dtype=torch.float32).state_dict())

    # a shard the index lists but the folder lacks is named
    (folder / "diffusion_pytorch_model-00002-of-00003.safetensors").unlink()
    assert "diffusion_pytorch_model-00002-of-00003.safetensors" in _load_error(transformer_copy)


def test_key_in_two_shards_is_an_error(transformer_copy):
    folder = transformer_copy / "transformer"
    state = load_file(str(folder / WEIGHTS))
    (folder / WEIGHTS).unlink()
    keys = sorted(state)
    _write_shards(folder, state, [keys, keys[:1]])
    assert keys[0] in _load_error(transformer_copy)


# -- the debug maker ------------------------------------------------------------------------------------------


def test_debug_maker_is_deterministic(tmp_path):
    a = make_debug_checkpoint("ltxv-debug", tmp_path / "a")
    b = make_debug_checkpoint("ltxv-debug", tmp_path / "b")
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert files_a == files_b
    weights = [f for f in files_a if f.suffix == ".safetensors"]
    assert {f.parts[0] for f in weights} == {"transformer", "vae", "text_encoder"}
    for f in files_a:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f


def test_debug_upsampler_maker_is_deterministic(tmp_path, debug_upsampler_dir):
    made = make_debug_checkpoint("ltxv-debug-upsampler", tmp_path / "u")
    rel = Path("latent_upsampler") / WEIGHTS
    assert (made / rel).read_bytes() == (debug_upsampler_dir / rel).read_bytes()


def test_debug_maker_refuses_existing_folder(tmp_path):
    (tmp_path / "x" / "transformer").mkdir(parents=True)
    with pytest.raises(FileExistsError):
        make_debug_checkpoint("ltxv-debug", tmp_path / "x")


# -- resolve --------------------------------------------------------------------------------------------------


@pytest.fixture()
def offline(monkeypatch):
    """No network: huggingface_hub reads HF_HUB_OFFLINE at import, so set its constant too."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_CACHE", "/nonexistent-ltx-batch-test-hub-cache")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", "/nonexistent-ltx-batch-test-hub-cache")


@pytest.mark.parametrize("ref", ["/nonexistent/ltx/checkpoint", "./no-such-folder", "not a reference!", "a/b/c d"])
def test_resolve_unusable_reference(offline, ref, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError) as info:
        resolve(ref)
    assert repr(ref) in str(info.value)


@pytest.mark.parametrize("ref", ["", "  "])
def test_resolve_empty_reference(offline, ref, tmp_path, monkeypatch):
    """An empty reference must not silently mean the current folder."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="checkpoint"):
        resolve(ref)


def test_resolve_uncached_hub_repo_offline(offline):
    with pytest.raises(ValueError) as info:
        resolve("ltx-batch-tests/no-such-repo@main")
    assert "ltx-batch-tests/no-such-repo" in str(info.value)


def test_resolve_local_folder_and_file(debug_dir, tmp_path):
    folder = resolve(str(debug_dir))
    assert folder.path == debug_dir.resolve() and folder.revision.startswith("local-")
    single = resolve("file://" + str(debug_dir / "transformer" / WEIGHTS))
    assert single.path.is_file()
    copy = tmp_path / "copy"
    shutil.copytree(debug_dir / "scheduler", copy / "scheduler")
    before = resolve(str(copy)).revision
    (copy / "scheduler" / "scheduler_config.json").write_text("{}")
    assert resolve(str(copy)).revision != before  # a changed config is a changed checkpoint


@pytest.fixture()
def answering_hub(monkeypatch, tmp_path):
    """A hub on loopback that answers every file request with 404: RepoNotFound for repos named *missing*,
    EntryNotFound for the rest (huggingface_hub reads the error kind from the X-Error-Code header)."""
    import http.server
    import threading

    import huggingface_hub.constants

    class Hub(http.server.BaseHTTPRequestHandler):
        def answer(self):
            self.send_response(404)
            self.send_header("X-Error-Code", "RepoNotFound" if "missing" in self.path else "EntryNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_HEAD = answer

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_port}"
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(huggingface_hub.constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        endpoint + "/{repo_id}/resolve/{revision}/{filename}")  # fmt: skip
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # the suite runs offline otherwise
    yield
    server.shutdown()


@pytest.mark.parametrize("ref", ["org/missing-repo", "org/repo-without-scheduler"])
def test_a_hub_that_answers_not_found_is_the_jobs_fault(answering_hub, ref, tmp_path, capsys):
    """The hub said the repo or file does not exist: exit 2 (invalid job); offline is exit 1 (see test_job)."""
    from ltx_batch.cli import main
    from ltx_batch.weights.resolve import CheckpointUnavailable, hub_scheduler_config

    with pytest.raises(CheckpointError, match=ref) as info:
        hub_scheduler_config(ref)
    assert not isinstance(info.value, CheckpointUnavailable)
    (tmp_path / "job.yaml").write_text(f"model: {{checkpoint: {ref}}}\n")
    assert main(["validate", str(tmp_path / "job.yaml")]) == 2
    assert ref in capsys.readouterr().err
