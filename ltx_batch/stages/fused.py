"""Fused stages: several stages in one actor, for models they share or hops they save.

``base_refine`` runs base sample, latent upsample and refine in one actor (one transformer and VAE copy for
both passes: ``stages.models`` caches per process); ``refine_decode`` saves the hop of the final latents;
``all_stages`` runs rows whole, text to MP4, in one pool of data-parallel actors. Each inner stage still
counts its tries and reports its failures under its own name; all run with the fused pool's resources.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar

import torch

from .base import Stage, to_batch, to_records


class FusedStage(Stage):
    parts: ClassVar[tuple[type[Stage], ...]] = ()
    pool_name: ClassVar[str] = ""  # the pools.* entry sizing the fused actors ("": the first part's)
    whole: ClassVar[bool] = False  # every stage: on a CPU node, these actors are the only ones doing model work

    @classmethod
    def pool_of(cls) -> str:
        return cls.pool_name or cls.parts[0].name

    def __init__(self, job, attempts=None, eager: bool = False):
        # each part counts its own tries (under its own name) inside its model work
        self.stages = [part(job, attempts) for part in self.parts]
        self.name = self.stages[0].name
        self.drops = tuple(c for st in self.stages for c in st.drops)
        super().__init__(job, attempts, eager=False)
        for stage in self.stages:
            # parts share one lock (only the I/O of an overlap_io part runs beside them) and the fused pool's
            # CPU share (torch threads)
            stage.compute = self.compute
            stage.pool = self.pool = self.pool_of()
        if eager:
            self.ensure_setup()

    def ensure_setup(self) -> None:
        spec = getattr(self.job.pools, self.pool)
        if self.whole and self.device.type == "cpu" and not spec.num_cpus and not self._ready:
            torch.set_num_threads(whole_pipeline_threads(spec.concurrency))
        for stage in self.stages:
            stage.ensure_setup()
        self._ready = True

    def __call__(self, batch):
        records = to_records(batch)
        for stage in self.stages:
            records = stage(records)
        return records if isinstance(batch, list) else to_batch(records)


def whole_pipeline_threads(concurrency, cores: int | None = None) -> int:
    """torch threads for a CPU actor running rows whole when the job leaves ``num_cpus`` unset: the cores
    this process may use shared by the pool's actors (as if all ran on this node: on a multi-node CPU cluster
    set ``num_cpus``). Ray's default, one thread per logical CPU, would leave a many-core machine idle. No core
    is held back for the MP4 encode that overlaps the next row: with real widths the model is most of a
    video's time (the mid-size bench: 17 of 18 s), and on 2 cores one torch thread instead of two made
    ``run`` 2.1x slower than a render loop; with the tiny demo model 1 or 2 threads measured the same."""
    cores = cores or usable_cores()
    actors = max(concurrency) if isinstance(concurrency, tuple) else (concurrency or 1)
    return max(1, cores // actors)


def usable_cores(cgroup: str = "/sys/fs/cgroup") -> int:
    """This process's CPU affinity, capped by its cgroup's CPU quota: a container limited to 8 CPUs on a
    64-core host sees all 64 cores but is throttled past 8."""
    cores = len(os.sched_getaffinity(0))
    limit = cgroup_cpu_limit(cgroup)
    return max(1, min(cores, int(limit))) if limit else cores


def cgroup_cpu_limit(root: str = "/sys/fs/cgroup") -> float | None:
    """CPUs allowed by the cgroup quota (v2 ``cpu.max``, else v1 ``cpu.cfs_quota_us``); None when unlimited."""
    base = Path(root)
    try:
        quota, period = (base / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((base / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((base / "cpu" / "cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


def fuse(*parts: type[Stage], pool: str = "", whole: bool = False) -> type[FusedStage]:
    """A fused stage class named after its parts (the Ray dashboard shows the class name), its actors sized
    by ``pools.<pool>`` (default: the first part's); ``whole``: the parts are the whole pipeline."""
    name = "".join(p.__name__.removesuffix("Stage") for p in parts) + "Stage"
    attrs = {"parts": tuple(parts), "pool_name": pool, "whole": whole, "__module__": __name__}
    return type(name, (FusedStage,), attrs)
