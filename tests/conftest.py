"""Shared test setup: one thread per process, a private checkpoint cache, the debug checkpoints."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)
# Every test session gets its own cache, so the debug checkpoints are really made by the code under test.
_CACHE = Path(os.environ.get("PYTEST_LTX_CACHE", "/tmp/ltx-batch-test-cache")) / str(os.getpid())
os.environ["LTX_BATCH_CACHE"] = str(_CACHE)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_CACHE, ignore_errors=True)


@pytest.fixture(scope="session")
def debug_dir() -> Path:
    from ltx_batch.weights.resolve import resolve

    return resolve("ltxv-debug").path


@pytest.fixture(scope="session")
def debug_upsampler_dir() -> Path:
    from ltx_batch.weights.resolve import resolve

    return resolve("ltxv-debug-upsampler").path


def frames_close(ours, ref, max_tol: float = 2e-3, mean_tol: float = 2e-4) -> None:
    """The DESIGN.md parity tolerance on frames in [0, 1]."""
    import numpy as np

    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    diff = np.abs(ours.astype(np.float64) - ref.astype(np.float64))
    assert diff.max() <= max_tol and diff.mean() <= mean_tol, f"max {diff.max():.2e}, mean {diff.mean():.2e}"
