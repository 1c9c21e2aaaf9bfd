"""The shipped configs: every YAML under infra/ and jobs/ parses; every job loads and validates offline."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ltx_batch.cli import main
from ltx_batch.job import load_job

ROOT = Path(__file__).resolve().parents[2]
YAMLS = sorted(p for d in ("infra", "jobs") for p in (ROOT / d).rglob("*") if p.suffix in (".yaml", ".yml"))
JOBS = sorted((ROOT / "jobs").glob("*.yaml"))


def _id(p: Path) -> str:
    return str(p.relative_to(ROOT))


def test_configs_found():
    assert (ROOT / "jobs" / "demo.yaml") in JOBS and len(JOBS) >= 6
    assert any(p.name == "raycluster.yaml" for p in YAMLS) and any(p.name == "docker-compose.yaml" for p in YAMLS)


@pytest.mark.parametrize("path", YAMLS, ids=_id)
def test_yaml_parses(path):
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs and all(isinstance(d, dict) for d in docs), f"{_id(path)}: expected mapping documents"


def _kinds(name: str) -> dict[str, dict]:
    docs = yaml.safe_load_all((ROOT / "infra" / "kuberay" / name).read_text())
    return {d["kind"]: d for d in docs if d}


def test_kuberay_manifests():
    cluster = _kinds("raycluster.yaml")["RayCluster"]["spec"]
    groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    gpu = [g for g in groups.values() if "nvidia.com/gpu" in str(g["template"])]
    assert gpu and len(groups) > len(gpu), "a GPU worker group and a CPU worker group"
    job = _kinds("rayjob.yaml")["RayJob"]["spec"]
    assert job["shutdownAfterJobFinishes"] is True and job["backoffLimit"] >= 1
    assert job["entrypoint"].startswith("ltx-batch run ") and "--input s3://" in job["entrypoint"]
    cron = _kinds("raycronjob.yaml")["RayCronJob"]["spec"]
    assert cron["schedule"] and cron["jobTemplate"]["entrypoint"].startswith("ltx-batch run ")
    for spec in (job, cron["jobTemplate"]):
        entry_job = spec["entrypoint"].split()[2]
        assert (ROOT / entry_job.removeprefix("/app/")).is_file(), entry_job  # the image has /app/jobs
    # every ServiceAccount a pod names is in serviceaccount.yaml (applied first; a missing one rejects the pods),
    # and only the head's account is the one KubeRay gives the autoscaler's pod rights to
    accounts = {d["metadata"]["name"] for d in yaml.safe_load_all((ROOT / "infra/kuberay/serviceaccount.yaml").read_text())}
    for name, spec in (("raycluster.yaml", cluster), ("rayjob.yaml", job["rayClusterSpec"]),
                       ("raycronjob.yaml", cron["jobTemplate"]["rayClusterSpec"])):  # fmt: skip
        head = spec["headGroupSpec"]["template"]["spec"]["serviceAccountName"]
        workers = {g["template"]["spec"]["serviceAccountName"] for g in spec["workerGroupSpecs"]}
        assert {head, *workers} <= accounts and head not in workers, name
    # retries restart KubeRay's deadline and RayCronJob has no concurrency policy: one attempt per night
    assert cron["jobTemplate"]["backoffLimit"] == 0 and cron["jobTemplate"]["activeDeadlineSeconds"] < 24 * 3600


@pytest.mark.parametrize("path", JOBS, ids=_id)
def test_job_loads_and_validates(path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # presets name hub repos: validation must not download
    job = load_job(path)
    assert job.name == path.stem
    if path.stem != "demo":
        assert job.model.preset == path.stem and job.model.dtype == "bfloat16"
        assert job.input.startswith("s3://") and job.output.startswith("s3://")
        pools = job.pools
        for stage in ("text_encode", "base_sample", "decode"):
            assert getattr(pools, stage).num_gpus, f"{path.name}: pools.{stage}.num_gpus"
        assert pools.fusion.base_refine == job.multiscale  # multi-scale: one transformer copy per GPU
        # one sampler + one decode actor per GPU, plus the cluster's T5 actor on one of them
        per_gpu = pools.base_sample.num_gpus + pools.decode.num_gpus + pools.text_encode.num_gpus
        assert per_gpu <= 1.0 + 1e-9, f"{path.name}: {per_gpu} GPU per GPU"
    # the cluster jobs read s3:// manifests; validate each against the demo manifest here (no network)
    assert main(["validate", str(path), "--input", str(ROOT / "manifests" / "demo.parquet")]) == 0
    err = capsys.readouterr().err
    assert f"job {job.name!r} is valid" in err and "3 rows, 3 valid" in err
