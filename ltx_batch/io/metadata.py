"""Reading rows' metadata files (``metadata/{id}.json``, written last by ``io.outputs``): how the driver
tells finished rows from the rest. Apart from the writer so the driver and ``status`` do not import torch."""

from __future__ import annotations

import json
import logging
from typing import Any

from .storage import Storage

log = logging.getLogger(__name__)


def metadata_key(row_id: str) -> str:
    return f"metadata/{row_id}.json"


def read_metadata_many(storage: Storage, row_ids: list[str], *, chunk: int = 2000) -> dict[str, dict[str, Any]]:
    """``{id: metadata}`` for the rows that have a readable metadata file, fetched concurrently
    (``Storage.read_many``) a chunk at a time. A file that is not a JSON object (a torn write by another tool)
    is logged and left out: its row counts as unfinished."""
    out: dict[str, dict[str, Any]] = {}
    for start in range(0, len(row_ids), chunk):
        ids = row_ids[start : start + chunk]
        got = storage.read_many([metadata_key(i) for i in ids])
        for i in ids:
            data = got.get(metadata_key(i))
            if data is None:
                continue
            try:
                meta = json.loads(data)
            except ValueError as e:
                log.warning("metadata of row %s is not valid JSON (%s): treated as unfinished", i, e)
                continue
            if isinstance(meta, dict):
                out[i] = meta
            else:  # JSON, but not what this tool writes
                log.warning("metadata of row %s is not a JSON object: treated as unfinished", i)
    return out
