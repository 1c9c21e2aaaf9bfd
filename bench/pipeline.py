"""Pipeline overhead: the same manifest through ``run`` (Ray, stages overlapping) and a loop of ``render``.

    python bench/pipeline.py [--rows 12] [--size 128x96x25] [--steps 4]

Prints videos per hour for each and their ratio (run / render loop; > 1 means Ray's overlap wins). ``run``
is wall clock including the local Ray and actor start-up, as a user sees it. Uses the ``ltxv-debug``
checkpoint (made locally), so it measures orchestration, not model speed.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=12)
    ap.add_argument("--size", default="128x96x25", help="WxHxF")
    ap.add_argument("--steps", type=int, default=4)
    args = ap.parse_args()
    w, h, f = (int(x) for x in args.size.split("x"))

    tmp = tempfile.mkdtemp(prefix="ltx-bench-")
    os.environ.setdefault("LTX_BATCH_CACHE", os.path.join(tmp, "cache"))
    import torch

    from ltx_batch import Renderer, load_job
    from ltx_batch.io.manifest import manifest_table, write_parquet
    from ltx_batch.pipeline import run_job

    rows = [{"id": f"r{i:03d}", "prompt": f"bench prompt number {i}", "seed": i} for i in range(args.rows)]
    write_parquet(manifest_table(rows), os.path.join(tmp, "manifest.parquet"))
    spec = {
        "model": {"preset": "ltxv-debug", "dtype": "float32", "device": "cpu"},
        "recipe": {"num_inference_steps": args.steps},
        "defaults": {"width": w, "height": h, "num_frames": f},
        "input": os.path.join(tmp, "manifest.parquet"),
    }

    print(f"torch {torch.__version__}, {os.cpu_count()} cpus, {platform.processor() or platform.machine()}; "
          f"{args.rows} rows of {w}x{h}x{f}, {args.steps} steps")  # fmt: skip

    renderer = Renderer(load_job({**spec, "output": os.path.join(tmp, "render")}))
    start = time.perf_counter()
    for r in rows:
        assert renderer.render(r).ok
    t_render = time.perf_counter() - start

    start = time.perf_counter()
    summary = run_job(load_job({**spec, "output": os.path.join(tmp, "run")}), progress=False)
    t_run = time.perf_counter() - start
    assert summary.ok == args.rows, summary.as_dict()

    def vph(n: int, t: float) -> float:
        return n * 3600.0 / t

    print(f"{'path':<28}{'seconds':>10}{'videos/hour':>14}")
    print(f"{'render loop (in-process)':<28}{t_render:>10.1f}{vph(args.rows, t_render):>14.0f}")
    print(f"{'run (Ray, incl. start-up)':<28}{t_run:>10.1f}{vph(args.rows, t_run):>14.0f}")
    print(f"ratio run / render loop: {t_render / t_run:.2f}x")


if __name__ == "__main__":
    main()
