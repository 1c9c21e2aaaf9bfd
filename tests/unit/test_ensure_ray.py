"""Which Ray ``run`` uses without ``--address``: its own local one, or the one ``ray start`` left on this machine.

Ray's ``ray.init()`` without an address joins a cluster that ``ray start`` started on this machine, and then
refuses the size a local start passes; ``run`` failed there with exit 1 (found while measuring the README's
advice to keep a Ray running). Checked here with ``ray.init`` recorded, since a second real cluster beside
the tests' shared one would have ``ray stop`` take both down; the real join was run by hand.
"""

from __future__ import annotations

import pytest

REFUSAL = "When connecting to an existing cluster, num_cpus and num_gpus must not be provided."


def _ensure_ray_with(monkeypatch, answer, address: str | None = None) -> list[dict]:
    """``ensure_ray(address)`` with ``ray.init`` recorded; ``answer(kwargs)`` raises as Ray would."""
    import ray

    from ltx_batch.pipeline import ensure_ray

    calls: list[dict] = []

    def init(**kwargs):
        calls.append(kwargs)
        answer(kwargs)

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", init)
    from ltx_batch.submit import FORWARDED_ENV

    for var in ("RAY_ADDRESS", "RAY_JOB_CONFIG_JSON_ENV_VAR", "HF_HOME", *FORWARDED_ENV):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    monkeypatch.setenv("LTX_BATCH_CACHE", "/home/me/.cache/ltx_batch")
    ensure_ray(address)
    return calls


def test_without_a_ray_on_this_machine_run_starts_its_own(monkeypatch):
    calls = _ensure_ray_with(monkeypatch, lambda kwargs: None)
    assert len(calls) == 1 and calls[0]["num_cpus"] >= 8 and "address" not in calls[0]


def test_a_ray_started_with_ray_start_is_joined_not_an_error(monkeypatch):
    def existing(kwargs):  # as Ray answers when ray_current_cluster names a running head
        if "num_cpus" in kwargs:
            raise ValueError(REFUSAL)

    calls = _ensure_ray_with(monkeypatch, existing)
    assert len(calls) == 2 and "num_cpus" in calls[0]
    joined = calls[1]
    assert joined["address"] is None and "num_cpus" not in joined  # Ray's own default: the running head
    # its workers were not started from this shell: the settings go along, as with --address; on this machine
    # the cache folder is the same one
    assert joined["runtime_env"]["env_vars"] == {"AWS_ENDPOINT_URL": "http://127.0.0.1:9000",
                                                 "LTX_BATCH_CACHE": "/home/me/.cache/ltx_batch"}  # fmt: skip


@pytest.mark.parametrize("address, cache", [("ray://10.0.0.5:10001", False), ("10.0.0.5:6379", False),
                                            ("127.0.0.1:6379", True), ("ray://localhost:10001", True)])
def test_cache_folders_go_only_to_a_cluster_on_this_machine(monkeypatch, address, cache):
    # a remote cluster's nodes have their own cache (the image's /cache): this machine's paths would send
    # every pod's downloads to its container's temporary disk
    (call,) = _ensure_ray_with(monkeypatch, lambda kwargs: None, address)
    assert call["address"] == address and "num_cpus" not in call
    env = call["runtime_env"]["env_vars"]
    assert env["AWS_ENDPOINT_URL"] == "http://127.0.0.1:9000" and ("LTX_BATCH_CACHE" in env) == cache


def test_other_start_failures_still_surface(monkeypatch):
    def broken(kwargs):
        raise ValueError("object store memory too small")

    with pytest.raises(ValueError, match="object store"):
        _ensure_ray_with(monkeypatch, broken)
