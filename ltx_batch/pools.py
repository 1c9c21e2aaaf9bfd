"""Per-stage Ray resources: the job's ``pools:`` turned into ``map_batches`` arguments, in one place.

Unset values are derived from the cluster: on a CPU-only cluster each pool is one actor with one CPU
(the local Ray is started with more logical CPUs than cores, so five pools and the read tasks fit on a
laptop; by default the stages run fused in one pool there, ``stages.layout.pool_layout``); with GPUs the
denoising stages take whole GPUs and scale to the GPU count, the light stages (T5, upsampler, VAE) take
fractions, all scaled down together where one actor of each would not fit on the cluster (``gpu_shares``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .job import STAGES, Job, PoolSpec

# GPU share per actor when the job leaves num_gpus unset and the cluster has GPUs.
_GPU_SHARE = {"text_encode": 0.25, "base_sample": 1.0, "latent_upsample": 0.25, "refine": 1.0, "decode": 0.5}


@dataclass(frozen=True)
class StageResources:
    num_gpus: float
    num_cpus: float
    min_actors: int
    max_actors: int
    batch_size: int


def uses_gpu(job: Job, cluster: dict[str, float]) -> bool:
    """Whether the job's actors run on GPUs. ``model.device: cuda`` or a pool asking for GPUs decides it
    whatever the cluster holds now (an autoscaling cluster with no GPU node up yet adds them for the
    requests); ``auto`` follows the cluster's GPUs; ``cpu`` never."""
    if job.model.device != "auto":
        return job.model.device == "cuda"
    if any((getattr(job.pools, stage).num_gpus or 0) > 0 for stage in STAGES):
        return True
    return float(cluster.get("GPU", 0.0)) > 0


def gpu_shares(job: Job, pools: list[str], cluster: dict[str, float]) -> tuple[dict[str, float], str]:
    """GPUs per actor of each pool (by its ``pools.*`` name), and a warning for the log ("" if none).

    Ray places an actor only where its whole share is free, and every pool starts one actor. Where one actor of
    each cannot be placed on the cluster's GPUs (the default shares of a single-scale job, 1.75, on one GPU),
    Ray Data would wait for GPUs that never come: shares the job leaves unset are then scaled so that one actor
    of each pool fits on one GPU, as the shipped jobs' are. A job that set some is told instead (an autoscaling
    cluster adds the GPUs; a fixed one needs other shares). With no GPU up yet, nothing is known to check.
    """
    use_gpu = uses_gpu(job, cluster)
    asked = {name: getattr(job.pools, name).num_gpus for name in pools}
    shares = {name: n if n is not None else (_GPU_SHARE[name] if use_gpu else 0.0) for name, n in asked.items()}
    gpus = int(cluster.get("GPU", 0.0))
    if not use_gpu or gpus == 0 or _fits(list(shares.values()), gpus):
        return shares, ""
    wanted = ", ".join(f"{name} {share:g}" for name, share in shares.items() if share)
    if any(n is not None for n in asked.values()):
        return shares, (f"one actor of each pool asks for more GPUs than the cluster's {gpus} can place ({wanted}): "
                        "those that do not fit wait until GPUs join (set pools.<stage>.num_gpus so that they fit)")
    total = sum(shares.values())
    shares = {name: math.floor(share / total * 1e4) / 1e4 for name, share in shares.items()}
    scaled = ", ".join(f"{name} {share:g}" for name, share in shares.items() if share)
    note = (f"pools.*.num_gpus unset: the default shares ({wanted}) do not fit on the cluster's {gpus} GPU(s); "
            f"using {scaled}, one actor of each pool per GPU (set pools.<stage>.num_gpus to choose)")
    if "refine" in shares and "base_sample" in shares:
        note += "; multi-scale: pools.fusion.base_refine: true keeps one transformer per GPU instead of two"
    return shares, note


def _fits(shares: list[float], gpus: int) -> bool:
    """Whether actors of these GPU shares can all be placed on ``gpus`` GPUs (first fit, largest first): a share
    of 1 or more takes that many whole GPUs, a fraction the free part of one."""
    free = [1.0] * gpus
    for share in sorted((s for s in shares if s > 0), reverse=True):
        if share >= 1:
            empty = [i for i, f in enumerate(free) if f > 1 - 1e-9]
            if len(empty) < math.ceil(share - 1e-9):
                return False
            for i in empty[: math.ceil(share - 1e-9)]:
                free[i] = 0.0
            continue
        spot = next((i for i, f in enumerate(free) if f >= share - 1e-9), None)
        if spot is None:
            return False
        free[spot] -= share
    return True


def resources(job: Job, stage: str, cluster: dict[str, float], num_gpus: float | None = None) -> StageResources:
    """``num_gpus``: the pool's share from ``gpu_shares`` (default: the job's, or the unscaled default)."""
    spec: PoolSpec = getattr(job.pools, stage)
    gpus = float(cluster.get("GPU", 0.0))
    use_gpu = uses_gpu(job, cluster)
    if num_gpus is None:
        num_gpus = spec.num_gpus if spec.num_gpus is not None else (_GPU_SHARE[stage] if use_gpu else 0.0)
    num_cpus = spec.num_cpus if spec.num_cpus is not None else 1.0
    if isinstance(spec.concurrency, tuple):
        lo, hi = spec.concurrency
    elif spec.concurrency is not None:
        lo = hi = spec.concurrency
    elif num_gpus > 0:
        lo, hi = 1, max(1, int(gpus))  # autoscale up to one actor per GPU
    else:
        lo = hi = 1
    return StageResources(num_gpus, num_cpus, lo, hi, spec.batch_size)
