"""The run report: two rows really rendered (ltxv-debug on the CPU) and one invalid row, written through the
results table as ``run_job`` does, then ``report.html`` checked as text and in headless Chromium (Debian's
``chromium``, installed by ``.ci/run``; skipped with the reason when it is not on PATH)."""

from __future__ import annotations

import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from ltx_batch import Renderer, load_job
from ltx_batch.io.results import write_results
from ltx_batch.io.storage import Storage
from ltx_batch.pipeline import RunSummary
from ltx_batch.report import REPORT_KEY, STAGE_ORDER, write_report

PROMPT = 'A red <b>cat</b> & "dog" walk along a wet street'


def _record(result) -> dict:
    """A pipeline record for ``write_results`` from an in-process render."""
    return {"id": result.id, "row": json.dumps({"id": result.id, "seed": result.seed}), "fingerprint": "",
            "error_stage": result.error_stage, "error": result.error, "attempts": 1,
            "timings": json.dumps(result.seconds), "outputs": json.dumps(result.outputs)}  # fmt: skip


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report-out")
    job = load_job({
        "name": "report", "model": {"preset": "ltxv-debug", "dtype": "float32", "device": "cpu"},
        "recipe": {"num_inference_steps": 2}, "defaults": {"width": 64, "height": 64, "num_frames": 9},
        "output": str(out),
    })  # fmt: skip
    renderer = Renderer(job)
    results = [
        renderer.render({"id": "cat", "prompt": PROMPT, "seed": 7}),
        renderer.render({"id": "dog", "prompt": "A dog on a beach", "seed": 8}),
        renderer.render({"id": "bad", "prompt": "too wide", "width": 100}),  # not a multiple of 32
    ]
    assert [r.status for r in results] == ["ok", "ok", "failed"], [(r.error_stage, r.error) for r in results]
    storage = Storage(job.output)
    summary = RunSummary(run_id="20250101T000000Z-report", output=job.output, total=3, seconds=12.5)
    write_results(storage, job, summary, [_record(r) for r in results])
    url = write_report(storage, summary)  # what run_job calls after write_results
    path = out / REPORT_KEY
    assert url == storage.url(REPORT_KEY) and path.is_file()
    return path, summary


def test_report_content(report):
    path, summary = report
    text = path.read_text()
    assert 'src="videos/cat.mp4"' in text and 'src="videos/dog.mp4"' in text and "videos/bad" not in text
    for key in ("videos/cat.mp4", "videos/dog.mp4"):
        assert (path.parent / key).is_file()
    assert "A red &lt;b&gt;cat&lt;/b&gt; &amp; &quot;dog&quot;" in text and "<b>cat</b>" not in text
    assert "seed 7" in text and "seed 8" in text
    assert "<td>bad</td><td>validate</td>" in text and "width" in text
    assert summary.stage_seconds and all(f'data-stage="{s}"' in text for s in summary.stage_seconds)
    for external in ("http://", "https://", "<script", "<link", "@import"):  # viewable offline
        assert external not in text.replace('xmlns="http://www.w3.org/2000/svg"', ""), external


class _Dom(HTMLParser):
    def __init__(self):
        super().__init__()
        self.videos, self.svgs, self.bars, self.failure_rows, self._in_failures = [], 0, [], 0, False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "video":
            self.videos.append(a)
        elif tag == "svg":
            self.svgs += 1
        elif tag == "rect" and "bar" in (a.get("class") or "").split():
            self.bars.append(a.get("data-stage"))
        elif tag == "table" and "failures" in (a.get("class") or ""):
            self._in_failures = True
        elif tag == "tr" and self._in_failures:
            self.failure_rows += 1

    def handle_endtag(self, tag):
        if tag == "table":
            self._in_failures = False


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("chromium")
    if exe is None:
        pytest.skip("chromium is not on PATH (Debian: apt-get install -y chromium; .ci/run installs it)")
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-dev-shm-usage", "--hide-scrollbars", f"--user-data-dir={tmp_path / 'profile'}", *args]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180)


def test_report_in_chromium(report, tmp_path):
    path, summary = report
    url = path.resolve().as_uri()
    dump = _chromium(tmp_path, "--virtual-time-budget=5000", "--dump-dom", url)
    assert dump.returncode == 0, dump.stderr[-2000:]
    dom = _Dom()
    dom.feed(dump.stdout)
    assert sorted(v.get("src") for v in dom.videos) == ["videos/cat.mp4", "videos/dog.mp4"]
    assert all("controls" in v for v in dom.videos)
    assert dom.svgs >= 1 and dom.bars == [s for s in STAGE_ORDER if s in summary.stage_seconds]  # one bar per stage
    assert dom.failure_rows == 2  # header + the invalid row

    png = tmp_path / "report.png"
    shot = _chromium(tmp_path, "--virtual-time-budget=5000", f"--screenshot={png}", "--window-size=1200,900", url)
    assert shot.returncode == 0 and png.is_file(), shot.stderr[-2000:]
    from PIL import Image

    with Image.open(png) as img:
        assert img.size == (1200, 900)
        colors = img.convert("RGB").getcolors(maxcolors=1 << 20)
    assert png.stat().st_size > 10_000 and (colors is None or len(colors) > 50), "the screenshot looks blank"
