"""Command line of the sweep runner.

    python -m jaxsparse.sweep SWEEP_FILE[:arg] --list [--format jsonl]   # a table of planned runs
    python -m jaxsparse.sweep SWEEP_FILE --run local [--parallel K]
    python -m jaxsparse.sweep SWEEP_FILE --run tpu --tpu_name=T --zone=Z --project=P [--dry_run]
        [--shard K/N]       # runs K, K+N, ... only: one shard per TPU VM
    python -m jaxsparse.sweep SWEEP_FILE --collect [OUT.csv]      # default ROOT/results.csv
    python -m jaxsparse.sweep SWEEP_FILE --report [--out DIR]     # fit, compare, plots, report.md
    python -m jaxsparse.sweep mini      # = configs/sweeps/mini.py --run local --collect --report

Runs live in ROOT/<workdir> (ROOT: --root, default runs/sweeps/<sweep file name>). Every run's
config is validated (with its overrides) before anything is launched. Bad input exits with
status 2 and an "error: ..." line.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from jaxsparse.errors import ArgumentParser, entry_point
from jaxsparse.sweep.spec import SweepError, load_sweep, sweep_name

MINI = "configs/sweeps/mini.py"


def _parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m jaxsparse.sweep", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sweep", help="SWEEP_FILE[:arg] (a configs/sweeps/*.py file), or 'mini'")
    p.add_argument("--root", help="sweep root directory (default runs/sweeps/<name>)")
    p.add_argument("--list", action="store_true",
                   help="print the runs (validated) as a table: size, N, N̄, final sparsity, steps, "
                        "tokens, FLOPs, workdir; --format jsonl adds each run's command")
    p.add_argument("--format", choices=("text", "jsonl"), default="text")
    p.add_argument("--run", choices=("local", "tpu"), help="run the runs not done yet")
    p.add_argument("--parallel", type=int, default=1, help="local runs at a time (default 1)")
    p.add_argument("--tpu_name")
    p.add_argument("--zone")
    p.add_argument("--project")
    p.add_argument("--remote_root", default="/mnt/gcs/runs",
                   help="run directories' parent on the TPU workers")
    p.add_argument("--remote_env", action="append", metavar="KEY=VALUE",
                   help="environment of the trainer on the TPU (repeatable; default "
                        "JAXSPARSE_DATA_DIR=/mnt/gcs/tfds, "
                        "JAXSPARSE_TOKENIZER=/mnt/gcs/tokenizers/llama2.model)")
    p.add_argument("--shard", metavar="K/N",
                   help="only runs K, K+N, K+2N, ... (0-based): split a sweep over N machines")
    p.add_argument("--dry_run", action="store_true",
                   help="with --run tpu: print the gcloud commands, run nothing")
    p.add_argument("--collect", nargs="?", const="", metavar="OUT.csv",
                   help="write the finished runs' results as CSV (default ROOT/results.csv)")
    p.add_argument("--report", action="store_true",
                   help="scaling fit, N̄ vs final-size comparison, plots and OUT/report.md")
    p.add_argument("--out", metavar="DIR",
                   help="where --report writes report.md, report.json and plots/ (default ROOT)")
    return p


@entry_point
def main(argv: list[str] | None = None) -> int:
    """The exit status; bad input (a SweepError too) exits 2 with nothing launched."""
    args = _parser().parse_args(argv)
    if args.sweep == "mini":
        args.sweep = MINI
        if not (args.list or args.run or args.collect is not None or args.report):
            args.run, args.collect, args.report = "local", "", True
    return _main(args)


def _main(args: argparse.Namespace) -> int:
    if not (args.list or args.run or args.collect is not None or args.report):
        raise SweepError("nothing to do: give --list, --run local|tpu, --collect or --report")
    if args.parallel < 1:
        raise SweepError(f"--parallel={args.parallel} is not allowed: expected an integer >= 1")
    name = sweep_name(args.sweep)
    root = os.path.abspath(args.root or os.path.join("runs", "sweeps", name))
    runs = _shard(load_sweep(args.sweep), args.shard)
    target = None
    if args.run == "tpu":
        from jaxsparse.sweep.tpu import DEFAULT_ENV, TpuTarget
        target = TpuTarget(args.tpu_name or "", args.zone or "", args.project or "",
                           args.remote_root, tuple(args.remote_env or DEFAULT_ENV))
        target.check(args.dry_run)
    if args.list or args.run:
        from jaxsparse.sweep.check import plan_runs
        plans = plan_runs(runs, local_devices=args.run == "local")
    if args.list:
        _print_list(runs, plans, root, args.format)
    status = 0
    t0 = time.time()
    if args.run == "local":
        from jaxsparse.sweep.local import LocalRunner
        from jaxsparse.train.loop.console import format_duration
        weights = {r.name: float(plans[r.name].flops_dense) for r in runs}
        print(f"sweep {name}: {len(runs)} runs in {root} (validated), {args.parallel} at a time",
              flush=True)
        status = LocalRunner(runs, root, args.parallel, weights).run()
        print(f"sweep {name}: wall time {format_duration(time.time() - t0)}", flush=True)
    elif args.run == "tpu":
        from jaxsparse.sweep.tpu import run_on_tpu
        status = run_on_tpu(runs, name, root, target, dry_run=args.dry_run)
    if status not in (0, 1):  # interrupted: stop here
        return status
    if args.collect is not None or args.report:
        from jaxsparse.sweep.collect import collect, write_csv
        from jaxsparse.train.workdir.layout import SUMMARY
        rows, missing = collect(runs, root)
        out = args.collect or os.path.join(root, "results.csv")
        if missing:
            print(f"{len(missing)} of {len(runs)} runs have no results yet: "
                  f"{', '.join(r.name for r in missing[:10])}{' ...' if len(missing) > 10 else ''}")
        if not rows:
            raise SweepError(f"no run of {name} has finished (no {SUMMARY} under {root})")
        write_csv(rows, out)
        print(f"wrote {out} ({len(rows)} runs)")
        if args.report:
            from jaxsparse.sweep.report import write_report
            wall = time.time() - t0 if args.run == "local" else None
            try:
                print(f"wrote {write_report(rows, runs, root, wall_s=wall, out_dir=args.out)}")
            except ValueError as err:  # e.g. fewer finished runs than the law's 5 parameters
                raise SweepError(f"--report: {err}") from err
    return status


def _shard(runs: list, shard: str | None) -> list:
    if shard is None:
        return runs
    k, _, n = shard.partition("/")
    if not (k.isdigit() and n.isdigit() and int(k) < int(n)):
        raise SweepError(f"--shard={shard!r} is not allowed: expected K/N with 0 <= K < N, "
                         "e.g. 0/4")
    return runs[int(k)::int(n)]


LIST_COLUMNS = ("name", "size", "N", "N̄", "final sparsity", "steps", "tokens", "FLOPs", "workdir")


def _list_row(run, plan, root: str) -> dict:
    """One run of `--list`: its definition, command and planned figures (JSON-ready)."""
    entry = run.as_dict(root)
    p = plan.to_json()
    entry["plan"] = {k: p[k] for k in ("steps", "tokens", "n_avg", "n_avg_prunable", "n_final",
                                       "flops")}
    entry["plan"]["n_total"] = plan.params.total
    entry["plan"]["size"] = plan.size
    entry["plan"]["final_sparsity"] = plan.pruning.schedule.final_sparsity
    return entry


def _print_list(runs, plans, root: str, fmt: str) -> None:
    from jaxsparse.train.loop.console import count
    rows = [_list_row(run, plans[run.name], root) for run in runs]
    if fmt == "jsonl":
        for entry in rows:
            print(json.dumps(entry))
        return
    table = [LIST_COLUMNS] + [
        (e["name"], e["plan"]["size"], count(e["plan"]["n_total"]), count(e["plan"]["n_avg"]),
         f"{e['plan']['final_sparsity']:g}", f"{e['plan']['steps']:,}", count(e["plan"]["tokens"]),
         f"{e['plan']['flops']:.3g}", os.path.relpath(e["workdir"], root)) for e in rows]
    widths = [max(len(str(r[i])) for r in table) for i in range(len(LIST_COLUMNS))]
    for r in table:
        print("  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip())
    print(f"\n{len(rows)} runs under {root}; commands: --format jsonl")


if __name__ == "__main__":
    sys.exit(main())
