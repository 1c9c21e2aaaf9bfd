"""``ltx-batch submit``: a job on a remote Ray cluster through the Ray Jobs API.

The resolved job travels as a file in the runtime env's working directory (never as environment variables,
which the dashboard shows); the entrypoint is ``ltx-batch run job.json`` on the cluster. The submission id is
deterministic: the job name plus a digest of the resolved job and the manifest's identity (size, ETag or
mtime), so submitting the same work twice is recognised: while that submission is pending or running the
existing id is returned; after it ended, a retry gets a suffix (``-r1``, ``-r2``, ...) and, since the run
resumes from the output's metadata, renders only what is missing.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass

from .job import Job
from .spec import SpecError

# Settings (never secrets) the cluster's workers need to reach the same storage.
FORWARDED_ENV = ("AWS_ENDPOINT_URL", "AWS_REGION", "AWS_DEFAULT_REGION", "HF_HUB_OFFLINE", "HF_ENDPOINT")
ACTIVE = {"PENDING", "RUNNING"}
AGENT_WAIT_S = 120


@dataclass
class Submission:
    submission_id: str
    new: bool  # False when the same work was already pending or running
    status: str = "PENDING"
    exit_code: int | None = None


def _remote(url: str | None) -> bool:
    return bool(url) and "://" in url and not url.startswith("file://")


def check_address(address: str) -> None:
    """What Ray's Jobs client takes: the dashboard's URL (``http(s)://...``, a proxy path or an IPv6 host
    included), ``ray://HEAD:10001``, or a bare ``HOST[:PORT]`` (http assumed). An empty address, whitespace or
    another scheme is a typo (exit 2), found before any connection is tried."""
    scheme, sep, rest = address.partition("://")
    if sep:
        valid = scheme in ("http", "https", "ray") and bool(rest) and not re.search(r"\s", rest)
    else:
        valid = bool(address) and not re.search(r"[\s/]", address)
    if not valid:
        raise SpecError(f"--address {address!r}: expected the dashboard's URL, e.g. http://HEAD:8265")


def check_reachable(job: Job) -> None:
    for key in ("input", "output"):
        if not _remote(getattr(job, key)):
            raise SpecError(f"{key}: {getattr(job, key)!r} is a local path; a cluster needs a URL it can reach "
                            "(s3://, gs://, ...)")  # fmt: skip


def manifest_identity(job: Job) -> str:
    import fsspec

    fs, path = fsspec.core.url_to_fs(job.input, **job.storage_options)
    info = fs.info(path)
    return str(info.get("ETag") or info.get("etag") or info.get("mtime") or "") + f":{info.get('size')}"


def submission_base(job: Job) -> str:
    blob = json.dumps({"job": job.to_dict(), "manifest": manifest_identity(job)}, sort_keys=True, default=str)
    name = re.sub(r"[^A-Za-z0-9-]+", "-", job.name).strip("-")[:40] or "job"
    return f"ltx-batch-{name}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def _status(client, submission_id: str) -> str | None:
    try:
        return str(client.get_job_status(submission_id).value)
    except RuntimeError:  # the Jobs API raises RuntimeError for an unknown id
        return None


def submit_job(job: Job, address: str, *, overwrite: bool = False) -> Submission:
    from ray.job_submission import JobSubmissionClient

    check_address(address)
    check_reachable(job)
    client = JobSubmissionClient(address)
    base = submission_base(job)
    candidate, attempt = base, 0
    while True:
        status = _status(client, candidate)
        if status is None:
            break
        if status in ACTIVE:
            return Submission(candidate, new=False, status=status)
        attempt += 1
        candidate = f"{base}-r{attempt}"
    spec = job.to_dict(redact=False)  # the cluster's driver needs the storage options to reach the storage
    spec["model"]["preset"] = None  # already applied: re-applying it would undo e.g. upsampler: none
    entrypoint = "ltx-batch run job.json" + (" --overwrite" if overwrite else "")
    env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
    # the working directory is uploaded by submit_job; the local copy (owner-only) does not outlive it
    with tempfile.TemporaryDirectory(prefix="ltx-batch-submit-") as workdir:
        fd = os.open(os.path.join(workdir, "job.json"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(spec, fh, default=str)
        deadline = time.monotonic() + AGENT_WAIT_S
        while True:
            try:
                client.submit_job(entrypoint=entrypoint, submission_id=candidate,
                                  runtime_env={"working_dir": workdir, "env_vars": env},
                                  metadata={"ltx_batch_job": job.name})  # fmt: skip
                return Submission(candidate, new=True)
            except RuntimeError as e:
                # a head that just started has no job agent yet: the dashboard says so, and it is transient
                if "No available agent" not in str(e) or time.monotonic() > deadline:
                    raise
                time.sleep(2)


def wait(address: str, submission: Submission, *, follow: bool = True, poll: float = 2.0) -> Submission:
    """Follow the logs until the job ends; the exit code is the driver's (0 / 3 / 2 / 1 as ``ltx-batch run``)."""
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(address)
    printed = 0
    while True:
        status = _status(client, submission.submission_id) or "PENDING"
        if follow:
            logs = client.get_job_logs(submission.submission_id)
            sys.stdout.write(logs[printed:])
            sys.stdout.flush()
            printed = len(logs)
        if status not in ACTIVE:
            break
        time.sleep(poll)
    info = client.get_job_info(submission.submission_id)
    submission.status = status
    code = getattr(info, "driver_exit_code", None)
    submission.exit_code = code if code is not None else (0 if status == "SUCCEEDED" else 1)
    return submission
