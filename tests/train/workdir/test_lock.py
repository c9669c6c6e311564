"""One trainer per workdir: WORKDIR/trainer.lock refuses a second trainer (exit 2, nothing
written), a stale lock is taken over, a lock from another host is refused naming the file."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from train_utils import cli_env, run_cli, train_cmd, write_corpus

from jaxsparse.train.workdir import layout
from jaxsparse.train.workdir import lock
from jaxsparse.train.workdir.lock import WorkdirLocked


def _lock(workdir: Path, pid: int, host: str | None = None) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / layout.LOCK
    path.write_text(json.dumps({"host": host or socket.gethostname(), "pid": pid,
                                "started": "2026-01-01T00:00:00Z"}))
    return path


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture
def sleeper():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    yield proc
    proc.kill()
    proc.wait()


def test_lock_is_held_for_the_run_and_refuses_a_live_holder(tmp_path, sleeper):
    record = lock.acquire(str(tmp_path / "a"))
    on_disk = lock.read_lock(str(tmp_path / "a"))
    assert on_disk == record and on_disk["pid"] == lock.os.getpid()
    assert on_disk["host"] == socket.gethostname() and on_disk["started"]
    lock.release(str(tmp_path / "a"), record)
    assert lock.read_lock(str(tmp_path / "a")) is None

    path = _lock(tmp_path / "b", sleeper.pid)
    with pytest.raises(WorkdirLocked, match=f"in use by another trainer \\(pid {sleeper.pid} "):
        lock.acquire(str(tmp_path / "b"))
    assert json.loads(path.read_text())["pid"] == sleeper.pid  # untouched


def test_stale_lock_is_taken_over_with_a_message(tmp_path):
    dead = _dead_pid()
    path = _lock(tmp_path, dead)
    said = []
    record = lock.acquire(str(tmp_path), say=said.append)
    assert record["pid"] == lock.os.getpid()
    assert json.loads(path.read_text())["pid"] == lock.os.getpid()
    assert len(said) == 1 and f"stale lock {path}" in said[0] and f"pid {dead}" in said[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == [layout.LOCK]


def test_reused_pid_counts_as_stale(tmp_path):
    """Our own pid, but recorded with another start time: the holder is gone."""
    _lock(tmp_path, lock.os.getpid())
    record = json.loads((tmp_path / layout.LOCK).read_text())
    record["pid_start"] = "1"
    (tmp_path / layout.LOCK).write_text(json.dumps(record))
    said = []
    lock.acquire(str(tmp_path), say=said.append)
    assert said and "stale lock" in said[0]


def test_lock_of_another_host_is_refused_naming_the_file(tmp_path):
    path = _lock(tmp_path, 12345, host="some-other-host")
    with pytest.raises(WorkdirLocked, match=f"cannot be checked from this host; if no trainer "
                                            f"runs there, delete {path}"):
        lock.acquire(str(tmp_path))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("corpus"), files=4, paragraphs=30)


def test_trainer_on_a_locked_workdir_exits_2_and_writes_nothing(corpus, tmp_path, sleeper):
    work = tmp_path / "work"
    _lock(work, sleeper.pid)
    t0 = time.time()
    out = run_cli(train_cmd(corpus, work), cli_env(tmp_path / "data", devices=1), timeout=120)
    assert out.returncode == 2, out.stderr[-2000:]
    assert f"pid {sleeper.pid}" in out.stderr and "Traceback" not in out.stderr
    assert [p.name for p in work.iterdir()] == [layout.LOCK]
    assert time.time() - t0 < 60


def test_second_trainer_exits_2_and_the_first_finishes_with_every_record(corpus, tmp_path):
    work, env = tmp_path / "work", cli_env(tmp_path / "data", devices=1)
    extra = ["--config.train.steps=64", "--config.train.log_every_steps=1",
             "--config.checkpoint.every_steps=16", "--config.eval.every_steps=16"]
    first = subprocess.Popen(train_cmd(corpus, work, *extra), env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    lock = work / layout.LOCK
    deadline = time.time() + 120
    while not lock.exists() and time.time() < deadline and first.poll() is None:
        time.sleep(0.05)
    assert lock.exists(), "the first trainer never took the lock"
    second = run_cli(train_cmd(corpus, work, *extra), env, timeout=120)
    still_running = first.poll() is None
    out, _ = first.communicate(timeout=300)
    assert still_running, "the first trainer ended before the second one tried: make it longer"
    assert second.returncode == 2, second.stderr[-2000:]
    assert f"pid {first.pid}" in second.stderr and str(lock) in second.stderr
    assert first.returncode == 0, out[-3000:]
    records = [json.loads(x) for x in (work / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "train"] == list(range(1, 65))
    assert [r["step"] for r in records if r["kind"] == "eval"] == [16, 32, 48, 64]
    assert (work / "summary.json").exists() and not lock.exists()  # released at the end


def test_a_locked_workdir_is_refused_before_the_steps_compile(corpus, data_dir, tmp_path, sleeper, caplog):
    """The lock is taken before compiling: a second trainer on a held workdir compiles no step."""
    import jax

    from train_utils import config_in
    from jaxsparse.train import train
    work = tmp_path / "work"
    _lock(work, sleeper.pid)
    with jax.log_compiles(True), caplog.at_level("WARNING"), pytest.raises(WorkdirLocked, match=f"pid {sleeper.pid}"):
        train(config_in(corpus, data_dir), str(work))
    compiled = [r.getMessage() for r in caplog.records if "ompil" in r.getMessage()]
    assert not [m for m in compiled if "jit(train_step)" in m or "jit(eval_step)" in m], compiled
    assert [p.name for p in work.iterdir()] == [layout.LOCK]
    # the same check sees a compile where there is one: the lock's holder gone, the run compiles
    sleeper.kill(), sleeper.wait()
    caplog.clear()
    with jax.log_compiles(True), caplog.at_level("WARNING"):
        train(config_in(corpus, data_dir, **{"train.steps": 2}), str(work))
    assert any("Compiling jit(train_step)" in r.getMessage() for r in caplog.records)
