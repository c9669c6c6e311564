"""Replication round 2 (configs/sweeps/replication2.py), across sessions on fresh machines.

Run directories do not survive a session; committed files do. So each finished run's summary.json
(all that collecting needs) is committed under results/replication/round2/runs/<workdir>/, and a
session puts them back under the sweep root before running, so the runner skips those runs:

    python3 results/replication/round2.py corpus                  # the GCIDE corpus, from Debian
    python3 results/replication/round2.py run --parallel 2        # restore, then run what is left
    python3 results/replication/round2.py save                    # commit-ready: summaries, status, report
    python3 results/replication/round2.py report                  # the verdict alone (round2_report.py)

`run` is `restore`, then this process becomes `python -m jaxsparse.sweep configs/sweeps/replication2.py
--run local --root ROOT`: stop it with SIGINT or SIGTERM (running trainers checkpoint), rerun it to
resume.
`save` copies the finished runs' summaries here, appends their wall times (the runner's record,
ROOT/runner.jsonl) to round2/walltimes.jsonl and writes round2/STATUS.md: runs done, measured wall
time per run, and the time left, estimated from the finished runs (seconds = a + b x planned FLOPs,
fitted) over the missing runs' planned FLOPs; with the whole sweep (part all), it then writes the
verdict, round2/report.md (round2_report.py: "pending" where runs are missing).

A summary's config holds the corpus folder as an absolute path; it is stored here with the corpus
folder's parent replaced by CORPUS_MARK and put back as this machine's (the corpus is the same
bytes wherever it lies: `corpus` checks its size).
"""
from __future__ import annotations

import argparse
import glob
import gzip
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
SWEEP = "configs/sweeps/replication2.py"
STORE = os.path.join(HERE, "round2")
DEFAULT_ROOT = "runs/replication2"
DEFAULT_CORPUS = "runs/corpus"
CORPUS_MARK = "{corpus_parent}"
PACKAGE = "dict-gcide"


def _sweep_module():
    from jaxsparse.sweep.spec import load_module
    return load_module(os.path.join(REPO, SWEEP))


def prepare_corpus(dest: str, deb: str | None = None) -> list[str]:
    """Write DEST/gcide/gcide.txt (the whole dictionary) and DEST/gcide_quarter/gcide.txt (its
    first quarter_bytes(), cut at a blank line) from the Debian package dict-gcide (`deb`: a
    downloaded .deb; default: `apt-get download` it). Returns the files written."""
    sweep = _sweep_module()
    full = os.path.join(dest, "gcide", "gcide.txt")
    if not (os.path.isfile(full) and os.path.getsize(full) == sweep.CORPUS_BYTES):
        with tempfile.TemporaryDirectory() as tmp:
            if deb is None:
                subprocess.run(["apt-get", "download", PACKAGE], cwd=tmp, check=True)
                deb = glob.glob(os.path.join(tmp, f"{PACKAGE}_*.deb"))[0]
            subprocess.run(["dpkg-deb", "-x", deb, os.path.join(tmp, "x")], check=True)
            with gzip.open(os.path.join(tmp, "x", "usr/share/dictd/gcide.dict.dz")) as f:
                data = f.read()  # dictzip is gzip-compatible
        if len(data) != sweep.CORPUS_BYTES:
            raise SystemExit(f"error: {PACKAGE} holds {len(data)} bytes, expected {sweep.CORPUS_BYTES} "
                             "(another version of the package: the sweep's corpus is 0.48.5+nmu2)")
        _write(full, data)
    with open(full, "rb") as f:
        head = f.read(sweep.quarter_bytes())
    quarter = os.path.join(dest, "gcide_quarter", "gcide.txt")
    _write(quarter, head[:head.rfind(b"\n\n") + 1])
    return [full, quarter]


def _write(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "wb") as f:
        f.write(data)
    os.replace(path + ".tmp", path)


def _corpus_parent(corpus_arg: str) -> str:
    return os.path.dirname(os.path.abspath(corpus_arg.rstrip("/")))


def restore(root: str, corpus: str = f"{DEFAULT_CORPUS}/gcide", store: str = STORE) -> int:
    """Copy every committed summary to ROOT/<workdir>/summary.json where none is; returns how many."""
    parent, n = _corpus_parent(corpus), 0
    for path in sorted(glob.glob(os.path.join(store, "runs", "**", "summary.json"), recursive=True)):
        rel = os.path.relpath(os.path.dirname(path), os.path.join(store, "runs"))
        target = os.path.join(root, rel, "summary.json")
        if os.path.exists(target):
            continue
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(path, encoding="utf-8") as f:
            text = f.read().replace(CORPUS_MARK, parent)
        with open(target, "w", encoding="utf-8") as f:
            f.write(text)
        n += 1
    return n


# Round 1's measured throughput at idle (configs/sweeps/replication.py's docstring; bench/
# bench_replication_shapes.py, load 2.5): (layers, total parameters, tokens/s). Between and beyond
# them tokens/s is interpolated as a power of the size, per depth.
IDLE_THROUGHPUT = ((2, 49_504, 66.4e3), (2, 98_832, 49.9e3), (2, 164_544, 37.1e3), (2, 345_120, 24.0e3),
                   (4, 172_752, 26.7e3), (4, 295_872, 19.5e3))
FIXED_S = 7.7  # a trainer process's cost before and after its steps (same source)


def idle_seconds(layers: int, n_total: int, tokens: int) -> float:
    """A run's wall time on an idle machine, one run at a time, from IDLE_THROUGHPUT."""
    pts = np.array([(n, t) for d, n, t in IDLE_THROUGHPUT if d == layers])
    slope, icept = np.polyfit(np.log(pts[:, 0]), np.log(pts[:, 1]), 1)
    return FIXED_S + tokens / float(np.exp(icept + slope * np.log(n_total)))


def _walltimes(root: str, names: set[str], store: str) -> dict[str, dict]:
    """name -> wall-time record of the finished runs `names`: the committed one, else the runner's
    (ROOT/runner.jsonl), its trainer processes' wall times summed (a run stopped and resumed has
    several), with the load average at this save; the committed file is rewritten with them."""
    path, records = os.path.join(store, "walltimes.jsonl"), {}
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            records = {r["name"]: r for r in map(json.loads, f) if r["name"] in names}
    runner, fresh = os.path.join(root, "runner.jsonl"), {}
    if os.path.exists(runner):
        with open(runner, encoding="utf-8") as f:
            for r in map(json.loads, f):
                if r["name"] in names and r["name"] not in records:
                    seen = fresh.setdefault(r["name"], {"name": r["name"], "wall_s": 0.0, "processes": 0})
                    seen["wall_s"] = round(seen["wall_s"] + r["wall_s"], 2)
                    seen["processes"] += 1
                    seen["finished"] = r["finished"]
    load = [round(x, 1) for x in os.getloadavg()]
    records.update({name: {**r, "load": load} for name, r in fresh.items()})
    os.makedirs(store, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for name in sorted(records):
            f.write(json.dumps(records[name]) + "\n")
    return records


def save(root: str, corpus: str = f"{DEFAULT_CORPUS}/gcide", part: str = "all", store: str = STORE) -> list[str]:
    """Keep the finished runs' summaries and wall times in `store`, with all_runs.csv, pairs.md and
    STATUS.md."""
    from jaxsparse.sweep.check import plan_runs
    from jaxsparse.sweep.collect import collect, write_csv
    from jaxsparse.sweep.spec import load_sweep
    from jaxsparse.train.workdir import layout
    runs = load_sweep(f"{os.path.join(REPO, SWEEP)}:part={part},corpus={corpus}")
    rows, _ = collect(runs, root)
    done = {r["name"]: layout.read_summary(r["workdir"]) for r in rows}
    parent = _corpus_parent(corpus)
    for run in runs:
        if run.name in done:
            text = json.dumps(done[run.name], indent=1, default=str).replace(parent, CORPUS_MARK)
            _write(os.path.join(store, "runs", run.workdir, "summary.json"), text.encode())
    walls = _walltimes(root, set(done), store)
    plans = plan_runs(runs, local_devices=True)
    idle = {r.name: idle_seconds(r.tags["layers"], plans[r.name].params.total, plans[r.name].tokens)
            for r in runs}
    path = os.path.join(store, "STATUS.md")
    _write(path, status_text(runs, done, walls, idle).encode())
    said = [f"{len(done)} of {len(runs)} runs finished: summaries under {os.path.join(store, 'runs')}",
            f"wrote {path}"]
    if rows:
        for row in rows:
            row["workdir"] = os.path.relpath(row["workdir"], root)
        said.append(f"wrote {write_csv(rows, os.path.join(store, 'all_runs.csv'))} ({len(rows)} runs)")
        said.append(f"wrote {write_pairs(rows, os.path.join(store, 'pairs.md'))}")
    return said


def write_pairs(rows: list[dict], path: str) -> str:
    """pairs.md: the finished matched pairs over seeds (report.py's table), no law fitted."""
    from jaxsparse.sweep.spec import load_module
    report = load_module(os.path.join(HERE, "report.py"))
    lines = ["# Round 2: matched pairs over the finished seeds", "",
             "Sparse - dense: eval loss (nats/token), mean over seeds; standard error over seeds; "
             "measured position: where the sparse run lies between its dense partner (0: N̄ holds) and "
             "the dense run of its final size (1), same seed and D. No law is fitted here.", "",
             *report.pairs_lines(report.pair_groups(rows, None)), ""]
    _write(path, "\n".join(lines).encode())
    return path


def status_text(runs, done: dict, walls: dict, idle: dict) -> str:
    """STATUS.md: the finished runs with their measured wall time, and the time left."""
    timed = [n for n in done if n in walls]
    slow = float(np.median([walls[n]["wall_s"] / idle[n] for n in timed])) if timed else None
    left = [r.name for r in runs if r.name not in done]
    lines = ["# Round 2: status", "", f"{len(done)} of {len(runs)} runs of `{SWEEP}` finished "
             "(summaries under `runs/`).", "",
             "| run | wall time (s) | idle estimate (s) | load average (1, 5, 15 min) at the save |",
             "|---|---|---|---|"]
    lines += [f"| {n} | {walls[n]['wall_s']:.0f} | {idle[n]:.0f} | {walls[n]['load']} |" if n in walls
              else f"| {n} | - | {idle[n]:.0f} | - |" for n in done]
    hours = sum(idle[n] for n in left) / 3600
    lines += ["", f"Left: {len(left)} runs, {hours:.1f} hours on an idle 2-core machine one run at a "
              f"time (the whole sweep: {sum(idle.values()) / 3600:.1f} hours), from round 1's measured "
              "throughput (`IDLE_THROUGHPUT` in round2.py); `--parallel 2` ran 1.17x faster in round 1."]
    if slow is not None:
        lines.append(f"The finished runs took {slow:.1f}x their idle estimate (median) on this shared "
                     f"machine: at that pace, {hours * slow:.1f} hours.")
    lines += ["", "Missing: " + (", ".join(left) if left else "none") + "."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="results/replication/round2.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    c = sub.add_parser("corpus", help="prepare the GCIDE corpus folders")
    c.add_argument("--dest", default=DEFAULT_CORPUS)
    c.add_argument("--deb", help="an already downloaded dict-gcide .deb (default: apt-get download)")
    r = sub.add_parser("report", help="write the verdict (report.md, report.json, gaps.png) from the store")
    r.add_argument("--store", default=STORE)
    for name in ("run", "save", "restore"):
        p = sub.add_parser(name)
        p.add_argument("--root", default=DEFAULT_ROOT, help="the sweep root")
        p.add_argument("--corpus", default=f"{DEFAULT_CORPUS}/gcide", help="the sweep's corpus argument")
        p.add_argument("--part", default="all", help="the sweep's part (run, save)")
        p.add_argument("--store", default=STORE, help="where finished runs are kept (default: here)")
        if name == "run":
            p.add_argument("--parallel", type=int, default=2)
    args = ap.parse_args(argv)
    if args.command == "corpus":
        for path in prepare_corpus(args.dest, args.deb):
            print(f"wrote {path} ({os.path.getsize(path):,} bytes)")
        return 0
    if args.command in ("restore", "run"):
        n = restore(args.root, args.corpus, args.store)
        print(f"restored {n} committed summaries under {args.root}", flush=True)
    if args.command == "restore":
        return 0
    if args.command == "run":
        spec = f"{SWEEP}:part={args.part},corpus={args.corpus}"
        os.execv(sys.executable, [sys.executable, "-m", "jaxsparse.sweep", spec, "--run", "local",  # signals
                                  "--parallel", str(args.parallel), "--root", args.root])  # reach the runner
    if args.command == "save":
        for line in save(args.root, args.corpus, args.part, args.store):
            print(line)
    if args.command == "report" or args.part == "all":
        from jaxsparse.sweep.spec import load_module
        for path in load_module(os.path.join(HERE, "round2_report.py")).write(args.store):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
