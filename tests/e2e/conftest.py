"""Real services for end-to-end tests: an S3 endpoint (moto's server on 127.0.0.1) and one local Ray.

The S3 settings go into the environment before Ray starts, so the local Ray's workers inherit them (and
``ensure_ray`` forwards the endpoint through the runtime env, as it does for remote clusters).
"""

from __future__ import annotations

import os
import socket

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint():
    from moto.server import ThreadedMotoServer

    port = _free_port()
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

    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_endpoint})
    return fs


@pytest.fixture(scope="session")
def ray_local(s3_endpoint):
    """One local Ray for the whole session (tests share it; actors are per job)."""
    import ray

    from ltx_batch.pipeline import ensure_ray

    ensure_ray()
    yield
    ray.shutdown()
