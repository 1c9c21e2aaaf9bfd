"""A row whose actor keeps dying is failed after a bounded number of attempts; the run goes on.

The actor really dies: the test SIGKILLs the sampling actor's process (what the kernel's OOM killer does)
each time it has been busy on the poison row for a while; in the split layout (the GPU default) and with every
stage in one actor (the CPU default), where the quick row shares the actor that keeps dying. Ray restarts the
actor and retries the row; after ``MAX_ATTEMPTS`` the row is failed with a reason, and the other row of the
manifest renders.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from ltx_batch import load_job
from ltx_batch.io.manifest import manifest_table, write_parquet
from ltx_batch.io.results import read_results
from ltx_batch.io.storage import Storage
from ltx_batch.stages.base import MAX_ATTEMPTS

pytestmark = pytest.mark.usefixtures("ray_local")

BUSY_S = 12.0  # kill once the actor has been alive this long: past model loading, inside the poison row


def _killer(stop: threading.Event, kills: list[int]) -> None:
    from ray.util.state import list_actors

    seen: dict[int, float] = {}
    while not stop.is_set():
        try:
            actors = list_actors(filters=[("state", "=", "ALIVE")], raise_on_missing_output=False)
        except Exception:  # noqa: BLE001 - the state API can be briefly unavailable; keep polling
            actors = []
        now = time.monotonic()
        for a in actors:
            if "BaseSample" in a.class_name and a.pid:  # the base_sample pool, or the fused one holding it
                first = seen.setdefault(a.pid, now)
                if now - first > BUSY_S:
                    try:
                        os.kill(a.pid, signal.SIGKILL)
                        kills.append(a.pid)
                    except ProcessLookupError:
                        pass
        time.sleep(0.5)


@pytest.mark.parametrize("all_stages", [False, True])
def test_a_row_that_kills_its_actor_is_failed_after_bounded_attempts(tmp_path, all_stages):
    rows = [{"id": "quick", "prompt": "a small boat", "seed": 1, "width": 64, "height": 64, "num_frames": 9},
            # enough work on two cores that the killer always catches it mid-row
            {"id": "poison", "prompt": "a huge slow row", "seed": 2, "width": 512, "height": 512, "num_frames": 97}]
    write_parquet(manifest_table(rows), str(tmp_path / "m.parquet"))
    job = load_job({
        "model": {"preset": "ltxv-debug", "dtype": "float32", "device": "cpu"},
        "recipe": {"num_inference_steps": 1000},  # the poison row never finishes between kills
        "input": str(tmp_path / "m.parquet"), "output": str(tmp_path / "out"),
        "pools": {"fusion": {"all_stages": all_stages}},
    })  # fmt: skip
    stop, kills = threading.Event(), []
    killer = threading.Thread(target=_killer, args=(stop, kills), daemon=True)
    killer.start()
    try:
        summary = job.run()
    finally:
        stop.set()
        killer.join()
    _, results = read_results(Storage(str(tmp_path / "out")))
    by_id = {r["id"]: r for r in results}
    assert by_id["poison"]["status"] == "failed", by_id["poison"]
    assert f"after {MAX_ATTEMPTS} attempts" in by_id["poison"]["error"]
    assert by_id["poison"]["attempts"] == MAX_ATTEMPTS
    assert len(kills) >= MAX_ATTEMPTS
    assert by_id["quick"]["status"] == "ok" and summary.failed == 1
