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

    Ray places an actor only where its whole share is free, and every pool starts its minimum of actors (one
    unless ``concurrency`` says more). Where those cannot all be placed on the cluster's GPUs (the default shares
    of a single-scale job, 1.75, on one GPU), Ray Data would wait for GPUs that never come. If the job sets no
    share, the defaults are then scaled down, no further than lets them fit: on one GPU one actor of each pool
    shares it, as the shipped jobs' do; with more GPUs the shares stay larger, so fewer actors crowd one GPU
    (the multi-scale job's two transformers on 2 GPUs: 0.67 each, never two on one). A job that set shares is
    told instead (an autoscaling cluster adds the GPUs; a fixed one needs other shares). With no GPU up yet
    there is nothing to check against.
    """
    use_gpu = uses_gpu(job, cluster)
    asked = {name: getattr(job.pools, name).num_gpus for name in pools}
    shares = {name: n if n is not None else (_GPU_SHARE[name] if use_gpu else 0.0) for name, n in asked.items()}
    gpus = int(cluster.get("GPU", 0.0))
    least = {name: _actor_range(getattr(job.pools, name), shares[name], gpus)[0] for name in pools}

    def fits(candidate: dict[str, float]) -> bool:
        return _fits([share for name, share in candidate.items() for _ in range(least[name])], gpus)

    if not use_gpu or gpus == 0 or fits(shares):
        return shares, ""
    wanted = ", ".join(f"{name} {share:g}" + (f" x{least[name]}" if least[name] > 1 else "")
                       for name, share in shares.items() if share)  # fmt: skip
    if any(n is not None for n in asked.values()):
        return shares, (f"the pools' first actors ask for more GPUs than the cluster's {gpus} can place ({wanted}): "
                        "those that do not fit wait until GPUs join (set pools.<stage>.num_gpus so that they fit)")
    total = sum(share * least[name] for name, share in shares.items())
    factor = min(1.0, gpus / total)
    while True:  # from the even spread down, in 2% steps, until the first-fit placement succeeds
        scaled = {name: math.floor(share * factor * 1e4) / 1e4 for name, share in shares.items()}
        if fits(scaled):
            break
        factor *= 0.98
    note = (f"pools.*.num_gpus unset: the default shares ({wanted}) do not fit on the cluster's {gpus} GPU(s); "
            f"using {', '.join(f'{n} {v:g}' for n, v in scaled.items() if v)} (set pools.<stage>.num_gpus to choose)")
    if "refine" in shares and "base_sample" in shares:
        note += "; multi-scale: pools.fusion.base_refine: true keeps one transformer per GPU instead of two"
    return scaled, note


def _fits(shares: list[float], gpus: int) -> bool:
    """Whether actors of these GPU shares can all be placed on ``gpus`` GPUs (first fit, largest first; Ray
    counts GPUs in 1e-4 units): a share of 1 or more takes that many whole GPUs, a fraction the free part of one."""
    free = [10_000] * gpus
    for share in sorted((round(s * 1e4) for s in shares if s > 0), reverse=True):
        if share >= 10_000:
            empty = [i for i, f in enumerate(free) if f == 10_000]
            whole = -(-share // 10_000)
            if len(empty) < whole:
                return False
            for i in empty[:whole]:
                free[i] = 0
            continue
        spot = next((i for i, f in enumerate(free) if f >= share), None)
        if spot is None:
            return False
        free[spot] -= share
    return True


def _actor_range(spec: PoolSpec, num_gpus: float, gpus: float) -> tuple[int, int]:
    if isinstance(spec.concurrency, tuple):
        return spec.concurrency
    if spec.concurrency is not None:
        return spec.concurrency, spec.concurrency
    if num_gpus > 0:
        return 1, max(1, int(gpus))  # autoscale up to one actor per GPU
    return 1, 1


def resources(job: Job, stage: str, cluster: dict[str, float], num_gpus: float | None = None) -> StageResources:
    """``num_gpus``: the pool's share from ``gpu_shares`` (default: the job's, or the unscaled default)."""
    spec: PoolSpec = getattr(job.pools, stage)
    gpus = float(cluster.get("GPU", 0.0))
    use_gpu = uses_gpu(job, cluster)
    if num_gpus is None:
        num_gpus = spec.num_gpus if spec.num_gpus is not None else (_GPU_SHARE[stage] if use_gpu else 0.0)
    num_cpus = spec.num_cpus if spec.num_cpus is not None else 1.0
    lo, hi = _actor_range(spec, num_gpus, gpus)
    return StageResources(num_gpus, num_cpus, lo, hi, spec.batch_size)
