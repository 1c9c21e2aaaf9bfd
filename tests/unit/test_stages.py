"""The stages in-process (no Ray): batching, per-row isolation, and the generator hand-off between stages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ltx_batch import load_job, render_one
from ltx_batch.fingerprint import fingerprint
from ltx_batch.io.rows import validate_row
from ltx_batch.io.video import encode_mp4
from ltx_batch.render import stages_for
from ltx_batch.stages.records import alive, new_record
from ltx_batch.stages.tensors import generator_state, restore_generator

from ..conftest import frames_close

DEFAULTS = {"width": 64, "height": 64, "num_frames": 17}


def _job(out: Path, batch: int = 1, **recipe):
    return load_job({
        "model": {"preset": "ltxv-debug", "dtype": "float32", "device": "cpu"},
        "recipe": {"num_inference_steps": 2, **recipe},
        "defaults": DEFAULTS, "output": str(out), "save": ["frames"],
        "pools": {s: {"batch_size": batch} for s in ("text_encode", "base_sample", "decode")},
    })  # fmt: skip


def _records(job, rows):
    out = []
    for raw in rows:
        row = validate_row(raw, defaults=DEFAULTS, frame_rate=job.recipe.frame_rate)
        out.append(new_record(row, fingerprint(job, row)))
    return out


def _run(job, records):
    for stage in stages_for(job):
        records = stage(records)
    return records


def test_batched_rows_render_as_they_do_alone(tmp_path):
    rows = [{"id": "a", "prompt": "a short prompt", "seed": 1},
            {"id": "b", "prompt": "a much longer prompt about a dog running on a beach", "seed": 2}]
    batched = _job(tmp_path / "batched", batch=2)
    records = _run(batched, _records(batched, rows))
    assert all(alive(r) for r in records)
    alone = _job(tmp_path / "alone", batch=1)
    for raw in rows:
        assert render_one(alone, raw).ok
        frames_close(np.load(tmp_path / "batched" / "frames" / f"{raw['id']}.npy"),
                     np.load(tmp_path / "alone" / "frames" / f"{raw['id']}.npy"), max_tol=1e-4, mean_tol=1e-5)


def test_a_failing_batch_is_retried_row_by_row(tmp_path):
    # two condition videos of different lengths cannot share one forward: the batch fails, each row succeeds alone
    rng = np.random.default_rng(0)
    for name, n in (("short.mp4", 9), ("long.mp4", 17)):
        (tmp_path / name).write_bytes(encode_mp4(rng.random((n, 64, 64, 3)).astype(np.float32), 25))
    rows = [{"id": name.split(".")[0], "prompt": "video to video", "seed": 3,
             "conditions": [{"uri": str(tmp_path / name), "frame_index": 0}]} for name in ("short.mp4", "long.mp4")]
    job = _job(tmp_path / "out", batch=2)
    records = _run(job, _records(job, rows))
    assert [r["error"] for r in records] == ["", ""]
    assert sorted(p.name for p in (tmp_path / "out" / "frames").iterdir()) == ["long.npy", "short.npy"]


def test_failed_rows_pass_through_and_blobs_are_dropped(tmp_path):
    job = _job(tmp_path / "out", batch=2)
    rows = [{"id": "ok", "prompt": "fine", "seed": 1},
            {"id": "bad", "prompt": "missing media", "conditions": [{"uri": str(tmp_path / "nope.png"), "frame_index": 0}]}]
    records = _run(job, _records(job, rows))
    ok, bad = records
    assert alive(ok) and not alive(bad)
    assert bad["error_stage"] == "base_sample" and "conditions[0].uri" in bad["error"]
    assert all(r[c] == b"" for r in records for c in ("text", "latents", "generator"))
    assert not (tmp_path / "out" / "frames" / "bad.npy").exists()


def test_generator_state_continues_the_stream():
    g = torch.Generator().manual_seed(123)
    torch.randn(5, generator=g)
    copy = restore_generator(generator_state(g))
    assert torch.equal(torch.randn(7, generator=g), torch.randn(7, generator=copy))


def test_decode_writes_one_row_while_the_next_decodes(tmp_path, monkeypatch):
    # overlap_io: the decode stage holds its compute lock only around the VAE, so a second call (Ray gives
    # its actors two) decodes while the first is still encoding/uploading. Row a's write waits until row b
    # has reached its own write, which it can only do by decoding while a holds no lock.
    import threading

    from ltx_batch.stages import decode as decode_module

    job = _job(tmp_path / "out")
    *upstream, decode = stages_for(job)
    records = _records(job, [{"id": "a", "prompt": "first", "seed": 1}, {"id": "b", "prompt": "second", "seed": 2}])
    for stage in upstream:
        records = stage(records)
    a_writing, b_writing = threading.Event(), threading.Event()
    write = decode_module.write_outputs
    decode.attempts = counter = InProcessCounter()
    counted_while_writing = {}

    def gated_write(storage, job, row, **kw):
        counted_while_writing[row.id] = counter.counts[("decode", row.id)]
        if row.id == "a":
            a_writing.set()
            assert b_writing.wait(timeout=60), "row b never decoded while row a was writing"
        else:
            b_writing.set()
        return write(storage, job, row, **kw)

    monkeypatch.setattr(decode_module, "write_outputs", gated_write)
    out = {}
    first = threading.Thread(target=lambda: out.update(a=decode([records[0]])))
    first.start()
    assert a_writing.wait(timeout=60)
    out["b"] = decode([records[1]])
    first.join(timeout=60)
    assert [out[k][0]["error"] for k in "ab"] == ["", ""]
    assert sorted(p.name for p in (tmp_path / "out" / "frames").iterdir()) == ["a.npy", "b.npy"]
    # a try is counted only inside the model: a death while a row writes (or waits) is not blamed on it
    assert counted_while_writing == {"a": 0, "b": 0}
    assert [out[k][0]["attempts"] for k in "ab"] == [1, 1]
    assert counter.calls == [("begin", "a"), ("end", "a"), ("begin", "b"), ("end", "b")]


class InProcessCounter:
    """``pipeline.AttemptCounter``'s interface without Ray: ``begin.remote`` / ``end.remote`` run here."""

    def __init__(self):
        self.counts, self.calls = {}, []
        self.begin = type("Method", (), {"remote": staticmethod(self._begin)})
        self.end = type("Method", (), {"remote": staticmethod(self._end)})

    def _begin(self, stage, ids):
        for i in ids:
            self.counts[(stage, i)] = self.counts.get((stage, i), 0) + 1
            self.calls.append(("begin", i))
        return {i: self.counts[(stage, i)] for i in ids}

    def _end(self, stage, ids):
        for i in ids:
            self.counts[(stage, i)] -= 1
            self.calls.append(("end", i))


def test_a_row_whose_actor_died_too_often_in_the_model_fails_there(tmp_path):
    job = _job(tmp_path / "out")
    *upstream, decode = stages_for(job)
    records = _records(job, [{"id": "a", "prompt": "first", "seed": 1}])
    for stage in upstream:
        records = stage(records)
    decode.attempts = counter = InProcessCounter()
    counter.counts[("decode", "a")] = 3  # three deaths inside the VAE, never ended
    (record,) = decode(records)
    assert record["error_stage"] == "decode" and "gave up after 3 attempts" in record["error"]
    assert record["attempts"] == 3 and not (tmp_path / "out" / "frames" / "a.npy").exists()


def test_fused_parts_share_one_compute_lock(tmp_path):
    from ltx_batch.stages.decode import DecodeStage
    from ltx_batch.stages.fused import fuse
    from ltx_batch.stages.sample import RefineStage

    fused_cls = fuse(RefineStage, DecodeStage)
    fused = fused_cls(_job(tmp_path / "out"))
    assert all(part.compute is fused.compute for part in fused.stages)


def test_mp4_is_the_same_whether_frames_are_quantised_on_the_device_or_on_the_host(tmp_path):
    # save: [mp4] quantises on the VAE's device; saving float frames too takes the host path
    row = {"id": "r", "prompt": "a lighthouse at dusk", "seed": 5}
    for name, save in (("device", ["mp4"]), ("host", ["mp4", "frames"])):
        job = load_job({"model": {"preset": "ltxv-debug", "dtype": "float32", "device": "cpu"},
                        "recipe": {"num_inference_steps": 2}, "defaults": DEFAULTS, "output": str(tmp_path / name),
                        "save": save})  # fmt: skip
        assert render_one(job, row).ok
    assert (tmp_path / "device/videos/r.mp4").read_bytes() == (tmp_path / "host/videos/r.mp4").read_bytes()


def test_render_can_free_the_text_encoder_before_sampling(tmp_path):
    import gc
    import weakref

    from ltx_batch.render import Renderer
    from ltx_batch.stages import models

    job = _job(tmp_path / "out")
    models.clear()
    renderer = Renderer(job, keep_text_encoder=False)
    text_stage, sample_stage = renderer.stages[:2]
    text_stage.ensure_setup()
    encoder = weakref.ref(text_stage.encoder)
    seen = []
    original = sample_stage.process

    def spy(records):  # is T5 still alive when sampling starts?
        gc.collect()
        seen.append(encoder())
        return original(records)

    sample_stage.process = spy
    assert renderer.render({"id": "a", "prompt": "first", "seed": 1}).ok
    assert seen == [None]  # T5 was garbage when the sampler ran
    assert renderer.render({"id": "b", "prompt": "second", "seed": 2}).ok  # loaded again for the next row

    kept = Renderer(_job(tmp_path / "kept"))
    assert kept.render({"id": "c", "prompt": "third", "seed": 3}).ok
    assert kept.stages[0].encoder is not None


def test_render_many_writes_one_row_while_the_next_renders(tmp_path, monkeypatch):
    # Row a's write waits until row b is writing too, which b can reach only by encoding, sampling and
    # decoding while a writes: the test hangs (and fails on the timeout) if render_many renders one by one.
    import threading

    from ltx_batch.render import Renderer
    from ltx_batch.stages import decode as decode_module

    rows = [{"id": i, "prompt": f"prompt {i}", "seed": n} for n, i in enumerate("abc")]
    a_writing, b_writing = threading.Event(), threading.Event()
    write = decode_module.write_outputs

    def gated_write(storage, job, row, **kw):
        if row.id == "a":
            a_writing.set()
            assert b_writing.wait(timeout=60), "row b did not render while row a was writing"
        elif row.id == "b":
            b_writing.set()
        return write(storage, job, row, **kw)

    monkeypatch.setattr(decode_module, "write_outputs", gated_write)
    results = list(Renderer(_job(tmp_path / "many")).render_many(rows))
    assert [(r.id, r.ok) for r in results] == [("a", True), ("b", True), ("c", True)]  # in order
    monkeypatch.setattr(decode_module, "write_outputs", write)
    one_by_one = Renderer(_job(tmp_path / "single"))
    for row in rows:  # the same frames as rendering the rows one at a time
        assert one_by_one.render(row).ok
        assert np.array_equal(np.load(tmp_path / "many" / "frames" / f"{row['id']}.npy"),
                              np.load(tmp_path / "single" / "frames" / f"{row['id']}.npy"))  # fmt: skip


def test_render_many_frees_the_text_encoder_after_the_last_row_only(tmp_path):
    from ltx_batch.render import Renderer

    renderer = Renderer(_job(tmp_path / "out"), keep_text_encoder=False)
    loads = []
    setup = renderer.stages[0].setup
    renderer.stages[0].setup = lambda: (loads.append(1), setup())[1]
    results = list(renderer.render_many({"id": f"r{i}", "prompt": f"prompt {i}", "seed": i} for i in range(3)))
    assert all(r.ok for r in results)
    assert len(loads) == 1 and renderer.stages[0].encoder is None  # loaded once, freed at the end


def test_rows_sharing_positions_share_one_rope_table(tmp_path, monkeypatch):
    # a guided batch of two rows used to carry four copies of the same RoPE tables (rows x CFG halves)
    from ltx_batch.sampling import condition_pass

    grids = []

    def spy(transformer, embeds, mask, grid, dtype):
        grids.append((embeds.shape[0], grid.shape[0]))
        return make_denoiser(transformer, embeds, mask, grid, dtype)

    make_denoiser = condition_pass.make_denoiser
    monkeypatch.setattr(condition_pass, "make_denoiser", spy)
    job = _job(tmp_path / "out", batch=2, guidance_scale=3.0)
    rows = [{"id": "a", "prompt": "a red cat", "seed": 1}, {"id": "b", "prompt": "a blue dog on a beach", "seed": 2}]
    records = _run(job, _records(job, rows))
    assert all(alive(r) for r in records) and grids == [(4, 1)]
