"""report.html without rendering: escaping, the gallery cap, a run with nothing rendered."""

from __future__ import annotations

from ltx_batch.pipeline import RunSummary
from ltx_batch.report import render_report, stage_chart, write_report


def _row(i: int, status: str = "ok", **extra) -> dict:
    return {"id": f"r{i:03d}", "status": status, "error_stage": None, "error": None, "seed": i,
            "paths": {"mp4": f"videos/r{i:03d}.mp4"} if status != "failed" else {},
            "seconds": {"decode": 1.0, "text_encode": 0.5} if status == "ok" else {}, **extra}  # fmt: skip


def test_gallery_cap_order_and_escaping():
    rows = [_row(i) for i in range(5)] + [_row(9, "failed", error_stage="decode", error="CUDA <OOM> & more")]
    meta = {"r000": {"prompt": "<script>alert(1)</script>"}}
    page = render_report(RunSummary(run_id="x", output="s3://b/o", seconds=10.0), rows, meta, max_videos=3)
    assert page.count("<video ") == 3 and "2 more videos" in page
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "CUDA &lt;OOM&gt; &amp; more" in page and "<td>r009</td><td>decode</td>" in page
    # pipeline order, whatever order the rows listed them in
    assert page.index('data-stage="text_encode"') < page.index('data-stage="decode"')


def test_nothing_rendered(tmp_path):
    from ltx_batch.io.storage import Storage

    storage = Storage(str(tmp_path))
    rows = [_row(1, "skipped"), _row(2, "failed", error_stage="validate", error="width: bad")]
    url = write_report(storage, RunSummary(run_id="y", output=str(tmp_path)), rows)  # metadata missing: no prompt
    page = (tmp_path / "report.html").read_text()
    assert url.endswith("/report.html") and "No stage timings" in page and 'src="videos/r001.mp4"' in page
    assert "rendered by an earlier run" in page
    assert stage_chart({}, 0).startswith("<p")
