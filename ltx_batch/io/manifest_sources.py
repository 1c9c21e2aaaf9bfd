"""``ltx-batch manifest``: a Parquet manifest from a .txt, .csv or .jsonl file, validated on the way.

- ``.txt``: one prompt per line (blank lines and ``#`` comments skipped); the id is derived from the prompt
  (``p-`` + 12 hex digits of its sha256, ``-2``, ``-3``... for repeats), so appending lines to a growing
  file keeps every existing id: a scheduled run over the rebuilt manifest renders only the new rows.
- ``.csv``: manifest columns by name; ``conditions`` as a JSON list; empty cells are nulls.
- ``.jsonl``: one manifest row (an object) per line.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from typing import Any

from ..spec import SpecError
from .manifest import ManifestError, manifest_base, manifest_table, write_parquet
from .rows import RowError, validate_row

_INT_COLUMNS = ("width", "height", "num_frames", "seed")


def prompt_id(prompt: str, seen: dict[str, int]) -> str:
    base = "p-" + hashlib.sha256(prompt.encode()).hexdigest()[:12]
    seen[base] = seen.get(base, 0) + 1
    return base if seen[base] == 1 else f"{base}-{seen[base]}"


def _read_text(source: str) -> str:
    import fsspec

    try:
        with fsspec.open(source, "rt", encoding="utf-8") as fh:
            return fh.read()
    except UnicodeDecodeError as e:
        raise ManifestError(f"{source!r} is not UTF-8 text (byte {e.start})") from None


def _from_txt(text: str) -> list[dict[str, Any]]:
    seen: dict[str, int] = {}
    rows = []
    for line in text.splitlines():
        prompt = line.strip()
        if prompt and not prompt.startswith("#"):
            rows.append({"id": prompt_id(prompt, seen), "prompt": prompt})
    return rows


def _from_csv(text: str) -> list[dict[str, Any]]:
    rows = []
    for n, raw in enumerate(csv.DictReader(io.StringIO(text)), start=2):
        row: dict[str, Any] = {}
        for k, v in raw.items():
            if k is None:
                raise ManifestError(f"csv line {n}: more cells than header columns")
            if v is None or v == "":
                row[k] = None
            elif k == "conditions":
                try:
                    row[k] = json.loads(v)
                except json.JSONDecodeError as e:
                    raise ManifestError(f"csv line {n}: conditions is not a JSON list: {e}") from None
            elif k in _INT_COLUMNS:
                try:
                    row[k] = int(v)
                except ValueError:
                    row[k] = v  # validation names the field
            elif k == "frame_rate":
                try:
                    row[k] = float(v)
                except ValueError:
                    row[k] = v
            else:
                row[k] = v
        rows.append(row)
    return rows


def _from_jsonl(text: str) -> list[dict[str, Any]]:
    rows = []
    for n, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ManifestError(f"jsonl line {n}: {e}") from None
            if not isinstance(obj, dict):
                raise ManifestError(f"jsonl line {n}: expected an object, got {type(obj).__name__}")
            rows.append(obj)
    return rows


def load_rows(source: str) -> list[dict[str, Any]]:
    suffix = source.rsplit(".", 1)[-1].lower()
    readers = {"txt": _from_txt, "csv": _from_csv, "jsonl": _from_jsonl}
    if suffix not in readers:
        raise SpecError(f"manifest source {source!r}: expected a .txt, .csv or .jsonl file")
    return readers[suffix](_read_text(source))


def build_manifest(source: str, output: str, *, defaults_from: str | None = None) -> tuple[int, list[str]]:
    """Write ``output`` from ``source``; returns (rows written, problems found in individual rows)."""
    rows = load_rows(source)
    if not rows:
        raise ManifestError(f"{source!r} holds no rows")
    ids = [r.get("id") for r in rows]
    if any(i is None for i in ids):
        raise ManifestError(f"{source!r}: every row needs an id (only .txt sources derive them)")
    dups = sorted({i for i in ids if ids.count(i) > 1})
    if dups:
        raise ManifestError(f"{source!r}: duplicate id(s): {', '.join(map(str, dups[:10]))}")
    if defaults_from:
        from ..job import load_job

        job = load_job(defaults_from)
        defaults = job.defaults.as_dict()
        rate = job.recipe.frame_rate
    else:
        defaults, rate = {"width": 768, "height": 512, "num_frames": 121}, 25.0
    problems = []
    for r in rows:
        try:
            validate_row(r, defaults=defaults, frame_rate=rate, base_uri=manifest_base(output))
        except RowError as e:
            problems.append(f"row {r.get('id')!r}: {e}")
    write_parquet(manifest_table(rows), output)
    return len(rows), problems
