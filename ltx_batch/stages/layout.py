"""Which stages run in which actor pool, decided on the driver from stage names alone.

The driver of ``ltx-batch run`` never imports the stage classes: they bring torch (~1.3 s on two cores,
before Ray can start) and, for the text stage, transformers. Ray Data gets a ``StageActor`` subclass per
pool, named after its stages, which imports and builds the real stage (``fused.fuse`` for several) inside
the actor. ``tests/unit/test_layout.py`` checks the names and ``OVERLAP_IO`` against the classes.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from dataclasses import dataclass
from typing import Any, ClassVar

from ..job import STAGES, Job, PoolSpec
from .errors import DeviceLost

log = logging.getLogger(__name__)

# stage name -> "module:Class" (each class's ``name`` is its key)
STAGE_CLASSES = {
    "text_encode": "ltx_batch.stages.text_encode:TextEncodeStage",
    "base_sample": "ltx_batch.stages.sample:BaseSampleStage",
    "latent_upsample": "ltx_batch.stages.upsample:LatentUpsampleStage",
    "refine": "ltx_batch.stages.sample:RefineStage",
    "decode": "ltx_batch.stages.decode:DecodeStage",
}
# stages whose classes set ``overlap_io``: their actors take two calls at once (I/O beside model work)
OVERLAP_IO = frozenset({"decode"})


@dataclass(frozen=True)
class Pool:
    """One actor pool: the stages its actors run in turn, and the ``pools.*`` entry that sizes them."""

    parts: tuple[str, ...]
    pool: str = ""  # "": the first part's own entry
    whole: bool = False  # every stage: on a CPU node, these actors are the only ones doing model work

    @property
    def name(self) -> str:
        return self.pool or self.parts[0]

    @property
    def concurrent_io(self) -> bool:
        return any(part in OVERLAP_IO for part in self.parts)

    @property
    def label(self) -> str:
        """The class name the Ray dashboard shows, as ``fused.fuse`` names it: ``TextEncodeBaseSampleDecodeStage``."""
        return "".join(part.title().replace("_", "") for part in self.parts) + "Stage"


def pool_layout(job: Job, *, gpu: bool = True) -> list[Pool]:
    """The actor pools in order, with the job's fusion choices applied (``gpu``: the actors get GPUs)."""
    fusion = job.pools.fusion
    full = ("text_encode", "base_sample", "latent_upsample", "refine", "decode")
    stages = full if job.multiscale else ("text_encode", "base_sample", "decode")
    if fusion.all_stages or (fusion.all_stages is None and not gpu):
        # Without GPUs there is no device memory to split the models over, and a hop between actors on the same
        # cores only costs (serialising, scheduling, one more process importing torch): rows run whole.
        return [Pool(stages, pool="base_sample", whole=True)]
    if not job.multiscale:
        return [Pool((stage,)) for stage in stages]
    pools = [("text_encode",)]
    if fusion.base_refine and fusion.refine_decode:
        pools += [("base_sample", "latent_upsample", "refine", "decode")]
    elif fusion.base_refine:
        pools += [("base_sample", "latent_upsample", "refine"), ("decode",)]
    elif fusion.refine_decode:
        pools += [("base_sample",), ("latent_upsample",), ("refine", "decode")]
    else:
        pools += [(stage,) for stage in full[1:]]
    return [Pool(parts) for parts in pools]


def unused_pool_settings(job: Job, pools: list[Pool]) -> list[str]:
    """With every stage in one pool: the job's other ``pools`` settings, which that layout ignores."""
    if not any(p.whole for p in pools):
        return []
    unused = [f"pools.{stage}" for stage in STAGES
              if stage != "base_sample" and getattr(job.pools, stage) != PoolSpec()]  # fmt: skip
    return unused + [f"pools.fusion.{f}" for f in ("base_refine", "refine_decode") if getattr(job.pools.fusion, f)]


def stage_class(name: str) -> type:
    module, cls = STAGE_CLASSES[name].split(":")
    return getattr(importlib.import_module(module), cls)


def build_stage_class(pool: Pool) -> type:
    """The stage class a pool's actors run (imports torch): one stage's own, or their fusion."""
    classes = [stage_class(part) for part in pool.parts]
    if len(classes) == 1 and not pool.pool and not pool.whole:
        return classes[0]
    from .fused import fuse

    return fuse(*classes, pool=pool.pool, whole=pool.whole)


class StageActor:
    """What Ray Data instantiates on each actor of a pool: builds the pool's stage there, then hands it
    every batch."""

    layout: ClassVar[Pool]

    def __init__(self, job: Job, attempts: Any = None, eager: bool = False):
        self.stage = build_stage_class(self.layout)(job, attempts, eager=eager)

    def __call__(self, batch):
        try:
            return self.stage(batch)
        except DeviceLost as e:
            # Raised, it would fail the whole dataset; this process's GPU context is gone, so the actor dies
            # instead: Ray Data starts a fresh actor and retries the task, and AttemptCounter fails a row that
            # takes the device down MAX_ATTEMPTS times.
            log.error("%s: the GPU is unusable in this process, exiting so Ray replaces the actor: %s",
                      type(self).__name__, e, exc_info=True)  # fmt: skip
            for handler in logging.getLogger().handlers:  # os._exit skips the interpreter's flushing
                handler.flush()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(75)


def actor_class(pool: Pool) -> type[StageActor]:
    # A class made here pickles by value (its base by reference), so the driver ships it without the stages.
    # Its qualname names no module attribute, so it cannot turn into a reference to a stage class of the same
    # name; the dashboard shows ``__name__``.
    attrs = {"layout": pool, "__module__": __name__, "__qualname__": f"actor_class.<locals>.{pool.label}"}
    return type(pool.label, (StageActor,), attrs)
