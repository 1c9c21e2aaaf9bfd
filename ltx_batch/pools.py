"""Per-stage Ray resources: the job's ``pools:`` turned into ``map_batches`` arguments, in one place.

Unset values are derived from the cluster: on a CPU-only cluster each pool is one actor with one CPU
(the local Ray is started with more logical CPUs than cores, so five pools and the read tasks fit on a
laptop; by default the stages run fused in one pool there, ``stages.layout.pool_layout``); with GPUs the
denoising stages take whole GPUs and scale to the GPU count, the light stages (T5, upsampler, VAE) take
fractions.
"""

from __future__ import annotations

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


def resources(job: Job, stage: str, cluster: dict[str, float]) -> StageResources:
    spec: PoolSpec = getattr(job.pools, stage)
    gpus = float(cluster.get("GPU", 0.0))
    use_gpu = uses_gpu(job, cluster)
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
