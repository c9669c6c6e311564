"""The local sweep runner end to end on tiny real runs: an interrupted run resumes from its
checkpoint, finished runs are skipped, --collect gathers the summaries, an edited spec is
refused, a runner started with `nice` keeps its trainers at its priority, a SIGKILLed runner leaves
no trainer behind, and a locked workdir is not started."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from train_utils import REPO, write_corpus


def _env(data_dir: Path) -> dict:
    env = dict(os.environ, JAXSPARSE_DATA_DIR=str(data_dir), JAX_PLATFORMS="cpu",
               PYTHONUNBUFFERED="1")
    env["XLA_FLAGS"] = ""  # one CPU device per trainer: faster than conftest's 8 fake ones
    return env


def _sweep(tmp_path: Path, corpus: Path, short_overrides: dict | None = None) -> Path:
    common = {"data.tokenizer": "bytes", "eval.every_steps": 0, "checkpoint.every_steps": 8,
              "checkpoint.async_save": False, "train.log_every_steps": 8}
    path = tmp_path / "sweep.py"
    path.write_text(textwrap.dedent(f"""
        def get_sweep(arg=None):
            common = {common!r}
            return [
                {{"name": "long", "config": "configs/tiny.py:corpus={corpus},steps=96",
                  "overrides": common, "tags": {{"kind": "sparse"}}}},
                {{"name": "short", "config": "configs/tiny.py:corpus={corpus},steps=16",
                  "overrides": dict(common, **{{"pruning.schedule": "dense",
                                                "pruning.final_sparsity": 0.0}},
                                    **{short_overrides or {}!r}),
                  "workdir": "dense/short", "tags": {{"kind": "dense"}}}},
            ][slice(None) if arg is None else slice(0, 1)]  # arg: the long run only
    """))
    return path


def _sweep_cmd(sweep: Path, root: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "jaxsparse.sweep", str(sweep), "--root", str(root), *extra]


def _checkpoints(workdir: Path) -> list[int]:
    ckpt = workdir / "checkpoints"
    return sorted(int(p.name) for p in ckpt.iterdir() if p.name.isdigit()) if ckpt.exists() else []


def test_interrupted_sweep_resumes_skips_finished_runs_and_collects(tmp_path):
    corpus = write_corpus(tmp_path / "corpus", files=4, paragraphs=30)
    env = _env(tmp_path / "data")
    sweep, root = _sweep(tmp_path, corpus), tmp_path / "root"
    long_dir, short_dir = root / "long", root / "dense" / "short"

    # 1. Interrupt the sweep while its first run trains: the runner forwards SIGTERM, the
    #    trainer checkpoints and stops, nothing else starts.
    proc = subprocess.Popen(_sweep_cmd(sweep, root, "--run", "local"), cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while not _checkpoints(long_dir) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert _checkpoints(long_dir), "the first run never wrote a checkpoint"
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, out
    assert "rerun the same command to resume" in out
    stopped_at = _checkpoints(long_dir)[-1]
    assert 8 <= stopped_at < 96
    assert not (long_dir / "summary.json").exists() and not short_dir.exists()

    # 2. Rerun (two at a time): the long run resumes from its checkpoint, the short one runs.
    done = subprocess.run(_sweep_cmd(sweep, root, "--run", "local", "--parallel", "2"), cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[long] resumed" in done.stdout and "[short] started" in done.stdout
    log = (long_dir / "log.txt").read_text()
    assert log.count("=== ") == 2 and f"resumed from {long_dir}/checkpoints/{stopped_at}" in log
    metrics = [json.loads(x) for x in (long_dir / "metrics.jsonl").read_text().splitlines()]
    train_steps = [r["step"] for r in metrics if r["kind"] == "train"]
    assert train_steps == sorted(set(train_steps)) and train_steps[-1] == 96  # no step twice
    summaries = {d: json.loads((d / "summary.json").read_text()) for d in (long_dir, short_dir)}
    assert summaries[long_dir]["steps"] == 96 and summaries[short_dir]["steps"] == 16

    # 3. Rerun again: everything is skipped, nothing is touched.
    mtimes = {d: (d / "summary.json").stat().st_mtime_ns for d in summaries}
    again = subprocess.run(_sweep_cmd(sweep, root, "--run", "local", "--collect"), cwd=REPO,
                           env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert "2 of 2 runs already have summary.json: skipped" in again.stdout
    assert {d: (d / "summary.json").stat().st_mtime_ns for d in summaries} == mtimes
    assert (long_dir / "log.txt").read_text() == log
    history = [json.loads(x) for x in (root / "runner.jsonl").read_text().splitlines()]
    assert history[0]["name"] == "long"  # the interrupted process, then the two that finished
    assert sorted(h["name"] for h in history[1:]) == ["long", "short"]
    assert all(h["exit"] == 0 and h["wall_s"] > 0 for h in history[1:])

    # 4. --collect wrote ROOT/results.csv from the summaries.
    with open(root / "results.csv", newline="") as f:
        rows = {r["name"]: r for r in csv.DictReader(f)}
    for name, d in (("long", long_dir), ("short", short_dir)):
        s, r = summaries[d], rows[name]
        assert float(r["n"]) == s["n_avg"] and float(r["n_final"]) == s["n_final"]
        assert float(r["n_initial"]) == s["n_total"] and int(r["d"]) == s["tokens"]
        assert float(r["loss"]) == s["final_eval_loss"] and float(r["flops"]) == s["flops"]
    assert rows["long"]["kind"] == "sparse" and float(rows["long"]["final_sparsity"]) > 0.7
    assert float(rows["long"]["n"]) < float(rows["long"]["n_initial"])
    assert float(rows["short"]["n"]) == float(rows["short"]["n_final"])

    # 5. Two runs are too few for the law's five parameters: a clear error, not a traceback.
    report = subprocess.run(_sweep_cmd(sweep, root, "--report"), cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=120)
    assert report.returncode == 2 and report.stderr.startswith("error: --report: ")
    assert "need at least 5" in report.stderr and not (root / "report.md").exists()

    # 6. The short run's spec is edited after it finished: running or collecting is refused
    #    (one line naming the run and the field), nothing is started or rewritten.
    _sweep(tmp_path, corpus, {"train.learning_rate": 0.005})
    for extra in (["--run", "local"], ["--collect"]):
        edited = subprocess.run(_sweep_cmd(sweep, root, *extra), cwd=REPO, env=env,
                                capture_output=True, text=True, timeout=120)
        assert edited.returncode == 2, edited.stdout + edited.stderr
        err = edited.stderr.strip()
        assert "\n" not in err and err.startswith("error: run 'short' finished with another config")
        assert "config.train.learning_rate: summary has 0.01, the spec now has 0.005" in err
    assert (long_dir / "log.txt").read_text() == log
    assert {d: (d / "summary.json").stat().st_mtime_ns for d in summaries} == mtimes


def _trainer_gone(pid: int, timeout: float) -> bool:
    from jaxsparse.train.workdir.lock import pid_alive
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.1)
    return False


def test_killed_runner_leaves_no_trainer_and_a_locked_workdir_is_not_started(tmp_path):
    from jaxsparse.train.workdir.layout import LOCK as LOCK_NAME
    from jaxsparse.train.workdir.lock import read_lock
    corpus = write_corpus(tmp_path / "corpus", files=4, paragraphs=30)
    env = _env(tmp_path / "data")
    sweep, root = _sweep(tmp_path, corpus), tmp_path / "root"
    lock = root / "long" / LOCK_NAME

    # 1. A runner started at low priority (`nice`) keeps its trainers there, in their own sessions'
    # autogroups too; SIGKILL the runner while its trainer holds the workdir: the trainer stops too.
    runner = subprocess.Popen(_sweep_cmd(f"{sweep}:long", root, "--run", "local"), cwd=REPO,
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              preexec_fn=lambda: os.nice(7))
    deadline = time.time() + 300
    while not lock.exists() and time.time() < deadline and runner.poll() is None:
        time.sleep(0.05)
    holder = read_lock(str(root / "long"))
    assert holder, "the trainer never took its workdir's lock"
    niceness = os.getpriority(os.PRIO_PROCESS, 0) + 7
    assert os.getpriority(os.PRIO_PROCESS, holder["pid"]) == niceness
    group = Path(f"/proc/{holder['pid']}/autogroup")
    if group.exists():  # Linux with autogroup support
        assert group.read_text().split()[-2:] == ["nice", str(niceness)]
    runner.kill()
    runner.wait()
    assert _trainer_gone(holder["pid"], 120), f"trainer {holder['pid']} outlived its runner"

    # 2. A workdir locked by a live process is reported and not started.
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        lock.write_text(json.dumps({"host": os.uname().nodename, "pid": sleeper.pid,
                                    "started": "2026-01-01T00:00:00Z"}))
        log_before = (root / "long" / "log.txt").read_text()
        out = subprocess.run(_sweep_cmd(f"{sweep}:long", root, "--run", "local"), cwd=REPO,
                             env=env, capture_output=True, text=True, timeout=120)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert out.returncode == 1, out.stdout + out.stderr
    assert f"[long] not started: its workdir is locked by pid {sleeper.pid}" in out.stdout
    assert (root / "long" / "log.txt").read_text() == log_before  # no trainer was started

    # 3. A sweep root that cannot be created: one plain line, exit 2.
    (tmp_path / "file").write_text("x")
    bad = subprocess.run(_sweep_cmd(f"{sweep}:long", tmp_path / "file" / "root", "--run", "local"),
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.startswith("error: --root=")
    assert bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr
