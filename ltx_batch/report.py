"""The run report: ``report.html`` under the job's output, one self-contained page per run.

A gallery of the rendered videos (``<video>`` elements whose ``src`` is the relative ``videos/{id}.mp4``, so
the page works from a synced copy of the output folder or a static site over it), the per-stage seconds as
an inline SVG bar chart, and the failures table (id, stage, error). No scripts, stylesheets or fonts are
fetched: the page opens offline. Every text that comes from a manifest or an error is HTML-escaped.

``write_report(storage, summary)`` reads the run's results table (``results/{run_id}.parquet``) and the
metadata of the videos it shows (for their prompts); callers that already hold those pass them in.
"""

from __future__ import annotations

import html
import time
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import Any

from .io.metadata import read_metadata_many
from .io.results import read_results
from .io.rows import id_label, id_order
from .io.storage import Storage

REPORT_KEY = "report.html"
MAX_VIDEOS = 200  # the gallery's cap: a page with 50,000 players helps nobody; the results table has them all
MAX_FAILURES = 1000
STAGE_ORDER = ("text_encode", "base_sample", "latent_upsample", "refine", "decode")

_CSS = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#1d232a;background:#f6f7f9}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:28px 0 10px}
.muted{color:#5b6570}.summary span{display:inline-block;margin-right:18px}
.ok{color:#17803d}.failed{color:#b42318}.skipped{color:#5b6570}
.gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(260px,1fr));gap:14px}
figure{margin:0;background:#fff;border:1px solid #dde1e6;border-radius:6px;padding:8px}
video{width:100%;background:#000;border-radius:4px;display:block}
figcaption{margin-top:6px;font-size:13px;word-break:break-word}
figcaption .id{font-weight:600}
table{border-collapse:collapse;background:#fff;width:100%}
th,td{border:1px solid #dde1e6;padding:6px 8px;text-align:left;vertical-align:top;font-size:13px}
th{background:#eef0f3}td.err{font-family:ui-monospace,monospace;white-space:pre-wrap;word-break:break-word}
svg text{font:12px system-ui,sans-serif;fill:#1d232a}svg .bar{fill:#3b6fd8}
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _secs(x: float) -> str:
    return f"{x:.1f}" if x >= 10 else f"{x:.2f}" if x >= 0.1 else f"{x:.3f}"


def stage_totals(rows: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """Seconds per stage summed over the rows rendered in this run (status ok), in pipeline order."""
    totals: dict[str, float] = {}
    for r in rows:
        if r.get("status") == "ok":
            for stage, s in (r.get("seconds") or {}).items():
                totals[stage] = totals.get(stage, 0.0) + float(s)
    known = [s for s in STAGE_ORDER if s in totals]
    return {s: totals[s] for s in known + sorted(set(totals) - set(known))}


def stage_chart(totals: Mapping[str, float], videos: int) -> str:
    """Horizontal bars, one per stage (``<rect class="bar" data-stage=...>``), scaled to the largest."""
    if not totals:
        return '<p class="muted">No stage timings: no row was rendered in this run.</p>'
    label_w, bar_w, row_h, gap, value_w = 130, 420, 22, 8, 190
    width = label_w + bar_w + value_w
    height = len(totals) * (row_h + gap) + gap
    peak = max(totals.values()) or 1.0
    per = max(videos, 1)
    parts = [f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="seconds per stage">']  # fmt: skip
    for i, (stage, total) in enumerate(totals.items()):
        y = gap + i * (row_h + gap)
        w = max(1.0, bar_w * total / peak)
        text = f"{_secs(total)} s total, {_secs(total / per)} s/video"
        parts.append(
            f'<text x="{label_w - 8}" y="{y + row_h * 0.7:.1f}" text-anchor="end">{_e(stage)}</text>'
            f'<rect class="bar" data-stage="{_e(stage)}" x="{label_w}" y="{y}" width="{w:.1f}" height="{row_h}" '
            f'rx="3"><title>{_e(stage)}: {_e(text)}</title></rect>'
            f'<text x="{label_w + w + 6:.1f}" y="{y + row_h * 0.7:.1f}">{_e(text)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _gallery(rows: list[Mapping[str, Any]], metadata: Mapping[str, Mapping[str, Any]], limit: int) -> str:
    shown = [r for r in rows if r.get("status") in ("ok", "skipped") and (r.get("paths") or {}).get("mp4")]
    if not shown:
        return '<p class="muted">No videos in this run.</p>'
    items = []
    for r in shown[:limit]:
        meta = metadata.get(r["id"]) or {}
        src = urllib.parse.quote(r["paths"]["mp4"], safe="/._-")
        seed = r.get("seed") if r.get("seed") is not None else meta.get("seed")
        size = ""
        if meta.get("width"):
            size = f" · {meta['width']}x{meta['height']}x{meta.get('num_frames')}"
        note = ' <span class="skipped">(rendered by an earlier run)</span>' if r.get("status") == "skipped" else ""
        items.append(
            f'<figure><video src="{_e(src)}" controls muted loop preload="metadata" playsinline></video>'
            f'<figcaption><span class="id">{_e(r["id"])}</span>{note}<br>'
            f'<span class="prompt">{_e(meta.get("prompt", ""))}</span><br>'
            f'<span class="muted">seed {_e(seed)}{_e(size)}</span></figcaption></figure>'
        )
    more = len(shown) - limit
    tail = f'<p class="muted">{more} more videos under videos/ (not shown).</p>' if more > 0 else ""
    return '<div class="gallery">' + "".join(items) + "</div>" + tail


def _failures(rows: list[Mapping[str, Any]], limit: int) -> str:
    failed = [r for r in rows if r.get("status") == "failed"]
    if not failed:
        return '<p class="ok">No failures.</p>'
    body = "".join(
        f'<tr><td>{_e(id_label(r["id"]))}</td><td>{_e(r.get("error_stage"))}</td><td class="err">{_e(r.get("error"))}</td></tr>'
        for r in failed[:limit]
    )
    more = len(failed) - limit
    tail = f'<p class="muted">{more} more failures in the results table.</p>' if more > 0 else ""
    return ('<table class="failures"><thead><tr><th>id</th><th>stage</th><th>error</th></tr></thead>'
            f"<tbody>{body}</tbody></table>{tail}")  # fmt: skip


def render_report(summary, rows: list[Mapping[str, Any]], metadata_by_id: Mapping[str, Mapping[str, Any]], *,
                  max_videos: int = MAX_VIDEOS) -> str:  # fmt: skip
    """The page as a string. ``rows``: result rows as ``io.results.read_results`` returns them."""
    rows = sorted(rows, key=lambda r: id_order(r["id"]))
    totals = stage_totals(rows) or dict(getattr(summary, "stage_seconds", {}) or {})
    ok = sum(r.get("status") == "ok" for r in rows)
    failed = sum(r.get("status") == "failed" for r in rows)
    skipped = sum(r.get("status") == "skipped" for r in rows)
    seconds = float(getattr(summary, "seconds", 0.0) or 0.0)
    rate = ok * 3600.0 / seconds if seconds > 0 else 0.0
    results = getattr(summary, "results_path", "") or ""
    title = f"ltx-batch run {summary.run_id}"
    generated = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)}</title><style>{_CSS}</style></head>
<body>
<h1>{_e(title)}</h1>
<p class="muted">{_e(summary.output)} · generated {_e(generated)}</p>
<p class="summary"><span>{len(rows)} rows</span><span class="ok">{ok} ok</span>
<span class="failed">{failed} failed</span><span class="skipped">{skipped} skipped</span>
<span>{seconds:.1f} s</span><span>{rate:.1f} videos/hour</span></p>
{f'<p class="muted">results: {_e(results)}</p>' if results else ''}
<h2>Seconds per stage</h2>
<p class="muted">Summed over the {ok} row(s) rendered in this run; stages of different rows overlap in time.</p>
{stage_chart(totals, ok)}
<h2>Videos</h2>
{_gallery(rows, metadata_by_id, max_videos)}
<h2>Failures</h2>
{_failures(rows, MAX_FAILURES)}
</body></html>
"""


def write_report(storage: Storage, summary, rows: list[Mapping[str, Any]] | None = None,
                 metadata_by_id: Mapping[str, Mapping[str, Any]] | None = None, *,
                 max_videos: int = MAX_VIDEOS) -> str:  # fmt: skip
    """Write ``report.html`` for ``summary``'s run under ``storage``; returns its URL.

    ``rows`` default to the run's results table; prompts come from ``metadata_by_id`` or, for the videos
    the gallery shows, from ``metadata/{id}.json`` (a missing or unreadable one leaves the prompt blank).
    """
    if rows is None:
        _, rows = read_results(storage, summary.run_id)
    metadata = dict(metadata_by_id or {})
    wanted = [r["id"] for r in sorted(rows, key=lambda r: id_order(r["id"]))
              if r.get("status") in ("ok", "skipped") and (r.get("paths") or {}).get("mp4")][:max_videos]  # fmt: skip
    missing = [row_id for row_id in wanted if row_id not in metadata]
    try:
        found = read_metadata_many(storage, missing)
    except (OSError, ValueError):
        found = {}
    for row_id in missing:
        metadata[row_id] = found.get(row_id) or {}
    page = render_report(summary, rows, metadata, max_videos=max_videos)
    storage.write_bytes(REPORT_KEY, page.encode("utf-8"))
    return storage.url(REPORT_KEY)
