"""The ``ltx-batch`` command.

Exit codes (DESIGN.md): 0 every row ok or skipped; 3 some rows failed; 2 invalid job, manifest or request
(nothing rendered); 1 infrastructure failure.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys

from .spec import SpecError

EXIT_OK, EXIT_INFRA, EXIT_INVALID, EXIT_FAILED_ROWS = 0, 1, 2, 3


def _job_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("job", help="job spec (YAML or JSON)")
    p.add_argument("--input", help="manifest URL (overrides the job's input)")
    p.add_argument("--output", help="output URL (overrides the job's output)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override a job key, e.g. --set recipe.num_inference_steps=8")  # fmt: skip


def _load(args):
    from .job import load_job

    return load_job(args.job, sets=args.sets, input=args.input, output=args.output)


def parse_condition(text: str) -> dict:
    """``URI@FRAME[:STRENGTH]``, split at the last ``@``."""
    uri, sep, spec = text.rpartition("@")
    if not sep or not uri:
        raise SpecError(f"--condition {text!r}: expected URI@FRAME[:STRENGTH]")
    frame, _, strength = spec.partition(":")
    try:
        value = {"uri": uri, "frame_index": int(frame), "strength": float(strength) if strength else 1.0}
    except ValueError:
        raise SpecError(f"--condition {text!r}: FRAME must be an integer and STRENGTH a number") from None
    if not 0.0 <= value["strength"] <= 1.0:  # also NaN, which a manifest reads as "empty"
        raise SpecError(f"--condition {text!r}: STRENGTH must be in [0, 1]")
    return value


def cmd_render(args) -> int:
    from .render import finished_render, render_one

    job = _load(args)
    request = {"prompt": args.prompt}
    for key in ("seed", "width", "height", "num_frames", "negative_prompt"):
        value = getattr(args, key)
        if value is not None:
            request[key] = value
    request["conditions"] = [parse_condition(c) for c in args.condition]
    if args.id is not None and not args.id:
        raise SpecError("--id: must not be empty (leave it out for an id derived from the request)")
    request["id"] = args.id or "render-" + hashlib.sha256(
        json.dumps(request, sort_keys=True).encode()
    ).hexdigest()[:12]
    finished = finished_render(job, request)
    if finished is not None:
        meta, same = finished
        if same:  # run's rule: same id, job and fingerprint = the same objects, rendered once
            for kind, out in meta.get("outputs", {}).items():
                print(f"{kind}: {job.output.rstrip('/')}/{out['path']}")
            print(f"{request['id']} is already rendered with this model and recipe (seed {meta.get('seed')})")
            return EXIT_OK
        # a named --id is the user's: never replaced unasked. The default id hashes the request only, so a
        # recipe tried again under --set renders over its own earlier try, as before.
        if args.id and not args.overwrite:
            print(f"error: {request['id']} was already rendered with a different model, recipe or request; "
                  "pass --overwrite to replace it, or another --id", file=sys.stderr)  # fmt: skip
            return EXIT_INVALID
    result = render_one(job, request, keep_text_encoder=False)  # one row per process: free T5 before sampling
    if result.error_stage == "validate":
        print(f"invalid request: {result.error}", file=sys.stderr)
        return EXIT_INVALID
    if not result.ok:
        print(f"row {result.id} failed in {result.error_stage}: {result.error}", file=sys.stderr)
        return EXIT_FAILED_ROWS
    total = sum(result.seconds.values())
    for kind, key in result.outputs.items():
        print(f"{kind}: {job.output.rstrip('/')}/{key}")
    print(f"rendered {result.id} (seed {result.seed}) in {total:.1f}s")
    return EXIT_OK


def print_summary(summary) -> None:
    from .io.rows import id_label

    s = summary
    print(f"run {s.run_id}: {s.total} rows: {s.ok} ok, {s.failed} failed, {s.skipped} skipped "
          f"in {s.seconds:.1f}s ({s.videos_per_hour:.1f} videos/hour)")  # fmt: skip
    if s.stage_seconds:
        print("  seconds per stage (sum over rows): " + ", ".join(f"{k} {v:.1f}" for k, v in s.stage_seconds.items()))
    for f in s.failures[:20]:
        print(f"  failed {id_label(f['id'])} [{f['error_stage']}]: {f['error']}")
    if len(s.failures) > 20:
        print(f"  ... {len(s.failures) - 20} more failures in {s.results_path}")
    print(f"results: {s.results_path}")


def cmd_run(args) -> int:
    from .pipeline import quiet_ray_data_console, run_job

    job = _load(args)
    if not args.verbose:
        quiet_ray_data_console()
    summary = run_job(job, address=args.address, overwrite=args.overwrite)
    print_summary(summary)
    return EXIT_FAILED_ROWS if summary.failed else EXIT_OK


def cmd_status(args) -> int:
    from .io.results import read_results
    from .io.rows import id_label
    from .io.storage import Storage

    if not args.output.strip():
        raise SpecError("OUTPUT: must not be empty (the output folder or URL of a run)")
    run_id, rows = read_results(Storage(args.output), args.run_id)
    counts = {k: sum(r["status"] == k for r in rows) for k in ("ok", "failed", "skipped")}
    print(f"run {run_id}: {len(rows)} rows: {counts['ok']} ok, {counts['failed']} failed, {counts['skipped']} skipped")
    totals: dict[str, float] = {}
    for r in rows:
        for stage, sec in r["seconds"].items():
            totals[stage] = totals.get(stage, 0.0) + sec
    if totals:
        print("  seconds per stage: " + ", ".join(f"{k} {v:.1f}" for k, v in totals.items()))
    for r in rows:
        if r["status"] == "failed":
            print(f"  failed {id_label(r['id'])} [{r['error_stage']}]: {r['error']}")
    return EXIT_FAILED_ROWS if counts["failed"] else EXIT_OK


def cmd_submit(args) -> int:
    from .submit import submit_job, wait

    job = _load(args)
    sub = submit_job(job, args.address, overwrite=args.overwrite)
    print(sub.submission_id)
    if not sub.new:
        print(f"the same work is already {sub.status.lower()} as {sub.submission_id}", file=sys.stderr)
    if not args.wait:
        return EXIT_OK
    sub = wait(args.address, sub, follow=True)
    print(f"submission {sub.submission_id}: {sub.status} (exit {sub.exit_code})", file=sys.stderr)
    return sub.exit_code


def cmd_manifest(args) -> int:
    from .io.manifest_sources import build_manifest

    rows, problems = build_manifest(args.source, args.output, defaults_from=args.job)
    for p in problems:
        print(f"  {p}", file=sys.stderr)
    print(f"wrote {rows} rows to {args.output}" + (f"; {len(problems)} row(s) invalid" if problems else ""))
    return EXIT_INVALID if problems and args.strict else EXIT_OK


def cmd_validate(args) -> int:
    """The job, then its manifest (schema and every row), as ``run`` would see them; renders nothing."""
    from .io.manifest import manifest_base, read_manifest
    from .io.rows import RowError, validate_row

    job = _load(args)
    print(json.dumps(job.to_dict(), indent=2, default=str))
    print(f"job {job.name!r} is valid", file=sys.stderr)
    if not job.input:
        return EXIT_OK
    rows = read_manifest(job.input, job.storage_options)
    defaults = job.defaults.as_dict()
    bad = []
    for raw in rows:
        try:
            validate_row(raw, defaults=defaults, frame_rate=job.recipe.frame_rate, base_uri=manifest_base(job.input))
        except RowError as e:
            bad.append((raw.get("id"), str(e)))
    print(f"manifest {job.input}: {len(rows)} rows, {len(rows) - len(bad)} valid, {len(bad)} invalid", file=sys.stderr)
    for row_id, err in bad[:50]:
        print(f"  {'(no id)' if row_id is None else repr(row_id)}: {err}", file=sys.stderr)
    return EXIT_FAILED_ROWS if bad else EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ltx-batch", description="Batch video rendering with LTX-Video.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("render", help="render one prompt in-process (no Ray)")
    _job_args(p)
    p.add_argument("--prompt", required=True)
    p.add_argument("--id")
    p.add_argument("--seed", type=int)
    p.add_argument("--width", type=int)
    p.add_argument("--height", type=int)
    p.add_argument("--num-frames", dest="num_frames", type=int)
    p.add_argument("--negative-prompt", dest="negative_prompt")
    p.add_argument("--condition", action="append", default=[], metavar="URI@FRAME[:STRENGTH]")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a finished row of this --id rendered with another model, recipe or request")
    p.set_defaults(func=cmd_render)

    p = sub.add_parser("run", help="render a job's manifest on Ray (--address/RAY_ADDRESS, a Ray that `ray start` "
                       "left here, else a new local Ray)")
    _job_args(p)
    p.add_argument("--address", help="Ray address (ray://host:10001, or auto); default: RAY_ADDRESS, else a Ray "
                   "that `ray start` left on this machine, else a new local Ray")
    p.add_argument("--overwrite", action="store_true", help="re-render finished rows whose recipe changed")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("submit", help="submit the job to a Ray cluster (Ray Jobs API); prints the submission id")
    _job_args(p)
    p.add_argument("--address", required=True, help="the cluster's dashboard, e.g. http://head:8265")
    p.add_argument("--wait", action="store_true", help="follow the logs; exit with the job's exit code")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("manifest", help="build a Parquet manifest from a .txt, .csv or .jsonl file")
    p.add_argument("source", help=".txt (one prompt a line), .csv or .jsonl (columns as in manifests/README.md)")
    p.add_argument("-o", "--output", required=True, help="the .parquet to write (any fsspec URL)")
    p.add_argument("--job", help="validate the rows against this job's defaults")
    p.add_argument("--strict", action="store_true", help="exit 2 when any row is invalid")
    p.set_defaults(func=cmd_manifest)

    p = sub.add_parser("status", help="summary of a run's results under OUTPUT")
    p.add_argument("output", help="the job's output URL")
    p.add_argument("--run-id", dest="run_id", help="a specific run (default: the latest)")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("validate", help="check a job and its manifest (renders nothing); exit 3 if rows are invalid")
    _job_args(p)
    p.set_defaults(func=cmd_validate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # fmt: skip
    if args.verbose:
        # the S3 clients' debug output holds signed request headers (the access key id, signatures): -v is
        # for our own debugging lines, not theirs
        for name in ("botocore", "aiobotocore", "boto3", "s3transfer", "urllib3", "aiohttp"):
            logging.getLogger(name).setLevel(logging.INFO)
    from .stages.errors import StageSetupError
    from .weights.errors import CheckpointError

    try:
        return args.func(args)
    except (SpecError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_INVALID
    except (StageSetupError, OSError, ConnectionError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_INFRA
    except Exception as e:  # noqa: BLE001 - Ray wraps actor start-up failures in its own types
        if args.verbose:
            raise
        print(f"error: infrastructure failure: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_INFRA


def entry() -> None:
    """The console script: ``main``, then leave without the interpreter's teardown. With torch and pyarrow
    loaded, native thread pools torn down at exit sometimes abort the process ("terminate called without an
    active exception", apache/arrow#34314): exit 134 after the work was done and reported, where the verb's
    own code was due. So Ray (a local one is ours to stop), logging and the streams are closed here, then
    ``os._exit`` with the verb's code; it also saves the ~1 s that tearing down torch's modules takes."""
    code = main()
    try:
        if "ray" in sys.modules:
            import ray

            if ray.is_initialized():
                ray.shutdown()
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:  # noqa: BLE001 - a failing cleanup must not hide the verb's exit code
        code = code or EXIT_INFRA
    os._exit(code)


if __name__ == "__main__":
    entry()
