"""Pipeline overhead: the same manifests through ``run`` (Ray, stages overlapping) and a loop of ``render``.

    python bench/pipeline.py [--rows 12,120] [--size 128x96x25] [--steps 4]

Each path renders two manifests (a small and a large one, ``--rows``) and its line is fitted through the
two wall-clock times: seconds = start-up + rows x seconds-per-video. The table prints both times, the
fixed start-up, the steady per-video cost, videos per hour at each size and in steady state, and the
manifest size from which ``run`` wins. ``run`` is wall clock including the local Ray and actor start-up, as
a user sees it; the render loop runs in this process (imports done, models loaded by its first row).
Uses the ``ltxv-debug`` checkpoint (made locally), so it measures orchestration, not model speed.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", default="12,120", help="small,large manifest sizes")
    ap.add_argument("--size", default="128x96x25", help="WxHxF")
    ap.add_argument("--steps", type=int, default=4)
    args = ap.parse_args()
    w, h, f = (int(x) for x in args.size.split("x"))
    small, large = (int(x) for x in args.rows.split(","))
    if not 0 < small < large:
        raise SystemExit("--rows: need small,large with 0 < small < large")

    tmp = tempfile.mkdtemp(prefix="ltx-bench-")
    os.environ.setdefault("LTX_BATCH_CACHE", os.path.join(tmp, "cache"))
    import torch

    from ltx_batch import Renderer, load_job
    from ltx_batch.io.manifest import manifest_table, write_parquet
    from ltx_batch.pipeline import ensure_ray, run_job
    from ltx_batch.stages import models

    def spec(n: int, out: str) -> dict:
        rows = [{"id": f"r{i:04d}", "prompt": f"bench prompt number {i}", "seed": i} for i in range(n)]
        manifest = os.path.join(tmp, f"manifest-{n}.parquet")
        write_parquet(manifest_table(rows), manifest)
        return {
            "model": {"preset": "ltxv-debug", "dtype": "float32", "device": "cpu"},
            "recipe": {"num_inference_steps": args.steps},
            "defaults": {"width": w, "height": h, "num_frames": f},
            "input": manifest,
            "output": os.path.join(tmp, out),
        }

    print(f"torch {torch.__version__}, {os.cpu_count()} cpus, {platform.processor() or platform.machine()}; "
          f"{w}x{h}x{f}, {args.steps} steps, manifests of {small} and {large} rows")  # fmt: skip

    def render_loop(n: int) -> float:
        models.clear()  # each loop loads its models in its first row, as a fresh process would
        job = load_job(spec(n, f"render-{n}"))
        renderer = Renderer(job)
        start = time.perf_counter()
        for i in range(n):
            assert renderer.render({"id": f"r{i:04d}", "prompt": f"bench prompt number {i}", "seed": i}).ok
        return time.perf_counter() - start

    def run(n: int) -> float:
        import ray

        if ray.is_initialized():
            ray.shutdown()  # every run pays for its own local Ray, as `ltx-batch run` does
        start = time.perf_counter()
        ensure_ray()
        summary = run_job(load_job(spec(n, f"run-{n}")), progress=False)
        assert summary.ok == n, summary.as_dict()
        return time.perf_counter() - start

    times = {"render loop (in-process)": (render_loop(small), render_loop(large)),
             "run (Ray, incl. start-up)": (run(small), run(large))}  # fmt: skip

    def vph(n: int, t: float) -> float:
        return n * 3600.0 / t

    fits = {}
    print(f"{'path':<27}{'s @' + str(small):>9}{'s @' + str(large):>9}{'start-up s':>12}{'s/video':>9}"
          f"{'videos/h @' + str(small):>15}{'videos/h @' + str(large):>15}{'steady videos/h':>17}")  # fmt: skip
    for name, (ts, tl) in times.items():
        per = (tl - ts) / (large - small)
        fixed = ts - small * per
        fits[name] = (fixed, per)
        print(f"{name:<27}{ts:>9.1f}{tl:>9.1f}{fixed:>12.1f}{per:>9.3f}{vph(small, ts):>15.0f}{vph(large, tl):>15.0f}"
              f"{3600.0 / per:>17.0f}")  # fmt: skip
    (f_loop, p_loop), (f_run, p_run) = fits.values()
    print(f"ratio run / render loop (videos per hour): {times['render loop (in-process)'][0] / times['run (Ray, incl. start-up)'][0]:.2f}x "
          f"@ {small} rows, {times['render loop (in-process)'][1] / times['run (Ray, incl. start-up)'][1]:.2f}x @ {large} rows, "
          f"{p_loop / p_run:.2f}x steady")  # fmt: skip
    if p_run < p_loop:
        print(f"run is ahead from about {max(0.0, (f_run - f_loop) / (p_loop - p_run)):.0f} rows")
    else:
        print("run's steady per-video cost is not below the loop's: it does not catch up")


if __name__ == "__main__":
    main()
