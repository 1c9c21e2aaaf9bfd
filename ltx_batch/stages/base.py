"""The stage contract: a callable class that Ray runs as an actor pool, or that runs in-process.

- The constructor keeps the job; on an actor (``eager``, Ray Data builds it there from the class) it also
  loads the weights, so every pool warms up at once. ``setup()`` loads them, else on first use.
- ``__call__(batch)`` takes a Ray Data numpy batch (dict of column arrays) or a list of records, and returns
  the same kind. Rows that already failed pass through untouched. Live rows are grouped (``group``) and
  each group is processed together (``process``); when a group raises, its rows are retried one at a time,
  so one bad row (or an out-of-memory on a large batch) fails only itself, with this stage's name and the
  message. Nothing is dropped.
- Model work runs inside ``model_work(rows)``: it holds the actor's compute lock and counts a try for those
  rows (``AttemptCounter``) until it ends. A row still counted after its actor died was in the model when
  it died; after ``MAX_ATTEMPTS`` such deaths it fails. Rows waiting for the lock or writing files are not
  counted, so a row that shares an actor with a crashing one is not blamed for it.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import threading
import time
import traceback
from collections.abc import Iterable, Iterator
from typing import Any, ClassVar

import numpy as np
import torch

from ..job import Job
from . import models
from .errors import DeviceLost, StageSetupError
from .records import add_snapshots, add_timing, alive, blank

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3  # tries per row and stage before a row that kills its actor is failed

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class StageError(RuntimeError):
    """A failure attributed to a named step inside a stage (the decode stage's ``write``)."""

    def __init__(self, stage: str, message: str):
        super().__init__(message)
        self.stage = stage


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("model.device is cuda but no CUDA device is visible to this process")
    return torch.device(name)


def device_lost(error: BaseException, device: torch.device) -> bool:
    """Whether ``error`` left ``device`` unusable for this process. A CUDA error is either sticky (the context is
    lost and every later call fails) or not (a bad launch configuration); it surfaces under many names (torch's
    AcceleratorError, Triton's and cuDNN's own RuntimeErrors), so any error on a CUDA device is followed by a
    probe, which tells them apart. Out of memory never is: the batch is retried row by row."""
    if device.type != "cuda" or isinstance(error, (torch.OutOfMemoryError, DeviceLost)):
        return False
    if "out of memory" in str(error):  # cudaMalloc outside the caching allocator (a workspace, a cuFFT plan)
        return False
    return not _device_answers(device)


def _device_answers(device: torch.device) -> bool:
    try:
        torch.ones(1, device=device).add_(1).cpu()
        torch.cuda.synchronize(device)
        return True
    except torch.OutOfMemoryError:  # full (the failed call's tensors are still held), not lost
        return True
    except Exception:  # noqa: BLE001 - any other failure here means the context is gone
        return False


def free_device_memory(device: torch.device) -> None:
    """Return a failed call's device memory: collect the reference cycles a traceback leaves (frames that
    hold its tensors), then hand the allocator's cached blocks back. Raises DeviceLost where the device
    cannot even do that."""
    gc.collect()
    if device.type == "cuda":
        try:
            torch.cuda.empty_cache()
        except Exception as e:  # noqa: BLE001 - freeing cached blocks fails only on a lost context
            raise DeviceLost(f"emptying the CUDA cache: {type(e).__name__}: {e}") from e


class _AfterDeath(Exception):
    """Raised by ``model_work`` for a group holding a row whose worker died in here before: its rows are then
    retried one at a time, so the row that takes the worker down fails alone, not the rows batched with it."""


def _resolve(value):
    """A Ray actor call's result (an ObjectRef), or a plain value from an in-process counter (tests)."""
    import ray

    return ray.get(value) if isinstance(value, ray.ObjectRef) else value


def to_records(batch: dict[str, np.ndarray] | list[dict]) -> list[dict[str, Any]]:
    if isinstance(batch, list):
        return batch
    columns = list(batch)
    n = len(batch[columns[0]]) if columns else 0
    return [{c: _plain(batch[c][i]) for c in columns} for i in range(n)]


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return value


def to_batch(records: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    out = {}
    for c in records[0] if records else ():
        values = [r[c] for r in records]
        arr = np.empty(len(values), dtype=object)
        arr[:] = values
        out[c] = arr
    return out


class Stage:
    """Base class; subclasses set ``name`` (the ``error_stage`` value) and implement ``setup``/``process``."""

    name: ClassVar[str] = "stage"
    inputs: ClassVar[tuple[str, ...]] = ()
    outputs: ClassVar[tuple[str, ...]] = ()

    drops: ClassVar[tuple[str, ...]] = ()  # columns blanked after this stage (blobs nobody downstream reads)
    # the model components ``setup`` loads: their snapshots join each row's ``snapshots`` (the metadata's)
    components: ClassVar[tuple[str, ...]] = ()

    # A stage whose ``process`` holds ``self.compute`` only around model work and releases it for its I/O
    # (MP4 encode, upload): its actors take two calls at once, so one row's write overlaps the next row's
    # decode and the accelerator does not wait on ffmpeg or S3. Other stages run ``process`` under the lock.
    # (The driver reads this from ``layout.OVERLAP_IO``, by name, without importing the stages.)
    overlap_io: ClassVar[bool] = False

    def __init__(self, job: Job, attempts=None, eager: bool = False):
        self.job = job
        self.pool = self.name  # the pools.* entry whose resources this actor runs with (a fused stage's, in one)
        self.attempts = attempts  # Ray actor counting tries per row (pipeline.AttemptCounter), or None
        self._ready = False
        self.compute = threading.Lock()  # one model computation at a time per actor (GPU memory is sized for one)
        self._waited = threading.local()  # seconds this thread spent waiting for ``compute`` (kept out of timings)
        self.snapshots: dict[str, str] = {}
        if eager:  # on an actor: load now, so every pool warms up at once instead of on its first batch
            self.ensure_setup()

    @property
    def device(self) -> torch.device:
        return resolve_device(self.job.model.device)

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.job.model.dtype]

    def setup(self) -> None:
        """Load weights (on the actor). Called once, before the first batch."""

    def group(self, records: list[dict[str, Any]]) -> Iterable[list[dict[str, Any]]]:
        """Groups of rows processed together; default: one row at a time."""
        return [[r] for r in records]

    def process(self, records: list[dict[str, Any]]) -> None:
        """Fill this stage's output columns of ``records`` in place; raise to fail them."""
        raise NotImplementedError

    def __call__(self, batch):
        records = to_records(batch)
        live = [r for r in records if alive(r)]
        if live:
            self.ensure_setup()
            for group in self.group(live):
                self._run_group(group)
        for record in records:
            for column in self.drops:
                record[column] = b""
        return records if isinstance(batch, list) else to_batch(records)

    @contextlib.contextmanager
    def model_work(self, records: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
        """Hold the compute lock and count a try for ``records``; yields the admitted ones (rows whose actor
        already died too often in here are failed instead). The try is uncounted when the block ends, by
        return or exception: only a death inside it leaves the count raised."""
        start = time.perf_counter()
        with self.compute:
            self._waited.seconds = getattr(self._waited, "seconds", 0.0) + time.perf_counter() - start
            admitted, after_death = self._admit(records)
            if after_death and len(admitted) > 1:
                self._finish(admitted)
                raise _AfterDeath(f"a row of this batch of {len(admitted)} was in it when its worker died")
            lost = False
            try:
                yield admitted
            except Exception as e:
                if device_lost(e, self.device):
                    # the try stays counted: the actor exits on this (StageActor) and a row that takes the device
                    # down each time fails after MAX_ATTEMPTS, as one that crashes its process does
                    lost = True
                    raise DeviceLost(f"stage {self.name}: {type(e).__name__}: {e}") from e
                raise
            finally:
                if not lost:
                    self._finish(admitted)

    def ensure_setup(self) -> None:
        if self._ready:
            return
        with self.compute:  # two calls arriving at once (render_many, two calls per actor) load the models once
            if self._ready:
                return
            if self.device.type == "cpu":
                # actors share the machine's cores: one BLAS pool per actor sized to its CPU share
                pool = getattr(self.job.pools, self.pool, None)
                threads = int(pool.num_cpus) if pool is not None and pool.num_cpus else 0
                if threads >= 1:
                    torch.set_num_threads(threads)
            try:
                self.setup()
                self.snapshots = {kind: models.snapshot(self.job, kind) for kind in self.components}
            except Exception as e:
                raise StageSetupError(f"stage {self.name} cannot start: {type(e).__name__}: {e}") from e
            self._ready = True

    def _admit(self, live: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], bool]:
        """Count this try of each row; a row that already took its actor down too often fails here. Returns the
        rows admitted, and whether one of them was in here before when its worker died."""
        if self.attempts is None or not live:
            return live, False
        counts = _resolve(self.attempts.begin.remote(self.name, [r["id"] for r in live]))
        admitted = []
        after_death = any(1 < counts[r["id"]] <= MAX_ATTEMPTS for r in live)
        for record in live:
            n = counts[record["id"]]
            # the try refused here is no attempt: a row given up on after 3 reports 3
            record["attempts"] = max(int(record.get("attempts") or 0), min(n, MAX_ATTEMPTS))
            if n > MAX_ATTEMPTS:
                record["error_stage"] = self.name
                record["error"] = (f"gave up after {MAX_ATTEMPTS} attempts: the row's worker died each time "
                                   "(out of memory, a crash in native code or a lost GPU)")  # fmt: skip
            else:
                admitted.append(record)
        return admitted, after_death

    def _finish(self, records: list[dict[str, Any]]) -> None:
        if self.attempts is not None and records:
            # waited for: a message still in flight when the actor is killed would leave the count raised,
            # and in a fused actor the next row's model work starts right after this one's ends
            _resolve(self.attempts.end.remote(self.name, [r["id"] for r in records]))

    def waited_seconds(self) -> float:
        """Seconds this thread has waited for the compute lock in the current group."""
        return getattr(self._waited, "seconds", 0.0)

    def working_seconds(self, start: float, waited: float) -> float:
        """Seconds since ``start`` (``time.perf_counter``) less the lock waits since then (``waited``: what
        ``waited_seconds`` said at ``start``): the same measure as the results' per-stage seconds."""
        return time.perf_counter() - start - (self.waited_seconds() - waited)

    def _run_group(self, group: list[dict[str, Any]]) -> None:
        start = time.perf_counter()
        self._waited.seconds = 0.0
        batch_error = ""
        try:
            if self.overlap_io:  # the stage takes model_work itself, around its model part only
                self.process(group)
            else:
                with self.model_work(group) as admitted:
                    group = admitted  # rows over the attempt limit left, failed
                    if group:
                        self.process(group)
        except DeviceLost:  # model_work probed the device after the error: this process cannot go on
            raise
        except Exception as e:  # noqa: BLE001 - isolation is the point: the error is recorded per row
            if len(group) == 1:
                self._fail(group[0], e)
            else:
                batch_error = str(e)
        if batch_error:
            # Retried out here: inside the handler the traceback keeps every frame of the failed call alive (the
            # batch's latents and activations), so after an out-of-memory each retry would start without them.
            log.warning("%s: batch of %d failed (%s); retrying rows one at a time", self.name, len(group), batch_error)
            free_device_memory(self.device)
            for record in group:
                if alive(record):  # not one failed meanwhile (over the attempt limit)
                    self._run_group([record])
            return
        # time working, not time waiting for another call to let go of the model
        elapsed = (time.perf_counter() - start - self._waited.seconds) / max(1, len(group))
        for record in group:
            add_timing(record, self.name, elapsed)
            add_snapshots(record, self.snapshots)

    def _fail(self, record: dict[str, Any], error: Exception) -> None:
        log.debug("%s failed row %s:\n%s", self.name, record.get("id"), traceback.format_exc())
        record["error_stage"] = getattr(error, "stage", None) or self.name
        # ValueErrors name the bad field; a StageError already names its cause
        plain = isinstance(error, (ValueError, StageError))
        record["error"] = str(error) if plain else f"{type(error).__name__}: {error}"
        for column in self.outputs:
            record[column] = blank(column)
