"""Turning a checkpoint reference into a local path, once per node.

A reference is one of:
- ``ltxv-debug`` / ``ltxv-debug-upsampler``: the tiny random checkpoints, made on first use (``debug.py``);
- a local folder (diffusers layout) or a local ``.safetensors`` file;
- an fsspec URL (``s3://bucket/prefix``, ``gs://…``): copied into the node cache;
- a hub repo id ``org/name`` with an optional ``@revision``: huggingface_hub's snapshot download.

Every download runs under a file lock in the node cache, so the actors of one node fetch a checkpoint once
while the others wait, and a half-copied folder is never used (copies land in a temporary name first).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from .errors import CheckpointError

DEBUG_NAMES = ("ltxv-debug", "ltxv-debug-upsampler")
# the debug maker's version (``weights.debug``): bump when its configs change, so caches are not reused; kept
# here so a fingerprint of a debug job does not import the maker (and torch)
DEBUG_VERSION = 1
# org/name, or org/name/path/file.safetensors|.gguf for one file of a repo (single-file releases, GGUF
# quantisations, LoRA files), [@revision]
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(/[\w./-]+\.(safetensors|gguf))?(@[\w./-]+)?$")
# What a diffusers-layout snapshot needs; skips duplicate weight formats the repos also carry.
_HUB_PATTERNS = ["*.json", "*/*.json", "*/*.safetensors", "*/*.model", "*/*.txt", "*.safetensors"]


@dataclass(frozen=True, slots=True)
class Resolved:
    path: Path  # local folder or file
    revision: str  # hub commit, or a content digest for local and copied checkpoints; enters the fingerprint


@dataclass(frozen=True)
class ResolvedCheckpoint:
    """What every checkpoint format shares: the reference as written and where it resolved to."""

    ref: str
    resolved: Resolved

    @property
    def path(self) -> Path:
        return self.resolved.path

    @property
    def revision(self) -> str:
        return self.resolved.revision


def cache_root() -> Path:
    root = os.environ.get("LTX_BATCH_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "ltx_batch")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def node_lock(name: str) -> FileLock:
    locks = cache_root() / "locks"
    locks.mkdir(exist_ok=True)
    return FileLock(str(locks / (hashlib.sha256(name.encode()).hexdigest()[:16] + ".lock")))


def local_digest(path: Path) -> str:
    """A cheap identity for local checkpoints: names, sizes and config contents (not the weight bytes)."""
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        h.update(str(f.relative_to(path if path.is_dir() else path.parent)).encode())
        h.update(str(f.stat().st_size).encode())
        if f.suffix == ".json":
            h.update(f.read_bytes())
    return "local-" + h.hexdigest()[:16]


def resolve(ref: str, parts: tuple[str, ...] | None = None) -> Resolved:
    """A local path for ``ref`` (see the module docstring). Raises CheckpointError (a ValueError) naming ``ref``.

    ``parts`` limits a hub download to those component folders (a text-encode actor needs ``text_encoder``
    and ``tokenizer`` only; a 13B repo's transformer is tens of GB it never reads).
    """
    if not isinstance(ref, str) or not ref.strip():  # Path("") is the current folder: never a checkpoint
        raise CheckpointError(f"checkpoint {ref!r}: empty reference; name a preset, a folder, a file or a hub repo id")
    if ref in DEBUG_NAMES:
        from .debug import ensure_debug_checkpoint

        path = ensure_debug_checkpoint(ref)
        return Resolved(path, local_digest(path))
    if "://" in ref and not ref.startswith("file://"):
        return _from_url(ref)
    local = Path(ref.removeprefix("file://")).expanduser()
    if local.exists():
        return Resolved(local.resolve(), local_digest(local))
    if _HUB_ID.match(ref) and not ref.startswith((".", "/")):
        return _from_hub(ref, parts)
    raise CheckpointError(f"checkpoint {ref!r}: no such file or folder, and not a hub repo id (org/name[@revision])")


def _from_hub(ref: str, parts: tuple[str, ...] | None = None) -> Resolved:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    repo, _, revision = ref.partition("@")
    kwargs = {}
    if repo.count("/") > 1:  # org/name/subfolder.safetensors: one file of a repo
        parts = repo.split("/")
        repo, file = "/".join(parts[:2]), "/".join(parts[2:])
        kwargs["allow_patterns"] = [file]
    elif parts:
        kwargs["allow_patterns"] = ["*.json", *(f"{p}/*" for p in parts)]
    else:
        kwargs["allow_patterns"] = _HUB_PATTERNS
    with node_lock("hub:" + ref):
        try:
            folder = snapshot_download(repo, revision=revision or None, **kwargs)
        except (RepositoryNotFoundError, RevisionNotFoundError, LocalEntryNotFoundError) as e:
            # the reference cannot be had (no such repo or revision, or offline and not cached): name it, and say
            # that it was not found locally either, since a mistyped relative folder also looks like org/name
            raise CheckpointError(
                f"checkpoint {ref!r}: no such local file or folder, and hub repo {repo!r}"
                f"{' at ' + revision if revision else ''} is unavailable: {type(e).__name__}: {str(e).splitlines()[0]}"
            ) from e
    path = Path(folder)
    if repo != ref.partition("@")[0]:  # a single file of the repo
        path = path / kwargs["allow_patterns"][0]
        if not path.is_file():  # snapshot_download matches patterns: a missing file downloads nothing
            raise ValueError(f"checkpoint {ref!r}: hub repo {repo!r} has no file {kwargs['allow_patterns'][0]!r}")
    # snapshot folders are named after the commit hash: the exact revision for the fingerprint
    return Resolved(path, "hub-" + Path(folder).name)


def _from_url(url: str) -> Resolved:
    import fsspec

    fs, root = fsspec.core.url_to_fs(url)
    info = fs.info(root)
    tag = str(info.get("ETag") or info.get("etag") or info.get("mtime") or info.get("size"))
    key = hashlib.sha256(f"{url}|{tag}".encode()).hexdigest()[:20]
    dest = cache_root() / "remote" / key / Path(root.rstrip("/")).name
    with node_lock("url:" + url):
        if not dest.exists():
            tmp = dest.with_name(dest.name + ".partial")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.parent.mkdir(parents=True, exist_ok=True)
            if info["type"] == "directory":
                fs.get(root.rstrip("/") + "/", str(tmp), recursive=True)
            else:
                fs.get(root, str(tmp))
            tmp.rename(dest)
    return Resolved(dest, "url-" + key)


def revision_of(ref: str) -> str:
    """A checkpoint's identity for fingerprints, without downloading weights or asking the network.

    The debug checkpoints are named by their maker's version; local paths by ``local_digest``; URLs by their
    ETag; hub repos by the reference itself: pin ``org/name@commit`` to tie outputs to one commit (an
    unpinned reference follows the repo, and the commit actually used is recorded in each row's metadata).
    A hub repo's commit is deliberately not looked up here: any upstream commit, even to a README, would
    otherwise mark every finished row as changed.
    """
    if ref in DEBUG_NAMES:
        return f"{ref}-v{DEBUG_VERSION}"
    local = Path(ref.removeprefix("file://")).expanduser()
    if ("://" not in ref or ref.startswith("file://")) and local.exists():
        return local_digest(local)
    if "://" in ref:
        return _from_url(ref).revision
    return "hub:" + ref


def is_hub_folder_ref(ref: str) -> bool:
    """A hub repo id (``org/name[@rev]``) naming a whole diffusers-layout repo, not a local path or file."""
    if ref in DEBUG_NAMES or "://" in ref or Path(ref).expanduser().exists():
        return False
    return bool(_HUB_ID.match(ref)) and ref.partition("@")[0].count("/") == 1


def is_hub_file_ref(ref: str) -> bool:
    """A hub reference to one file of a repo (``org/name/file.safetensors[@rev]``), not a local path."""
    if ref in DEBUG_NAMES or "://" in ref or Path(ref).expanduser().exists():
        return False
    return bool(_HUB_ID.match(ref)) and ref.partition("@")[0].count("/") > 1


class CheckpointUnavailable(OSError):
    """A checkpoint that may well exist could not be reached (network, hub, credentials): exit 1, not 2."""


def hub_error(what: str, e: Exception) -> Exception:
    """A huggingface_hub failure as ours: ``CheckpointError`` (exit 2) when the hub answered that the repo,
    revision or file does not exist or is no safetensors file, ``CheckpointUnavailable`` (exit 1) when it could
    not be asked (offline and not cached, no connection, a server error) or a token is missing (gated)."""
    from huggingface_hub import errors

    from .errors import CheckpointError

    if isinstance(e, (errors.LocalEntryNotFoundError, errors.GatedRepoError)):  # subclasses of the "not found"s
        return CheckpointUnavailable(f"{what}: {e}")
    invalid = (errors.RepositoryNotFoundError, errors.RevisionNotFoundError, errors.EntryNotFoundError,
               errors.SafetensorsParsingError, errors.NotASafetensorsRepoError)  # fmt: skip
    if isinstance(e, invalid):
        return CheckpointError(f"{what}: {e}")
    return CheckpointUnavailable(f"{what}: {type(e).__name__}: {e}")


def hub_scheduler_config(ref: str):
    """The scheduler config of a hub repo, fetching that one JSON file (the driver needs nothing else)."""
    import json

    from huggingface_hub import hf_hub_download

    from ..sampling.schedules import SchedulerConfig

    repo, _, revision = ref.partition("@")
    try:
        with node_lock("hub:" + ref + ":scheduler"):
            path = hf_hub_download(repo, "scheduler/scheduler_config.json", revision=revision or None)
    except Exception as e:  # noqa: BLE001 - sorted into the job's fault or the network's
        raise hub_error(f"checkpoint {ref!r}: cannot read scheduler/scheduler_config.json", e) from None
    return SchedulerConfig.from_dict(json.loads(Path(path).read_text()))
