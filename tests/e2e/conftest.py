"""Real services for end-to-end tests: an S3 endpoint (moto's server on 127.0.0.1) and one Ray cluster.

The Ray head is started with ``ray start`` on 127.0.0.1 (dashboard included, for the Jobs API); the tests'
own driver connects to it, so ``run`` and ``submit`` tests share one Ray. The S3 settings are in the
environment before the head starts; ``ensure_ray`` also forwards the endpoint through the runtime env, as
it does for remote clusters.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint():
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    os.environ.update({
        "AWS_ENDPOINT_URL": url, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    })  # fmt: skip
    yield url
    server.stop()


@pytest.fixture(scope="session")
def s3fs_client(s3_endpoint):
    import s3fs

    return s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_endpoint})


def _ray_cli() -> list[str]:
    exe = shutil.which("ray", path=os.path.dirname(sys.executable)) or shutil.which("ray")
    return [exe] if exe else [sys.executable, "-m", "ray.scripts.scripts"]


@pytest.fixture(scope="session")
def ray_cluster(s3_endpoint, tmp_path_factory):
    """A local Ray head (8 logical CPUs on this 2-core box) with its dashboard; yields the dashboard URL."""
    import ray

    port, dash = free_port(), free_port()
    temp = tmp_path_factory.mktemp("ray")
    # token auth (Ray's default) needs a token shared by every client: loopback-only tests turn it off
    os.environ["RAY_AUTH_MODE"] = "disabled"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    subprocess.run(
        [*_ray_cli(), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", "--num-cpus=8", "--include-dashboard=true",
         f"--temp-dir={temp}", "--disable-usage-stats"],
        check=True, env=env, capture_output=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{dash}"
    deadline = time.time() + 90
    while True:  # the Jobs API answers once the dashboard's job agent is up
        try:
            urllib.request.urlopen(f"{url}/api/version", timeout=2)
            break
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(1)
    os.environ["RAY_ADDRESS"] = f"127.0.0.1:{port}"
    from ltx_batch.pipeline import ensure_ray

    ensure_ray()  # the tests' driver joins the same cluster
    yield url
    ray.shutdown()
    os.environ.pop("RAY_ADDRESS", None)
    subprocess.run([*_ray_cli(), "stop", "--force"], env=env, capture_output=True)


@pytest.fixture(scope="session")
def ray_local(ray_cluster):
    return ray_cluster
