"""Output storage on any fsspec URL, with atomic writes and paths that cannot leave the output root.

Objects appear under their final name only when complete: object stores (S3, GCS) publish a single PUT
atomically; on file systems we write a temporary sibling and rename it. Keys are relative POSIX paths
checked against escapes (``..``, absolute paths), so a row id can never write outside ``output``.

Transient failures (the endpoint unreachable, timeouts, throttling, 5xx) are retried for up to
``RETRY_SECONDS`` with exponential backoff, beyond the few seconds the S3 client's own retries cover; any
other failure (and a transient one that outlasts the retries) is a ``StorageError`` naming the URL.
"""

from __future__ import annotations

import logging
import os
import posixpath
import re
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import fsspec

log = logging.getLogger(__name__)
T = TypeVar("T")

_OBJECT_STORES = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "memory"}
RETRY_SECONDS = 120.0  # how long a transient outage may last before an operation gives up
# Exception types (by name: botocore, aiohttp and gcsfs are optional) that mean "try again".
_TRANSIENT_TYPES = {"EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ConnectionClosedError",
                    "ClientConnectorError", "ServerDisconnectedError", "ClientOSError", "ClientPayloadError",
                    "ResponseStreamingError", "IncompleteReadError", "FSTimeoutError", "ProxyConnectionError"}  # fmt: skip
# Error codes of a service's answer (botocore's ClientError text, say); OSErrors are judged by type only, since
# their text holds paths ("shot-503.mp4")
_TRANSIENT_TEXT = re.compile(r"\b(SlowDown|ServiceUnavailable|InternalError|RequestTimeout|Throttl\w*|"
                             r"TooManyRequests|50[234])\b")  # fmt: skip
# definite answers: retrying cannot change them
_FINAL = (FileNotFoundError, PermissionError, FileExistsError, IsADirectoryError, NotADirectoryError, ValueError)
_ALIASES = {"s3a": "s3", "gcs": "gs", "abfss": "abfs", "https": "http", "local": "file"}


def protocol_of(url: str) -> str:
    protocol, _ = fsspec.core.split_protocol(url)
    return _ALIASES.get(protocol or "file", protocol or "file")


def options_for(url: str, job) -> dict[str, Any]:
    """The job's ``storage_options`` for a URL it reads besides its input and output (a condition): when the
    URL is on the same kind of storage as the input or output; with both local, for any remote storage but
    http(s). An S3 endpoint means nothing to an http server, and keys must not travel to another service."""
    if not job.storage_options:
        return {}
    own = {protocol_of(u) for u in (job.input, job.output) if u}
    target = protocol_of(url)
    if target in own or (own <= {"file"} and target not in ("file", "http")):
        return dict(job.storage_options)
    return {}


class StorageError(OSError):
    """A storage operation failed for good; the message names the URL (exit 1: infrastructure)."""


def is_transient(error: BaseException) -> bool:
    """Whether ``error`` (or an exception it wraps) is worth retrying."""
    seen = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, _FINAL):
            return False
        if isinstance(e, (ConnectionError, TimeoutError)) or type(e).__name__ in _TRANSIENT_TYPES:
            return True
        if not isinstance(e, OSError) and _TRANSIENT_TEXT.search(str(e)):
            return True
        e = e.__cause__ or e.__context__
    return False


def retrying(what: str, url: str, fn: Callable[[], T], *, missing_ok: bool = True,
             budget: float | None = None) -> T:  # fmt: skip
    """``fn()``, retried with backoff (1, 2, 4, ... 16 s) while it fails transiently, for ``budget`` seconds
    (``RETRY_SECONDS``). With ``missing_ok`` a FileNotFoundError passes through as it is (a read's "no such
    object", which callers use); for a write it is a failure like any other (no such bucket)."""
    deadline = time.monotonic() + (RETRY_SECONDS if budget is None else budget)
    delay = 1.0
    while True:
        try:
            return fn()
        except FileNotFoundError as e:
            if missing_ok:
                raise
            raise StorageError(f"{what} {url}: {type(e).__name__}: {e}") from e
        except Exception as e:
            if is_transient(e) and time.monotonic() + delay < deadline:
                log.warning("%s %s: %s: %s; retrying in %.0f s", what, url, type(e).__name__, e, delay)
                time.sleep(delay)
                delay = min(delay * 2, 16.0)
                continue
            if isinstance(e, (StorageError, TypeError, AttributeError, AssertionError)):
                raise  # already named, or a bug in the caller rather than a storage failure
            raise StorageError(f"{what} {url}: {type(e).__name__}: {e}") from e


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
        retrying("cannot write", self.url(key), lambda: self._write(key, data), missing_ok=False)

    def _write(self, key: str, data: bytes) -> None:
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
        return retrying("cannot read", self.url(key), lambda: self.fs.cat_file(self.path(key)))

    def read_many(self, keys: list[str], *, workers: int = 32) -> dict[str, bytes]:
        """``{key: bytes}`` for the keys that exist, read concurrently (one request each, ``workers`` at a
        time), so a re-run over thousands of finished rows is not one GET after another. Keys are read as
        exact paths (never glob patterns). A missing key is left out; any other read error raises (a denied
        read must not look like an unfinished row). The reads share one retry budget, and the first read that
        fails for good cancels the rest: an outage costs ``RETRY_SECONDS`` once, not once per key."""
        deadline = time.monotonic() + RETRY_SECONDS

        def read(key: str) -> bytes | None:
            try:
                return retrying("cannot read", self.url(key), lambda: self.fs.cat_file(self.path(key)),
                                budget=max(0.0, deadline - time.monotonic()))  # fmt: skip
            except FileNotFoundError:
                return None

        if not keys:
            return {}
        pool = ThreadPoolExecutor(max_workers=max(1, min(workers, len(keys))))
        try:
            got = dict(zip(keys, pool.map(read, keys)))
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return {k: v for k, v in got.items() if v is not None}

    def exists(self, key: str) -> bool:
        return retrying("cannot check", self.url(key), lambda: self.fs.exists(self.path(key)))

    def listdir(self, prefix: str) -> list[str]:
        """Names directly under ``prefix`` (empty when absent)."""
        path = self.path(prefix)

        def ls() -> list[str]:
            self.fs.invalidate_cache(path)  # fsspec caches listings per instance, and instances are shared
            return self.fs.ls(path, detail=False)

        try:
            return sorted(posixpath.basename(p.rstrip("/")) for p in retrying("cannot list", self.url(prefix), ls))
        except FileNotFoundError:
            return []
