"""Bad input from a user: a clear error naming the field and the contract's exit code, never a traceback, a
silent acceptance or exit 1 for the user's own mistake (cases from an adversarial review)."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from ltx_batch import load_job
from ltx_batch.cli import EXIT_FAILED_ROWS, EXIT_INVALID
from ltx_batch.cli import main as cli_main
from ltx_batch.io.metadata import metadata_key, read_metadata_many
from ltx_batch.io.rows import RowError, validate_row
from ltx_batch.io.storage import Storage
from ltx_batch.spec import SpecError

DEMO = {"model": {"preset": "ltxv-debug", "dtype": "float32", "device": "cpu"},
        "recipe": {"num_inference_steps": 2}, "defaults": {"width": 64, "height": 64, "num_frames": 9}}  # fmt: skip


def _job_file(tmp_path, **over) -> str:
    path = tmp_path / "job.json"
    path.write_text(json.dumps({**DEMO, "output": str(tmp_path / "out"), **over}))
    return str(path)


def _error(capsys) -> str:
    return capsys.readouterr().err


def test_render_reports_a_failed_write_as_a_failed_row(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "videos").write_text("a file where the videos folder goes")
    assert cli_main(["render", _job_file(tmp_path), "--prompt", "a cat"]) == EXIT_FAILED_ROWS
    err = _error(capsys)
    assert "failed in write" in err and "File exists" in err and "StageError" not in err, err


@pytest.mark.parametrize("key, value, named", [
    ("defaults.width", 33, "defaults.width must be a positive multiple of 32"),
    ("defaults.width", 32_000_000, "defaults.width must be a positive multiple of 32 up to 8192"),
    ("defaults.num_frames", 16, "defaults.num_frames must be 8k+1"),
    ("recipe.num_inference_steps", 10**30, "recipe.num_inference_steps must be in [1, 1000]"),
    ("recipe.max_sequence_length", 10**8, "recipe.max_sequence_length must be in [1, 4096]"),
    ("recipe.frame_rate", 1e300, "recipe.frame_rate must be > 0 and <= 1000"),
    ("recipe.guidance_rescale", -5, "recipe.guidance_rescale must be in [0, 1]"),
    ("recipe.decode_timestep", 2, "recipe.decode_timestep must be in [0, 1]"),
    ("recipe.decode_noise_scale", -0.1, "recipe.decode_noise_scale must be in [0, 1]"),
    ("recipe.image_cond_noise_scale", -1, "recipe.image_cond_noise_scale must be >= 0"),
    ("save", [], "save: name at least one"),
    ("output", "", "output: must not be empty"),
    ("input", " ", "input: must not be empty"),
    ("model.checkpoint", "/nope/x", "model.checkpoint: no such file or folder: '/nope/x'"),
    ("model.upsampler", "./nope", "model.upsampler: no such file or folder"),
    ("model.text_encoder", "~/nope-ltx-batch", "model.text_encoder: no such file or folder"),
    ("model.vae", "../nope/vae", "model.vae: no such file or folder"),
])  # fmt: skip
def test_job_values_a_render_cannot_survive_are_job_errors(tmp_path, capsys, key, value, named):
    spec = json.loads(open(_job_file(tmp_path)).read())
    node = spec
    *parents, leaf = key.split(".")
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = value
    with pytest.raises(SpecError) as e:
        load_job(spec)
    assert named in str(e.value), str(e.value)
    # the CLI says so with exit 2 (job files as JSON keep 1e300 a number)
    spec_file = tmp_path / "bad.json"
    spec_file.write_text(json.dumps(spec))
    assert cli_main(["validate", str(spec_file)]) == EXIT_INVALID
    assert named in _error(capsys)


def test_a_name_that_would_leave_outputs_is_refused_only_where_it_names_the_output(tmp_path):
    spec = {**DEMO, "name": "../../x"}
    with pytest.raises(SpecError, match="name: must be a non-empty name without '/'"):
        load_job(spec)  # the default output would be outputs/../../x
    assert load_job({**spec, "output": str(tmp_path / "out")}).name == "../../x"  # only a label then


def test_rows_are_bounded_too():
    defaults = {"width": 64, "height": 64, "num_frames": 9}
    for field, value in (("width", 8224), ("num_frames", 2057), ("frame_rate", -1), ("frame_rate", 1001)):
        with pytest.raises(RowError, match=field):
            validate_row({"id": "a", "prompt": "x", field: value}, defaults=defaults, frame_rate=25.0)
    assert validate_row({"id": "a", "prompt": "x", "width": 8192}, defaults=defaults, frame_rate=25.0).width == 8192


def test_job_file_mistakes(tmp_path, capsys):
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(bytes(range(256)))
    assert cli_main(["validate", str(binary)]) == EXIT_INVALID
    assert "is not UTF-8 text" in _error(capsys)
    numeric = tmp_path / "num.yaml"
    numeric.write_text("1: 2\n")
    assert cli_main(["validate", str(numeric)]) == EXIT_INVALID
    assert "unknown key 1; allowed keys" in _error(capsys)
    a_file = tmp_path / "afile"
    a_file.write_text("")
    assert cli_main(["validate", _job_file(tmp_path), "--output", str(a_file)]) == EXIT_INVALID
    assert "is a file" in _error(capsys)
    assert cli_main(["status", ""]) == EXIT_INVALID
    assert "OUTPUT: must not be empty" in _error(capsys)


def test_render_request_mistakes(tmp_path, capsys):
    job = _job_file(tmp_path)
    assert cli_main(["render", job, "--prompt", "x", "--id", ""]) == EXIT_INVALID
    assert "--id: must not be empty" in _error(capsys)
    assert cli_main(["render", job, "--prompt", "x", "--condition", "a.png@0:nan"]) == EXIT_INVALID
    assert "STRENGTH must be in [0, 1]" in _error(capsys)
    assert not (tmp_path / "out").exists()


def test_metadata_that_is_json_but_not_an_object_is_an_unfinished_row(tmp_path):
    storage = Storage(str(tmp_path))
    storage.write_bytes(metadata_key("x1"), b"[]")
    storage.write_bytes(metadata_key("x2"), json.dumps({"status": "ok"}).encode())
    assert read_metadata_many(storage, ["x1", "x2"]) == {"x2": {"status": "ok"}}


@pytest.mark.parametrize("row, named", [
    ({"id": "a", "prompt": "x", "seed": "5"}, "column 'seed': row 'a' holds '5', which is no int64"),
    ({"id": "a", "prompt": "x", "seed": 10**20}, "column 'seed': row 'a'"),
    ({"id": 1, "prompt": "x"}, "column 'id': row 1 holds 1, which is no string"),
    ({"id": "a", "prompt": ["x"]}, "column 'prompt': row 'a'"),
    ({"id": "a", "prompt": "x", "conditions": "ok.png"}, "column 'conditions': row 'a'"),
])  # fmt: skip
def test_manifest_verb_names_the_value_that_fits_no_column(tmp_path, capsys, row, named):
    src = tmp_path / "rows.jsonl"
    src.write_text(json.dumps(row) + "\n")
    assert cli_main(["manifest", str(src), "-o", str(tmp_path / "m.parquet")]) == EXIT_INVALID
    assert named in _error(capsys)
    assert not (tmp_path / "m.parquet").exists()


def test_manifest_verb_mixed_pass_through_types_and_bad_text(tmp_path, capsys):
    src = tmp_path / "rows.jsonl"
    src.write_text('{"id": "a", "prompt": "x", "lab": {"k": 1}}\n{"id": "b", "prompt": "y", "lab": "s"}\n')
    assert cli_main(["manifest", str(src), "-o", str(tmp_path / "m.parquet")]) == EXIT_INVALID
    assert "column 'lab': row 'b' holds 's'" in _error(capsys)
    txt = tmp_path / "p.txt"
    txt.write_bytes(b"\xff\xfe not utf-8\n")
    assert cli_main(["manifest", str(txt), "-o", str(tmp_path / "m.parquet")]) == EXIT_INVALID
    assert "is not UTF-8 text" in _error(capsys)
    # a good file still converts (the check is not a blanket refusal)
    src.write_text('{"id": "a", "prompt": "x", "lab": {"k": 1}}\n{"id": "b", "prompt": "y", "lab": {"k": 2}}\n')
    assert cli_main(["manifest", str(src), "-o", str(tmp_path / "m.parquet")]) == 0
    assert pq.read_table(tmp_path / "m.parquet").num_rows == 2


def test_submit_names_a_malformed_address(tmp_path, capsys):
    job = _job_file(tmp_path)
    for bad in ("ftp://head:8265", "http://", "head 8265"):
        code = cli_main(["submit", job, "--address", bad, "--input", "s3://b/m.parquet", "--output", "s3://b/o"])
        assert code == EXIT_INVALID
        assert f"--address {bad!r}" in _error(capsys)
    from ltx_batch.submit import check_address

    for good in ("http://head:8265", "https://ray.example.com/dashboard/", "http://[::1]:8265", "head",
                 "head:8265", "ray://head:10001", "auto"):  # fmt: skip
        check_address(good)  # what Ray's Jobs client takes passes


def test_status_names_an_unknown_run(tmp_path, capsys):
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "20260101T000000Z-abc123.parquet").write_bytes(b"")
    assert cli_main(["status", str(tmp_path), "--run-id", "nope"]) == 1
    err = _error(capsys)
    assert "no run 'nope'" in err and "latest runs: 20260101T000000Z-abc123" in err, err


def test_input_that_is_a_folder_is_named(tmp_path, capsys):
    (tmp_path / "folder").mkdir()
    assert cli_main(["validate", _job_file(tmp_path), "--input", str(tmp_path / "folder")]) == EXIT_INVALID
    assert "is no file; name one Parquet file" in _error(capsys)
