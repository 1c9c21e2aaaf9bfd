"""How a stage fails: a failed batch's memory is let go before its rows are retried one by one, and a GPU that
is lost to the process takes the actor down (Ray replaces it) instead of failing every later row."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch

from ltx_batch import load_job
from ltx_batch.stages import base, layout
from ltx_batch.stages.base import MAX_ATTEMPTS, Stage, device_lost
from ltx_batch.stages.errors import DeviceLost
from ltx_batch.stages.layout import Pool, actor_class

from .test_stages import InProcessCounter

JOB = load_job({"model": {"preset": "ltxv-debug", "device": "cpu"}})
CUDA = torch.device("cuda")  # only named: nothing here runs on it


class BatchStage(Stage):
    """Rows processed in one group; a group of several fails after allocating, as an out-of-memory does (or
    every group holding the ``poison`` row fails with ``error``; or none fails: ``ok_in_batches``)."""

    name = "base_sample"
    outputs = ("latents",)

    def __init__(self, *args, device=torch.device("cpu"), error=None, ok_in_batches=False, poison="", **kwargs):
        super().__init__(*args, **kwargs)
        self._device, self.error, self.ok_in_batches, self.poison = device, error, ok_in_batches, poison
        self.batch_tensors: list[weakref.ref] = []
        self.alive_at_retry: list[int] = []
        self.group_sizes: list[int] = []

    @property
    def device(self):
        return self._device

    def group(self, records):
        return [records]

    def process(self, records):
        self.group_sizes.append(len(records))
        activations = torch.ones(1024, 1024)  # held by this frame, and so by the traceback of what it raises
        if self.poison and any(r["id"] == self.poison for r in records):
            raise self.error
        if self.ok_in_batches or self.poison:
            for record in records:
                record["latents"] = b"ok"
            return
        if len(records) > 1:
            self.batch_tensors.append(weakref.ref(activations))
            raise self.error or torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        self.alive_at_retry.append(sum(ref() is not None for ref in self.batch_tensors))
        records[0]["latents"] = b"ok"


def _records(*ids):
    return [{"id": i, "error": "", "error_stage": "", "latents": b"", "timings": "{}", "snapshots": "{}"} for i in ids]


def test_a_failed_batch_is_freed_before_its_rows_are_retried_alone():
    gc.disable()  # the retry itself must drop the failed call's frames (a cycle through its traceback)
    try:
        stage = BatchStage(JOB)
        out = stage(_records("a", "b"))
    finally:
        gc.enable()
    assert [r["latents"] for r in out] == [b"ok", b"ok"] and [r["error"] for r in out] == ["", ""]
    assert len(stage.batch_tensors) == 1 and stage.alive_at_retry == [0, 0]


def test_only_an_error_the_device_does_not_survive_is_a_lost_device(monkeypatch):
    illegal = torch.AcceleratorError("CUDA error: an illegal memory access was encountered")
    triton = RuntimeError("Triton Error [CUDA]: an illegal memory access was encountered")  # compiled blocks
    cudnn = RuntimeError("cuDNN error: CUDNN_STATUS_EXECUTION_FAILED")  # the VAE's Conv3d
    monkeypatch.setattr(base, "_device_answers", lambda device: False)  # the probe after the error fails
    assert all(device_lost(e, CUDA) for e in (illegal, triton, cudnn))
    assert not device_lost(torch.OutOfMemoryError("CUDA out of memory"), CUDA)
    assert not device_lost(torch.AcceleratorError("CUDA error: out of memory"), CUDA)  # a cudaMalloc of a workspace
    assert not device_lost(illegal, torch.device("cpu"))
    monkeypatch.setattr(base, "_device_answers", lambda device: True)  # not sticky: the row fails, the actor goes on
    assert not any(device_lost(e, CUDA) for e in (illegal, triton, cudnn, ValueError("conditions[0].uri")))


def test_a_device_too_full_to_answer_the_probe_is_not_lost(monkeypatch):
    def full(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 MiB")

    monkeypatch.setattr(torch, "ones", full)
    assert base._device_answers(CUDA)


def test_a_device_that_cannot_even_empty_its_cache_is_lost(monkeypatch):
    monkeypatch.setattr(base, "_device_answers", lambda device: True)  # the batch's error alone looked harmless

    def broken():
        raise torch.AcceleratorError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(torch.cuda, "empty_cache", broken)
    stage = BatchStage(JOB, device=CUDA, error=RuntimeError("cuDNN error: CUDNN_STATUS_EXECUTION_FAILED"))
    with pytest.raises(DeviceLost, match="emptying the CUDA cache"):
        stage(_records("a", "b"))
    assert stage.alive_at_retry == []


def test_rows_batched_with_one_whose_worker_died_are_retried_alone():
    # a row was in this stage when its actor died: it runs alone next, so it cannot take the others down again
    counter = InProcessCounter()
    counter.counts[("base_sample", "b")] = 1
    stage = BatchStage(JOB, counter, ok_in_batches=True)
    out = stage(_records("a", "b", "c"))
    assert stage.group_sizes == [1, 1, 1] and [r["error"] for r in out] == ["", "", ""]
    assert [r["attempts"] for r in out] == [1, 2, 1] and set(counter.counts.values()) == {0, 1}
    fresh = BatchStage(JOB, InProcessCounter(), ok_in_batches=True)
    fresh(_records("a", "b", "c"))
    assert fresh.group_sizes == [3]


def test_a_lost_device_keeps_the_rows_try_counted_and_raises(monkeypatch):
    monkeypatch.setattr(base, "_device_answers", lambda device: False)
    error = torch.AcceleratorError("CUDA error: an illegal memory access was encountered")
    stage = BatchStage(JOB, InProcessCounter(), device=CUDA, error=error)
    with pytest.raises(DeviceLost, match="illegal memory access") as raised:
        stage(_records("a", "b"))
    assert raised.value.__cause__ is error
    # no retry on a dead context, and the try stays counted, as if the process had died in the model
    assert stage.alive_at_retry == [] and stage.attempts.counts == {("base_sample", "a"): 1, ("base_sample", "b"): 1}


def test_a_row_that_keeps_losing_the_device_fails_alone_after_the_attempt_limit(monkeypatch):
    monkeypatch.setattr(base, "_device_answers", lambda device: False)
    error = torch.AcceleratorError("CUDA error: device-side assert triggered")
    counter = InProcessCounter()
    for _ in range(MAX_ATTEMPTS):  # each actor that takes the row dies on it; Ray retries it on a fresh one
        with pytest.raises(DeviceLost):
            BatchStage(JOB, counter, device=CUDA, error=error, poison="a")(_records("a", "b"))
    last = BatchStage(JOB, counter, device=CUDA, error=error, poison="a")
    a, b = last(_records("a", "b"))
    assert "gave up after 3 attempts" in a["error"] and "lost GPU" in a["error"]
    assert b["error"] == "" and b["latents"] == b"ok" and last.group_sizes == [1]  # b, alone: a never ran again


def test_the_ray_actor_exits_when_its_device_is_lost(monkeypatch):
    exits = []
    monkeypatch.setattr(layout.os, "_exit", exits.append)
    cls = actor_class(Pool(("base_sample",)))
    actor = cls.__new__(cls)  # the stage inside is this test's, not the real sampler

    class Lost:
        def __call__(self, batch):
            raise DeviceLost("stage base_sample: AcceleratorError: CUDA error: an illegal memory access")

    actor.stage = Lost()
    actor([])
    assert exits == [75]
