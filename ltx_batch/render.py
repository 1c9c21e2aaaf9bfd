"""One row, in this process, without Ray: ``ltx-batch render`` and ``render_one``.

The same stage classes as the Ray pipeline run one after the other on a single record, so a row renders
the same here as in ``ltx-batch run``. Models stay cached in the process between calls.
``Renderer.render_many`` keeps two rows in flight, as a ``run`` actor does, so one row's MP4 encode and upload
run while the next row's model work does.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from .fingerprint import fingerprint, model_identity
from .io.rows import RowError, validate_row
from .job import Job
from .stages.decode import DecodeStage
from .stages.records import alive, new_record
from .stages.sample import BaseSampleStage, RefineStage
from .stages.text_encode import TextEncodeStage
from .stages.upsample import LatentUpsampleStage


@dataclass
class RenderResult:
    id: str | None  # None: a request without an id, which fails validation
    status: str  # ok | failed
    seed: int | None = None
    error_stage: str = ""
    error: str = ""
    outputs: dict[str, str] = field(default_factory=dict)  # kind -> key under the job's output
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def stages_for(job: Job) -> list:
    stages = [TextEncodeStage(job), BaseSampleStage(job)]
    if job.multiscale:
        stages += [LatentUpsampleStage(job), RefineStage(job)]
    return stages + [DecodeStage(job)]


class Renderer:
    """Keeps the stage instances (and so the loaded models) for several rows of one job.

    ``keep_text_encoder=False`` frees T5 right after each row's prompts are encoded, so sampling and decode
    run without it in memory (``ltx-batch render``, one row per process: ~9.5 GB less at the peak on a GPU
    in bf16); a loop over many rows keeps it (the default) instead of loading it for every row.
    """

    def __init__(self, job: Job, *, keep_text_encoder: bool = True):
        self.job = job
        self.stages = stages_for(job)
        # one compute lock for every stage, as in a run actor: with render_many's two rows in flight one model
        # computation runs at a time (the memory of one row), and only a row's output writing runs beside it
        lock = threading.Lock()
        for stage in self.stages:
            stage.compute = lock
        self.keep_text_encoder = keep_text_encoder
        self._model = None

    def render(self, request: dict[str, Any]) -> RenderResult:
        """Render one manifest-style row (``id`` and ``prompt`` required; other columns optional)."""
        return self._render(request, release_text=not self.keep_text_encoder)

    def render_many(self, requests: Iterable[dict[str, Any]]) -> Iterator[RenderResult]:
        """Render rows in order, yielding each result once its outputs are written. Two rows are in flight:
        while one row's MP4 is encoded and written, the next row encodes its prompt, samples and decodes, so
        the device (or the cores) do not wait on x264 or the upload. T5 stays loaded until the last row."""
        pending: deque = deque()
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="ltx-render") as pool:
            for request in requests:
                pending.append(pool.submit(self._render, request, release_text=False))
                if len(pending) == 2:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        if not self.keep_text_encoder:
            self.stages[0].release()

    def _render(self, request: dict[str, Any], *, release_text: bool) -> RenderResult:
        job = self.job
        defaults = job.defaults.as_dict()
        try:
            row = validate_row(request, defaults=defaults, frame_rate=job.recipe.frame_rate)
        except RowError as e:
            rid = request.get("id")  # a request without one keeps None, as the results table does
            return RenderResult(id=None if rid is None else str(rid), status="failed", error_stage="validate",
                                error=str(e))  # fmt: skip
        if self._model is None:
            self._model = model_identity(job)
        record = new_record(row, fingerprint(job, row, self._model))
        records = [record]
        for stage in self.stages:
            records = stage(records)
            if isinstance(stage, TextEncodeStage) and release_text:
                stage.release()
        record = records[0]
        return RenderResult(
            id=row.id, status="ok" if alive(record) else "failed", seed=row.seed,
            error_stage=record["error_stage"], error=record["error"],
            outputs=json.loads(record["outputs"]), seconds=json.loads(record["timings"]),
        )  # fmt: skip


def finished_render(job: Job, request: dict[str, Any]) -> tuple[dict[str, Any], bool] | None:
    """``(metadata, same_fingerprint)`` when ``request``'s id already finished (status ok) under the job's
    output, else None (also for a request that is invalid: rendering it reports why). ``ltx-batch render``
    applies ``run``'s rule with it: the same fingerprint is done already, another one needs ``--overwrite``."""
    from .io.metadata import read_metadata_many
    from .io.storage import Storage

    try:
        row = validate_row(request, defaults=job.defaults.as_dict(), frame_rate=job.recipe.frame_rate)
    except RowError:
        return None
    # run's reader: a missing or torn metadata file is an unfinished row
    meta = read_metadata_many(Storage(job.output, job.storage_options), [row.id]).get(row.id)
    if meta is None or meta.get("status") != "ok":
        return None
    return meta, meta.get("fingerprint") == fingerprint(job, row)


def render_one(job: Job, request: dict[str, Any], *, keep_text_encoder: bool = True) -> RenderResult:
    """One row; models stay cached in the process for the next call (T5 too, unless ``keep_text_encoder``
    is False: then it is freed before sampling, for a process that renders one row)."""
    return Renderer(job, keep_text_encoder=keep_text_encoder).render(request)
