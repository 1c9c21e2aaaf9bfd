"""The actor-pool layout a job gets: which stages share a pool, with which resources and torch threads.

Without GPUs every stage runs in one pool (``pools.fusion.all_stages``); whether a job runs on GPUs is decided
by its ``model.device`` and GPU requests before the cluster's current GPUs (an autoscaling cluster may have none
up yet); the one-pool actor renders rows as the stages one after another do.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from ltx_batch import load_job
from ltx_batch.stages.layout import (
    OVERLAP_IO,
    STAGE_CLASSES,
    Pool,
    actor_class,
    build_stage_class,
    pool_layout,
    stage_class,
    unused_pool_settings,
)
from ltx_batch.pools import gpu_shares, resources, uses_gpu
from ltx_batch.stages.fused import cgroup_cpu_limit, usable_cores, whole_pipeline_threads
from ltx_batch.stages.records import alive

from ..conftest import frames_close
from .test_stages import _job, _records, _run

DEBUG = {"preset": "ltxv-debug"}
MULTISCALE = {"preset": "ltxv-debug", "upsampler": "ltxv-debug-upsampler"}


def _layout(job, gpu):
    pools = pool_layout(job, gpu=gpu)
    return [list(p.parts) for p in pools], [p.name for p in pools]


def test_without_gpus_every_stage_runs_in_one_pool_sized_by_base_sample(tmp_path):
    auto = _job(tmp_path / "out")
    assert _layout(auto, gpu=False) == ([["text_encode", "base_sample", "decode"]], ["base_sample"])
    assert _layout(auto, gpu=True) == ([["text_encode"], ["base_sample"], ["decode"]],
                                       ["text_encode", "base_sample", "decode"])  # fmt: skip
    split = load_job({"model": DEBUG, "pools": {"fusion": {"all_stages": False}}})
    assert _layout(split, gpu=False)[1] == ["text_encode", "base_sample", "decode"]
    both = load_job({"model": MULTISCALE, "pools": {"fusion": {"all_stages": True, "base_refine": True}}})
    assert _layout(both, gpu=True) == ([["text_encode", "base_sample", "latent_upsample", "refine", "decode"]],
                                       ["base_sample"])  # fmt: skip
    base_refine = load_job({"model": MULTISCALE, "pools": {"fusion": {"base_refine": True}}})
    assert _layout(base_refine, gpu=True)[1] == ["text_encode", "base_sample", "decode"]


def test_a_job_asking_for_gpus_keeps_the_gpu_layout_before_any_gpu_is_up():
    none, some = {"CPU": 8.0}, {"CPU": 8.0, "GPU": 2.0}
    auto = load_job({"model": DEBUG})
    assert not uses_gpu(auto, none) and uses_gpu(auto, some)
    assert uses_gpu(load_job({"model": {**DEBUG, "device": "cuda"}}), none)  # autoscaling adds the GPU nodes
    assert not uses_gpu(load_job({"model": {**DEBUG, "device": "cpu"}}), some)
    asks = load_job({"model": DEBUG, "pools": {"base_sample": {"num_gpus": 1}}})  # as the shipped jobs/*.yaml do
    assert uses_gpu(asks, none)
    assert _layout(asks, gpu=uses_gpu(asks, none))[1] == ["text_encode", "base_sample", "decode"]
    # device cuda on a cluster whose GPU nodes are not up yet: the default shares are requested
    assert resources(load_job({"model": {**DEBUG, "device": "cuda"}}), "decode", none).num_gpus == 0.5
    assert resources(auto, "decode", none).num_gpus == 0.0


def _shares(job, gpus):
    return gpu_shares(job, [p.name for p in pool_layout(job, gpu=True)], {"CPU": 16.0, "GPU": float(gpus)})


def test_default_gpu_shares_shrink_to_fit_a_cluster_too_small_for_them():
    # 0.25 + 1 + 0.5 GPUs: on one GPU the sampler's actor could never be placed beside the other two (Ray Data
    # waited for ever); scaled, one actor of each pool fits on each GPU
    single = load_job({"model": {**DEBUG, "device": "cuda"}})
    shares, note = _shares(single, 1)
    assert sum(shares.values()) <= 1 and shares["base_sample"] == 0.5714 and "do not fit" in note
    assert shares["text_encode"] < shares["decode"] < shares["base_sample"]
    assert resources(single, "base_sample", {"GPU": 1.0}, num_gpus=shares["base_sample"]).max_actors == 1
    assert _shares(single, 2) == ({"text_encode": 0.25, "base_sample": 1.0, "decode": 0.5}, "")
    multi = load_job({"model": {**MULTISCALE, "device": "cuda"}})  # 3 GPUs' worth, two of them whole
    assert _shares(multi, 3)[1] == "" and "fusion.base_refine" in _shares(multi, 2)[1]
    assert sum(_shares(multi, 1)[0].values()) <= 1
    # scaled no further than needed: on 2 GPUs the two transformers' actors can never share one
    on_two = _shares(multi, 2)[0]
    assert on_two["base_sample"] == on_two["refine"] > 0.5 and sum(on_two.values()) <= 2
    # a pool that starts two actors needs room for both
    two = load_job({"model": {**DEBUG, "device": "cuda"}, "pools": {"base_sample": {"concurrency": [2, 4]}}})
    shares, note = _shares(two, 2)
    assert "base_sample 1 x2" in note and 2 * shares["base_sample"] + shares["text_encode"] + shares["decode"] <= 2
    assert _shares(two, 3)[1] == ""
    fused = load_job({"model": {**MULTISCALE, "device": "cuda"}, "pools": {"fusion": {"base_refine": True}}})
    assert _shares(fused, 2)[1] == ""  # text 0.25 + (base, upsample, refine) 1 + decode 0.5


def test_gpu_shares_a_job_set_are_kept_and_a_misfit_is_named():
    tight = load_job({"model": DEBUG, "pools": {"base_sample": {"num_gpus": 1}}})
    shares, note = _shares(tight, 1)
    assert shares == {"text_encode": 0.25, "base_sample": 1.0, "decode": 0.5} and "wait until GPUs join" in note
    shipped = load_job({"model": DEBUG, "pools": {"text_encode": {"num_gpus": 0.1}, "base_sample": {"num_gpus": 0.6},
                                                  "decode": {"num_gpus": 0.3}}})  # fmt: skip
    assert _shares(shipped, 1) == ({"text_encode": 0.1, "base_sample": 0.6, "decode": 0.3}, "")
    two_each = load_job({"model": DEBUG, "pools": {"base_sample": {"num_gpus": 2}}})
    assert _shares(two_each, 2)[1] and not _shares(two_each, 3)[1]  # 2 whole GPUs, then 0.75 beside
    # no GPU up yet (an autoscaling cluster): nothing to fit against; the defaults are requested as they are
    cuda = load_job({"model": {**DEBUG, "device": "cuda"}})
    assert gpu_shares(cuda, ["text_encode", "base_sample", "decode"], {"CPU": 8.0})[0]["base_sample"] == 1.0
    assert gpu_shares(load_job({"model": DEBUG}), ["base_sample"], {"CPU": 8.0}) == ({"base_sample": 0.0}, "")


def test_settings_the_one_pool_layout_ignores_are_named():
    job = load_job({"model": MULTISCALE, "pools": {"decode": {"num_cpus": 2}, "base_sample": {"num_cpus": 3},
                                                  "fusion": {"base_refine": True}}})  # fmt: skip
    assert unused_pool_settings(job, pool_layout(job, gpu=False)) == ["pools.decode", "pools.fusion.base_refine"]
    assert unused_pool_settings(job, pool_layout(job, gpu=True)) == []


def test_the_driver_names_the_stage_classes_as_they_name_themselves():
    from ltx_batch.stages.fused import fuse

    for name in STAGE_CLASSES:
        assert stage_class(name).name == name
    assert OVERLAP_IO == {name for name in STAGE_CLASSES if stage_class(name).overlap_io}
    whole = Pool(tuple(STAGE_CLASSES), pool="base_sample", whole=True)
    assert whole.label == fuse(*map(stage_class, whole.parts)).__name__ == actor_class(whole).__name__
    assert whole.concurrent_io and not Pool(("refine",)).concurrent_io and Pool(("refine", "decode")).concurrent_io
    assert build_stage_class(Pool(("refine",))) is stage_class("refine")
    # the dashboard's names: each pool's label is its stage class's name, in every layout
    for fusion in ({}, {"all_stages": True}, {"base_refine": True}, {"refine_decode": True},
                   {"base_refine": True, "refine_decode": True}):  # fmt: skip
        job = load_job({"model": MULTISCALE, "pools": {"fusion": fusion}})
        for pool in pool_layout(job, gpu=True):
            assert pool.label == build_stage_class(pool).__name__ == actor_class(pool).__name__


def test_the_run_driver_plans_and_ships_the_pools_without_importing_torch(tmp_path):
    # torch costs ~1.3 s before Ray can even start on two cores (and every CLI verb paid it); the driver only
    # needs names: the stage classes are imported in the actors. The actor classes go as Ray ships them
    # (ray.cloudpickle, by value) and a fresh process, as a Ray worker is, loads them without torch too.
    ship = f"""
import pickle, sys
from ray import cloudpickle
from ltx_batch import load_job
from ltx_batch.cli import build_parser
from ltx_batch.io.storage import Storage
from ltx_batch.pipeline import plan
from ltx_batch.report import write_report
from ltx_batch.stages.layout import actor_class, pool_layout
from ltx_batch.submit import submit_job

job = load_job("jobs/demo.yaml", output={str(tmp_path / "out")!r})
todo, done, _ = plan(job, Storage(job.output))
assert len(todo) == 3 and not done
pools = [pool for gpu in (False, True) for pool in pool_layout(job, gpu=gpu)]
with open({str(tmp_path / "actors.pkl")!r}, "wb") as fh:
    fh.write(cloudpickle.dumps([actor_class(pool) for pool in pools]))
loaded = [m for m in ("torch", "transformers", "safetensors.torch") if m in sys.modules]
assert not loaded, loaded
"""
    load = f"""
import pickle, sys
from ltx_batch.stages.layout import StageActor
with open({str(tmp_path / "actors.pkl")!r}, "rb") as fh:
    classes = pickle.load(fh)
assert [c.__name__ for c in classes] == ["TextEncodeBaseSampleDecodeStage", "TextEncodeStage", "BaseSampleStage",
                                         "DecodeStage"], classes
assert all(c.__mro__[1] is StageActor and c.layout.parts for c in classes)
assert "torch" not in sys.modules
"""
    root = Path(__file__).resolve().parents[2]
    for script in (ship, load):
        done = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-3000:]


def test_fused_parts_run_with_the_fused_pools_cpu_share(tmp_path):
    job = load_job({"model": {**DEBUG, "dtype": "float32", "device": "cpu"}, "output": str(tmp_path),
                    "pools": {"text_encode": {"num_cpus": 2}, "base_sample": {"num_cpus": 1},
                              "decode": {"num_cpus": 2}}})  # fmt: skip
    (pool,) = pool_layout(job, gpu=False)
    fused_cls = build_stage_class(pool)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        fused = fused_cls(job, eager=True)  # as on an actor: every part loads its models
        assert {part.pool for part in fused.stages} == {"base_sample"}
        assert torch.get_num_threads() == 1  # base_sample's num_cpus, not text_encode's or decode's
        # num_cpus unset: this process's cores over the pool's actors
        job = load_job({"model": {**DEBUG, "dtype": "float32", "device": "cpu"}, "output": str(tmp_path)})
        torch.set_num_threads(3)
        fused_cls(job, eager=True)
        assert torch.get_num_threads() == whole_pipeline_threads(None) == usable_cores()
    finally:
        torch.set_num_threads(threads)


def test_the_one_pool_actor_renders_rows_as_the_stages_in_turn_do(tmp_path):
    job = _job(tmp_path / "fused")
    (pool,) = pool_layout(job, gpu=False)
    rows = [{"id": "a", "prompt": "a red kite", "seed": 3}, {"id": "b", "prompt": "rain on a tin roof", "seed": 4}]
    threads = torch.get_num_threads()
    try:
        # as Ray Data does: the driver's actor class, made from names, builds the fused stage on the actor
        done = actor_class(pool)(job, eager=True)(_records(job, rows))
    finally:
        torch.set_num_threads(threads)
    assert [(r["id"], r["error"]) for r in done] == [("a", ""), ("b", "")]
    assert set(json.loads(done[0]["timings"])) == {"text_encode", "base_sample", "decode"}  # each part's own
    split = _job(tmp_path / "split")
    assert all(alive(r) for r in _run(split, _records(split, rows)))
    for row in rows:
        frames_close(np.load(tmp_path / "fused" / "frames" / f"{row['id']}.npy"),
                     np.load(tmp_path / "split" / "frames" / f"{row['id']}.npy"), max_tol=1e-4, mean_tol=1e-5)


def test_whole_pipeline_threads_share_the_cores_among_the_pools_actors():
    assert whole_pipeline_threads(None, cores=16) == 16  # one actor: every core
    assert whole_pipeline_threads(4, cores=16) == whole_pipeline_threads((1, 4), cores=16) == 4
    assert whole_pipeline_threads(None, cores=2) == 2
    assert whole_pipeline_threads(8, cores=2) == 1


def test_a_containers_cpu_quota_caps_the_cores(tmp_path):
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cpu.max").write_text("800000 100000\n")  # a pod limited to 8 CPUs
    assert cgroup_cpu_limit(str(v2)) == 8.0
    assert usable_cores(str(v2)) == min(8, len(os.sched_getaffinity(0)))
    (v2 / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_limit(str(v2)) is None and usable_cores(str(v2)) == len(os.sched_getaffinity(0))
    v1 = tmp_path / "v1" / "cpu"
    v1.mkdir(parents=True)
    (v1 / "cpu.cfs_quota_us").write_text("150000\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_limit(str(tmp_path / "v1")) == 1.5 and usable_cores(str(tmp_path / "v1")) == 1
    (v1 / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_cpu_limit(str(tmp_path / "v1")) is None
    assert cgroup_cpu_limit(str(tmp_path / "nothing")) is None
