"""Pipeline overhead: the same manifests through ``run`` (Ray) and a loop of ``render``.

    python bench/pipeline.py [--rows 12,120] [--size 128x96x25] [--steps 4] [--repeats 2]

Five paths: a loop of ``render`` in this process; ``Renderer.render_many`` (two rows in flight: one row's MP4
encode beside the next row's model work); ``run`` with the CPU default layout (every stage in one actor pool,
``pools.fusion.all_stages``); ``run`` with the stages split into pools (the GPU layout); and ``run`` with the
CPU default on a Ray that is already up (as with ``ray start --head``: only the actors start per job). Each path
renders two manifests (a small and a large one, ``--rows``); its line is fitted through the two wall-clock
times: seconds = start-up + rows x seconds-per-video. The measurements are interleaved (small then large
manifest, every path in turn) and repeated, each keeping its fastest time, so a slow spell of a shared
machine does not land on one path only. The table prints both times, the fixed start-up, the steady
per-video cost, videos per hour at each size and in steady state, and ratios against the loop. The first two
``run`` paths are wall clock including the local Ray and actor start-up, as a user sees it (the fifth reuses
the Ray the fourth left up, with this process staying connected); the render loop runs in this
process (imports done, models loaded by its first row). The ``run`` paths drive Ray from this process too,
so the CLI's own imports (~0.2 s without torch) are not in them. Uses the ``ltxv-debug`` checkpoint (made
locally), so it measures orchestration, not model speed.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
import uuid


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", default="12,120", help="small,large manifest sizes")
    ap.add_argument("--size", default="128x96x25", help="WxHxF")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=2, help="rounds of interleaved measurements (fastest kept)")
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

    def spec(n: int, out: str, all_stages: bool | None = None) -> dict:
        rows = [{"id": f"r{i:04d}", "prompt": f"bench prompt number {i}", "seed": i} for i in range(n)]
        manifest = os.path.join(tmp, f"manifest-{n}.parquet")
        write_parquet(manifest_table(rows), manifest)
        return {
            "model": {"preset": "ltxv-debug", "dtype": "float32", "device": "cpu"},
            "recipe": {"num_inference_steps": args.steps},
            "defaults": {"width": w, "height": h, "num_frames": f},
            "input": manifest,
            "output": os.path.join(tmp, out),
            "pools": {"fusion": {"all_stages": all_stages}},
        }

    print(f"torch {torch.__version__}, {os.cpu_count()} cpus, {platform.processor() or platform.machine()}; "
          f"{w}x{h}x{f}, {args.steps} steps, manifests of {small} and {large} rows")  # fmt: skip

    def render_loop(n: int) -> float:
        models.clear()  # each loop loads its models in its first row, as a fresh process would
        job = load_job(spec(n, f"render-{n}-{uuid.uuid4().hex[:6]}"))
        renderer = Renderer(job)
        start = time.perf_counter()
        for i in range(n):
            assert renderer.render({"id": f"r{i:04d}", "prompt": f"bench prompt number {i}", "seed": i}).ok
        return time.perf_counter() - start

    def render_many(n: int) -> float:
        models.clear()
        renderer = Renderer(load_job(spec(n, f"many-{n}-{uuid.uuid4().hex[:6]}")))
        rows = ({"id": f"r{i:04d}", "prompt": f"bench prompt number {i}", "seed": i} for i in range(n))
        start = time.perf_counter()
        assert all(result.ok for result in renderer.render_many(rows))
        return time.perf_counter() - start

    def run(n: int, all_stages: bool | None, kept: bool = False) -> float:
        import ray

        if ray.is_initialized() and not kept:
            ray.shutdown()  # every run pays for its own local Ray, as `ltx-batch run` does
        start = time.perf_counter()
        ensure_ray()
        out = f"run-{n}-{uuid.uuid4().hex[:6]}"  # a fresh output: nothing is skipped as finished
        summary = run_job(load_job(spec(n, out, all_stages)), progress=False)
        assert summary.ok == n, summary.as_dict()
        return time.perf_counter() - start

    paths = {"render loop (in-process)": render_loop,
             "render_many (in-process)": render_many,
             "run, one pool (CPU default)": lambda n: run(n, None),
             "run, split pools": lambda n: run(n, False),
             "run, one pool, Ray already up": lambda n: run(n, None, kept=True)}  # fmt: skip
    best: dict[str, list[float]] = {name: [float("inf"), float("inf")] for name in paths}
    for _ in range(max(1, args.repeats)):
        for i, n in enumerate((small, large)):
            for name, fn in paths.items():
                best[name][i] = min(best[name][i], fn(n))
    times = {name: tuple(t) for name, t in best.items()}

    def vph(n: int, t: float) -> float:
        return n * 3600.0 / t

    fits = {}
    print(f"{'path':<31}{'s @' + str(small):>9}{'s @' + str(large):>9}{'start-up s':>12}{'s/video':>9}"
          f"{'videos/h @' + str(small):>15}{'videos/h @' + str(large):>15}{'steady videos/h':>17}")  # fmt: skip
    for name, (ts, tl) in times.items():
        per = (tl - ts) / (large - small)
        fixed = ts - small * per
        fits[name] = (fixed, per)
        print(f"{name:<31}{ts:>9.1f}{tl:>9.1f}{fixed:>12.1f}{per:>9.3f}{vph(small, ts):>15.0f}{vph(large, tl):>15.0f}"
              f"{3600.0 / per:>17.0f}")  # fmt: skip
    loop = "render loop (in-process)"
    (f_loop, p_loop), (t_small, t_large) = fits[loop], times[loop]
    for name in list(paths)[1:]:
        (f_run, p_run), (r_small, r_large) = fits[name], times[name]
        line = (f"{name} / render loop (videos per hour): {t_small / r_small:.2f}x @ {small} rows, "
                f"{t_large / r_large:.2f}x @ {large} rows, {p_loop / p_run:.2f}x steady")  # fmt: skip
        if p_run < p_loop:
            line += f"; ahead from about {max(0.0, (f_run - f_loop) / (p_loop - p_run)):.0f} rows"
        else:
            line += "; its steady per-video cost is not below the loop's: it does not catch up"
        print(line)


if __name__ == "__main__":
    main()
