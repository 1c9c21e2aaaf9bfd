"""Output storage on any fsspec URL, with atomic writes and paths that cannot leave the output root.

Objects appear under their final name only when complete: object stores (S3, GCS) publish a single PUT
atomically; on file systems we write a temporary sibling and rename it. Keys are relative POSIX paths
checked against escapes (``..``, absolute paths), so a row id can never write outside ``output``.
"""

from __future__ import annotations

import os
import posixpath
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import fsspec

_OBJECT_STORES = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "memory"}


def safe_key(key: str) -> str:
    """``key`` normalised, or ValueError when it would escape the root."""
    if not key or key.startswith(("/", "\\")) or "\\" in key or "\x00" in key:
        raise ValueError(f"invalid output key {key!r}")
    norm = posixpath.normpath(key)
    if norm.startswith("..") or norm in (".", "") or norm != key.rstrip("/"):
        raise ValueError(f"invalid output key {key!r}")
    return norm


class Storage:
    """The output root of a job: ``Storage("s3://bucket/prefix")`` or a local folder."""

    def __init__(self, root: str, storage_options: dict[str, Any] | None = None):
        self.root_url = root.rstrip("/")
        self.fs, self.root = fsspec.core.url_to_fs(self.root_url, **(storage_options or {}))
        protocols = self.fs.protocol if isinstance(self.fs.protocol, (tuple, list)) else (self.fs.protocol,)
        self.is_object_store = bool(set(protocols) & _OBJECT_STORES)

    def path(self, key: str) -> str:
        return posixpath.join(self.root, safe_key(key))

    def url(self, key: str) -> str:
        return f"{self.root_url}/{safe_key(key)}"

    def write_bytes(self, key: str, data: bytes) -> None:
        target = self.path(key)
        parent = posixpath.dirname(target)
        if self.is_object_store:
            self.fs.pipe_file(target, data)
            return
        self.fs.makedirs(parent, exist_ok=True)
        tmp = posixpath.join(parent, f".{posixpath.basename(target)}.{uuid.uuid4().hex}.partial")
        try:
            self.fs.pipe_file(tmp, data)
            if self.fs.protocol in ("file", ("file", "local")) or "file" in self.fs.protocol:
                os.replace(tmp, target)  # atomic on POSIX, replaces an older object
            else:
                self.fs.mv(tmp, target)
        except BaseException:
            try:
                self.fs.rm_file(tmp)
            except (FileNotFoundError, OSError):
                pass
            raise

    def read_bytes(self, key: str) -> bytes:
        return self.fs.cat_file(self.path(key))

    def read_many(self, keys: list[str], *, workers: int = 32) -> dict[str, bytes]:
        """``{key: bytes}`` for the keys that exist, read concurrently (one request each, ``workers`` at a
        time), so a re-run over thousands of finished rows is not one GET after another. Keys are read as
        exact paths (never glob patterns). A missing key is left out; any other read error raises (a denied
        read must not look like an unfinished row)."""
        def read(key: str) -> bytes | None:
            try:
                return self.fs.cat_file(self.path(key))
            except FileNotFoundError:
                return None

        if not keys:
            return {}
        with ThreadPoolExecutor(max_workers=max(1, min(workers, len(keys)))) as pool:
            got = dict(zip(keys, pool.map(read, keys)))
        return {k: v for k, v in got.items() if v is not None}

    def exists(self, key: str) -> bool:
        return self.fs.exists(self.path(key))

    def listdir(self, prefix: str) -> list[str]:
        """Names directly under ``prefix`` (empty when absent)."""
        path = self.path(prefix)
        self.fs.invalidate_cache(path)  # fsspec caches listings per instance, and instances are shared
        try:
            return sorted(posixpath.basename(p.rstrip("/")) for p in self.fs.ls(path, detail=False))
        except FileNotFoundError:
            return []
