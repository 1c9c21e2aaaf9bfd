"""``ltx-batch manifest``: .txt / .csv / .jsonl sources -> validated Parquet manifests."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from ltx_batch.cli import main as cli_main
from ltx_batch.io.manifest import ManifestError, read_manifest
from ltx_batch.io.manifest_sources import build_manifest


def test_txt_ids_are_stable_when_the_file_grows(tmp_path):
    src = tmp_path / "prompts.txt"
    src.write_text("# nightly prompts\na cat\n\na dog\na cat\n")
    build_manifest(str(src), str(tmp_path / "m1.parquet"))
    first = read_manifest(str(tmp_path / "m1.parquet"))
    assert [r["prompt"] for r in first] == ["a cat", "a dog", "a cat"]
    assert first[2]["id"] == first[0]["id"] + "-2"
    src.write_text(src.read_text() + "a bird\n")
    build_manifest(str(src), str(tmp_path / "m2.parquet"))
    second = read_manifest(str(tmp_path / "m2.parquet"))
    assert [r["id"] for r in second[:3]] == [r["id"] for r in first] and len(second) == 4


def test_csv_and_jsonl_keep_types_and_conditions(tmp_path):
    csv = tmp_path / "rows.csv"
    csv.write_text('id,prompt,width,seed,conditions,label\n'
                   'a,first,256,5,"[{""uri"": ""img.png"", ""frame_index"": 0}]",x\n'
                   'b,second,,,,y\n')  # fmt: skip
    n, problems = build_manifest(str(csv), str(tmp_path / "c.parquet"))
    assert (n, problems) == (2, [])
    table = pq.read_table(tmp_path / "c.parquet")
    assert str(table.schema.field("width").type) == "int64"
    rows = table.to_pylist()
    assert rows[0]["conditions"][0]["uri"] == "img.png" and rows[1]["width"] is None and rows[0]["label"] == "x"

    jsonl = tmp_path / "rows.jsonl"
    jsonl.write_text(json.dumps({"id": "j", "prompt": "p", "num_frames": 10}) + "\n")
    n, problems = build_manifest(str(jsonl), str(tmp_path / "j.parquet"))
    assert n == 1 and len(problems) == 1 and "num_frames" in problems[0]


def test_bad_sources_fail_naming_the_problem(tmp_path):
    dup = tmp_path / "dup.jsonl"
    dup.write_text('{"id": "a", "prompt": "x"}\n{"id": "a", "prompt": "y"}\n')
    with pytest.raises(ManifestError, match="duplicate id"):
        build_manifest(str(dup), str(tmp_path / "o.parquet"))
    noid = tmp_path / "noid.csv"
    noid.write_text("prompt\nhello\n")
    with pytest.raises(ManifestError, match="needs an id"):
        build_manifest(str(noid), str(tmp_path / "o.parquet"))


def test_cli_manifest_strict_exit_code(tmp_path, capsys):
    src = tmp_path / "rows.jsonl"
    src.write_text('{"id": "ok", "prompt": "fine"}\n{"id": "bad", "prompt": "x", "width": 100}\n')
    out = tmp_path / "m.parquet"
    assert cli_main(["manifest", str(src), "-o", str(out)]) == 0
    assert cli_main(["manifest", str(src), "-o", str(out), "--strict"]) == 2
    assert "width" in capsys.readouterr().err
    assert cli_main(["manifest", str(tmp_path / "x.xlsx"), "-o", str(out)]) == 2
