"""The console script's exit path: ``entry`` leaves with ``os._exit`` (native thread pools of torch and pyarrow
sometimes abort a normal interpreter exit with 134), so the verb's exit code and its buffered output must
survive it. Run as a real process, as a user's shell runs ``ltx-batch``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def ltx_batch(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    code = "import sys; from ltx_batch.cli import entry; sys.argv = ['ltx-batch', *sys.argv[1:]]; entry()"
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_validate_exit_codes_and_output_survive_the_fast_exit(tmp_path):
    from ltx_batch.io.manifest import manifest_table, write_parquet

    write_parquet(manifest_table([{"id": "a", "prompt": "x"}, {"id": "b", "prompt": "y", "width": 100}]),
                  str(tmp_path / "m.parquet"))  # fmt: skip
    (tmp_path / "job.yaml").write_text(f"model: {{preset: ltxv-debug}}\ninput: {tmp_path / 'm.parquet'}\n"
                                       f"output: {tmp_path / 'out'}\n")  # fmt: skip
    for _ in range(3):  # the abort this guards against was intermittent
        bad_rows = ltx_batch("validate", "job.yaml", cwd=tmp_path)
        assert bad_rows.returncode == 3, bad_rows.stderr
        assert '"name"' in bad_rows.stdout  # the resolved job, printed to a pipe: flushed before os._exit
        assert "1 valid, 1 invalid" in bad_rows.stderr
        assert "width" in bad_rows.stderr  # the bad row's reason names the field
    missing = ltx_batch("validate", "nope.yaml", cwd=tmp_path)
    assert missing.returncode == 2 and "nope.yaml" in missing.stderr
