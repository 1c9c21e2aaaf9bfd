"""bench/gpu.py runs only where a GPU is lent, rarely: its ``--tiny --device cpu`` mode takes every code path
(shared random weights, ours against diffusers, the end-to-end renders) at toy widths, so a change that
breaks the script fails here instead of in the first minutes of a GPU session. Nothing about speed is
asserted: the numbers of a tiny CPU run mean nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_bench_runs_every_section_at_toy_size(tmp_path):
    pytest.importorskip("diffusers")
    env = {**os.environ, "LTX_BATCH_CACHE": str(tmp_path / "cache")}
    results = tmp_path / "RESULTS.md"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu.py"), "--tiny", "--device", "cpu", "--repeats", "1",
         "--results", str(results)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "failed:" not in out, out[-4000:]  # a section that raised leaves "<section> failed: ..." notes
    for row in ("| transformer step (CFG batch 2) |", "| VAE decode |", "| end to end s/video, ours writes no MP4 |"):
        assert row in out, f"missing row {row!r}:\n{out[-4000:]}"
    assert not results.exists()  # a tiny run never lands in the results file
