"""The spine: a job's manifest through the stage actor pools on Ray, outputs and results under ``output``.

::

    manifest (Parquet, any fsspec URL)
      -> validate rows (bad rows become failed results) -> seeds -> skip finished ids   (driver, cheap)
      -> [text encode] -> [base sample] -> [latent upsample] -> [refine] -> [decode + write]  (actor pools)
      -> results/{run_id}.parquet + runs/{run_id}/job.json                                   (driver)

Only small columns cross stages (embeddings, latents, generator state); frames are encoded and written in
the decode actor. A row that fails is recorded with its stage and reason; a row whose actor keeps dying is
failed after ``MAX_ATTEMPTS`` tries (``AttemptCounter`` lives in the driver's job, so it outlives crashed
actors). A re-run skips rows whose metadata says ok with the same fingerprint.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field

from .fingerprint import fingerprint, model_identity
from .io.manifest import ManifestError, manifest_base, read_manifest_table
from .io.metadata import read_metadata_many
from .io.results import MANIFEST_ROW, PassThrough, write_results
from .io.rows import KNOWN_COLUMNS, RowError, id_label, validate_row
from .io.storage import Storage
from .job import Job
from .pools import gpu_shares, resources, uses_gpu
from .report import write_report
from .stages.layout import actor_class, pool_layout, unused_pool_settings
from .stages.records import failed_record, new_record
from .submit import FORWARDED_ENV

log = logging.getLogger(__name__)


@dataclass
class RunSummary:
    run_id: str
    output: str
    total: int = 0
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    seconds: float = 0.0
    stage_seconds: dict[str, float] = field(default_factory=dict)
    failures: list[dict] = field(default_factory=list)  # {id, error_stage, error}
    results_path: str = ""

    @property
    def videos_per_hour(self) -> float:
        return self.ok * 3600.0 / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict:
        return {"run_id": self.run_id, "output": self.output, "total": self.total, "ok": self.ok,
                "failed": self.failed, "skipped": self.skipped, "seconds": round(self.seconds, 3),
                "videos_per_hour": round(self.videos_per_hour, 2), "stage_seconds": self.stage_seconds,
                "failures": self.failures, "results_path": self.results_path}  # fmt: skip


class FingerprintMismatch(ManifestError):
    """Finished rows whose recipe or model changed; re-rendering them needs ``--overwrite``."""


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:6]


def plan(job: Job, storage: Storage, *, overwrite: bool = False):
    """Manifest -> (records to render, results of rows that end here: skipped or invalid, and the pass-through
    columns as Arrow read them with each valid id's manifest row (``PassThrough``), from which the results
    table takes them with their types; the records carry them as JSON)."""
    if not job.input:
        raise ManifestError("input: no manifest given (set input in the job or pass --input)")
    table = read_manifest_table(job.input, job.storage_options)
    raw_rows = table.to_pylist()
    defaults = job.defaults.as_dict()
    base = manifest_base(job.input)
    model = model_identity(job)
    finished = set(n.removesuffix(".json") for n in storage.listdir("metadata") if n.endswith(".json"))
    rows, done = [], []
    extras = PassThrough(table.select([n for n in table.column_names if n not in KNOWN_COLUMNS]))
    for i, raw in enumerate(raw_rows):
        try:
            row = validate_row(raw, defaults=defaults, frame_rate=job.recipe.frame_rate, base_uri=base)
        except RowError as e:
            extra = {k: v for k, v in raw.items() if k not in KNOWN_COLUMNS}  # a valid row's is in row.extra
            record = failed_record(raw.get("id"), "validate", str(e), extra)
            record[MANIFEST_ROW] = i  # never leaves the driver (see MANIFEST_ROW)
            done.append(record)
            continue
        extras.rows[row.id] = i  # by id: unique once validated
        rows.append((row, fingerprint(job, row, model)))
    metadata = read_metadata_many(storage, [row.id for row, _ in rows if row.id in finished])
    todo, mismatched = [], []
    for row, fp in rows:
        meta = metadata.get(row.id)
        if meta and meta.get("status") == "ok":
            if meta.get("fingerprint") == fp:
                rec = new_record(row, fp)
                rec["outputs"] = json.dumps({k: v["path"] for k, v in meta.get("outputs", {}).items()})
                rec["status"] = "skipped"
                done.append(rec)
                continue
            if not overwrite:
                mismatched.append(row.id)
                continue
        todo.append(new_record(row, fp))
    if mismatched:
        shown = ", ".join(mismatched[:10]) + (f" (+{len(mismatched) - 10} more)" if len(mismatched) > 10 else "")
        raise FingerprintMismatch(
            f"{len(mismatched)} finished row(s) were rendered with a different model or recipe: {shown}; "
            "re-run with --overwrite to render them again"
        )
    return todo, done, extras


# A block is what one task of a stage takes and hands on, so rows stream through the stages one block (row)
# each. Putting a block per row costs the driver ~1-2 ms each before anything renders (half a minute for 20,000
# rows on two cores); a bigger manifest goes in as chunks that a streaming repartition (one more task pool)
# cuts into rows as the stages take them.
ROWS_PUT_ONE_BY_ONE = 1000
CHUNK_ROWS = 256


def input_rows(records: list[dict]):
    """The records as a Ray dataset of one-row blocks."""
    import ray

    if len(records) <= ROWS_PUT_ONE_BY_ONE:
        return ray.data.from_items(records, override_num_blocks=max(1, len(records)))
    chunks = -(-len(records) // CHUNK_ROWS)
    return ray.data.from_items(records, override_num_blocks=chunks).repartition(target_num_rows_per_block=1)


def build_dataset(job: Job, records: list[dict], attempts):
    """The Ray Data plan: one ``map_batches`` actor pool per stage, rows streaming one block each."""
    import ray
    from ray.data import ActorPoolStrategy

    cluster = ray.cluster_resources()
    pools = pool_layout(job, gpu=uses_gpu(job, cluster))
    log.info("actor pools: %s", " -> ".join(f"{p.name} [{p.label}]" for p in pools))
    unused = unused_pool_settings(job, pools)
    if unused:  # only with every stage in one pool: other fused layouts are chosen with their pools in view
        auto = "" if job.pools.fusion.all_stages else ", on by default without GPUs"
        log.warning("%s not used: every stage runs in pools.base_sample's actors (pools.fusion.all_stages%s); set "
                    "pools.fusion.all_stages: false for one pool per stage", ", ".join(unused), auto)
    shares, note = gpu_shares(job, [p.name for p in pools], cluster)
    if note:
        log.warning(note)
    ds = input_rows(records)
    for pool in pools:
        res = resources(job, pool.name, cluster, num_gpus=shares[pool.name])
        # two calls per actor where a stage's I/O can overlap its model work (Stage.overlap_io)
        calls = 2 if pool.concurrent_io else 1
        ds = ds.map_batches(
            actor_class(pool),
            fn_constructor_kwargs={"job": job, "attempts": attempts, "eager": True},
            compute=ActorPoolStrategy(min_size=res.min_actors, max_size=res.max_actors,
                                      max_concurrent_calls_per_actor=calls,
                                      enable_true_multi_threading=calls > 1),  # fmt: skip
            batch_size=res.batch_size,
            batch_format="numpy",
            num_gpus=res.num_gpus or None,
            num_cpus=res.num_cpus,
        )  # Ray Data restarts crashed actors and retries their tasks; AttemptCounter bounds poison rows
    return ds


def _attempt_counter():
    import ray

    @ray.remote(num_cpus=0)
    class AttemptCounter:
        def __init__(self):
            self.counts: dict[tuple[str, str], int] = {}

        def begin(self, stage: str, ids: list[str]) -> dict[str, int]:
            """A try starts: returns each row's try number (1 + the times its actor died in this stage)."""
            out = {}
            for i in ids:
                self.counts[(stage, i)] = self.counts.get((stage, i), 0) + 1
                out[i] = self.counts[(stage, i)]
            return out

        def end(self, stage: str, ids: list[str]) -> None:
            """The try ended in the process (done or raised): only deaths stay counted."""
            for i in ids:
                self.counts[(stage, i)] -= 1

        def snapshot(self) -> dict[str, int]:
            """Rows that have entered each stage (in pipeline order of first arrival)."""
            entered: dict[str, int] = {}
            for stage, _ in self.counts:
                entered[stage] = entered.get(stage, 0) + 1
            return entered

    return AttemptCounter.remote()


class Progress:
    """A line on stderr every few seconds while the run goes: rows done (ok / failed), how many rows each
    stage has taken in so far (from the attempt counter), and an ETA from the completion rate."""

    def __init__(self, total: int, counter=None, every: float = 10.0):
        self.total, self.counter, self.every = total, counter, every
        self.ok = self.failed = 0
        self.start = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="ltx-batch-progress")

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.print_line()

    def update(self, record: dict) -> None:
        if record["error_stage"]:
            self.failed += 1
        else:
            self.ok += 1

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            self.print_line()

    def print_line(self) -> None:
        import ray

        now = time.monotonic()
        done = self.ok + self.failed
        rate = done / max(now - self.start, 1e-9)
        eta = f"ETA {(self.total - done) / rate:.0f}s" if rate > 0 and done < self.total else ""
        stages = ""
        if self.counter is not None:
            try:
                entered = ray.get(self.counter.snapshot.remote(), timeout=5)
                if entered:
                    stages = " · entered: " + ", ".join(f"{k} {v}" for k, v in entered.items())
            except Exception:  # noqa: BLE001 - progress is best effort; the run goes on
                pass
        print(f"[ltx-batch] {done}/{self.total} rows done (ok {self.ok}, failed {self.failed}){stages} · "
              f"{now - self.start:.0f}s {eta}".rstrip(), file=sys.stderr, flush=True)  # fmt: skip


class _DropNotice(logging.Filter):
    """Ray Data warns on every run that its progress bars are off; they are off on purpose (not a terminal,
    or ``progress=False``): our own progress line reports the run."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Progress bars disabled")


def quiet_ray_data_console() -> None:
    """The CLI without ``-v``: Ray Data's console shows warnings and errors only (its per-dataset execution
    lines still go to the session's ray-data.log), without the progress-bar notice."""
    import ray.data  # noqa: F401 - configures its loggers on import

    for handler in logging.getLogger("ray.data").handlers:
        if isinstance(handler, logging.StreamHandler):  # the console; its file handler is not one
            handler.setLevel(max(handler.level, logging.WARNING))
            if not any(isinstance(f, _DropNotice) for f in handler.filters):
                handler.addFilter(_DropNotice())


def report_unwritten(summary: RunSummary, limit: int = 50) -> None:
    """The results table could not be written (storage down past the retries): the counts and every failed
    row's reason still reach the log, so no failure goes unreported. Rows without metadata render again on
    the next run."""
    if not summary.total:
        return
    shown = "".join(f"\n  failed {id_label(f['id'])} [{f['error_stage']}]: {f['error']}" for f in summary.failures[:limit])
    more = f"\n  ... {len(summary.failures) - limit} more" if len(summary.failures) > limit else ""
    log.error("run %s: results not written; %d ok, %d failed, %d skipped%s%s", summary.run_id, summary.ok,
              summary.failed, summary.skipped, shown, more)  # fmt: skip


def ensure_ray(address: str | None = None) -> None:
    """Connect to ``address`` / ``RAY_ADDRESS``, or start a local Ray sized for this machine."""
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ:
        # a driver started by the Jobs API (ltx-batch submit): the job's runtime env already applies
        ray.init(address=address or "auto", log_to_driver=True)
        return
    if address:
        _join(address)
        return
    # More logical CPUs than cores: five one-CPU pools (all_stages: false) plus Ray Data's own tasks must fit
    # on a laptop. Each CPU actor sets its torch threads to its num_cpus, so the cores are shared, not
    # oversubscribed; the one-pool default (num_cpus unset) shares the cores among its actors instead.
    cpus = max(8, 2 * (os.cpu_count() or 1))
    # A local Ray is started from this process, so its workers inherit this environment; no runtime_env, which
    # would make every worker a fresh start instead of one of the processes Ray pre-starts. Loopback only.
    try:
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=True, _node_ip_address="127.0.0.1")
    except ValueError as e:
        # a Ray started with `ray start` on this machine: ray.init without an address joins it (Ray's default)
        # and then refuses a size. Join it, as --address auto would; before, the run failed here (exit 1).
        if "existing cluster" not in str(e):
            raise
        log.info("joining the Ray cluster started on this machine (ray start)")
        _join(None)


def _join(address: str | None) -> None:
    """Connect to a running cluster. It was not started from this shell, so its workers lack this shell's
    storage settings: they go along in the job's runtime env (only when set: a runtime env makes the job's
    workers fresh processes instead of pre-started ones). Cache folders go along only to a cluster on this
    machine: on another they would name paths of this one, and its nodes have their own (as with ``submit``)."""
    import ray

    names = FORWARDED_ENV + (("LTX_BATCH_CACHE", "HF_HOME") if _on_this_machine(address) else ())
    env = {k: os.environ[k] for k in names if k in os.environ}
    ray.init(address=address, runtime_env={"env_vars": env} if env else None, log_to_driver=True)


def _on_this_machine(address: str | None) -> bool:
    """``address`` names a Ray on this machine: none or ``auto`` (the one ``ray start`` left here), or a
    loopback host."""
    if address in (None, "", "auto", "local"):
        return True
    host = address.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
    return host in ("localhost", "127.0.0.1", "::1") or host.startswith("127.")


def run_job(job: Job, *, address: str | None = None, overwrite: bool = False, run_id: str | None = None,
            progress: bool = True) -> RunSummary:  # fmt: skip
    """Render every row of ``job``'s manifest on Ray; returns the run's summary (results written)."""
    import ray

    start = time.monotonic()
    storage = Storage(job.output, job.storage_options)
    run_id = run_id or new_run_id()
    todo, done, extras = plan(job, storage, overwrite=overwrite)
    summary = RunSummary(run_id=run_id, output=job.output, total=len(todo) + len(done))
    results = list(done)
    if todo:
        # the run's job file first: an output that cannot be written (no such bucket, no permission) fails
        # here, naming its URL, instead of after every row has rendered
        started = {"job": job.to_dict(), "summary": {"run_id": run_id, "state": "running", "total": summary.total}}
        storage.write_bytes(f"runs/{run_id}/job.json", json.dumps(started, indent=2, default=str).encode())
        ensure_ray(address)
        from ray.data import DataContext

        DataContext.get_current().enable_progress_bars = progress and sys.stderr.isatty()
        attempts = _attempt_counter()
        columns = ["id", "row", "fingerprint", "error_stage", "error", "attempts", "timings", "outputs"]
        meter = Progress(len(todo), attempts) if progress else contextlib.nullcontext()
        try:
            with meter:
                # no select_columns: the decode stage already blanks the blobs, and a projection would be
                # one more task pool (worker processes) on the critical path
                batches = build_dataset(job, todo, attempts).iter_batches(batch_size=1, batch_format="numpy")
                for batch in batches:
                    for i in range(len(batch["id"])):
                        record = {c: batch[c][i] for c in columns}
                        results.append(record)
                        if progress:
                            meter.update(record)
        finally:
            ray.kill(attempts)
    summary.seconds = time.monotonic() - start
    try:
        write_results(storage, job, summary, results, extras=extras)
    except Exception:
        report_unwritten(summary)
        raise
    try:
        write_report(storage, summary)  # report.html: gallery, stage timings, failures
    except OSError as e:  # the results are written; a report that cannot be is not a failed run
        log.warning("report.html not written: %s", e)
    return summary
