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
    """Rows processed in one group; a group of several fails after allocating, as an out-of-memory does."""

    name = "base_sample"
    outputs = ("latents",)

    def __init__(self, *args, device=torch.device("cpu"), error=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._device, self.error = device, error
        self.batch_tensors: list[weakref.ref] = []
        self.alive_at_retry: list[int] = []

    @property
    def device(self):
        return self._device

    def group(self, records):
        return [records]

    def process(self, records):
        activations = torch.ones(1024, 1024)  # held by this frame, and so by the traceback of what it raises
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


def test_only_a_cuda_error_that_the_device_does_not_survive_is_a_lost_device(monkeypatch):
    illegal = torch.AcceleratorError("CUDA error: an illegal memory access was encountered")
    monkeypatch.setattr(base, "_device_answers", lambda device: False)
    assert device_lost(illegal, CUDA)
    assert device_lost(RuntimeError("CUDA error: device-side assert triggered"), CUDA)  # torch before 2.8
    assert not device_lost(torch.OutOfMemoryError("CUDA out of memory"), CUDA)
    assert not device_lost(ValueError("conditions[0].uri: cannot read"), CUDA)
    assert not device_lost(illegal, torch.device("cpu"))
    monkeypatch.setattr(base, "_device_answers", lambda device: True)  # not sticky: the row fails, the actor goes on
    assert not device_lost(illegal, CUDA)


def test_a_lost_device_keeps_the_rows_try_counted_and_raises(monkeypatch):
    monkeypatch.setattr(base, "_device_answers", lambda device: False)
    error = torch.AcceleratorError("CUDA error: an illegal memory access was encountered")
    stage = BatchStage(JOB, InProcessCounter(), device=CUDA, error=error)
    with pytest.raises(DeviceLost, match="illegal memory access") as raised:
        stage(_records("a", "b"))
    assert raised.value.__cause__ is error
    # no retry on a dead context, and the try stays counted, as if the process had died in the model
    assert stage.alive_at_retry == [] and stage.attempts.counts == {("base_sample", "a"): 1, ("base_sample", "b"): 1}


def test_a_row_that_keeps_losing_the_device_fails_after_the_attempt_limit(monkeypatch):
    monkeypatch.setattr(base, "_device_answers", lambda device: False)
    error = torch.AcceleratorError("CUDA error: device-side assert triggered")
    counter = InProcessCounter()
    for _ in range(MAX_ATTEMPTS):  # each actor that takes the row dies on it; Ray retries it on a fresh one
        with pytest.raises(DeviceLost):
            BatchStage(JOB, counter, device=CUDA, error=error)(_records("a", "b"))
    out = BatchStage(JOB, counter, device=CUDA, error=error)(_records("a", "b"))
    assert all("gave up after 3 attempts" in r["error"] and "lost GPU" in r["error"] for r in out)


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
