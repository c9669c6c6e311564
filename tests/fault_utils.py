"""Helpers of the fault tests, which meet faults as a user does: the command line as a subprocess,
SIGKILL at a chosen moment, full disks (tmpfs mounts), and file modes honoured (root without the
capabilities that ignore them)."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from train_utils import REPO, cli_env, run_cli, train_cmd, write_corpus

# Root keeps its uid but loses the capabilities that bypass file modes: a file or directory
# without the owner's permission bit is then refused as it would be for any user.
AS_USER = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner"]

STEPS = 16  # the shared run: checkpoints and evals at 8 and 16
# synchronous saves: checkpoint 8 has committed before the eval of step 8 starts (the kill's window)
RUN_ARGS = (f"--config.train.steps={STEPS}", "--config.checkpoint.every_steps=8",
            "--config.eval.every_steps=8", "--config.train.log_every_steps=1",
            "--config.checkpoint.async_save=false")


def reader(module: str, *args: str) -> list[str]:
    """The command line of `python -m jaxsparse.<module> ARGS`."""
    return [sys.executable, "-m", f"jaxsparse.{module}", *args]


def kill_when(args: list[str], env: dict, ready: Callable[[], bool], timeout: float = 300) -> bool:
    """Run `args`, SIGKILL it as soon as `ready()` holds (polled every 2 ms); False if the
    process ended before that."""
    proc = subprocess.Popen(args, env=env, cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    try:
        while proc.poll() is None and time.time() < deadline:
            if ready():
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                return True
            time.sleep(0.002)
        return False
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def records(workdir: Path) -> list[tuple[str, int]]:
    """(kind, step) of every record of metrics.jsonl, in order."""
    path = workdir / "metrics.jsonl"
    return [(r["kind"], r["step"]) for r in map(json.loads, path.read_text().splitlines())]


def killed_and_resumed(root: Path) -> dict:
    """The shared run: SIGKILLed the moment its checkpoint 8 has committed (its records of step 8
    are written before it), then rerun to the end. Returns paths, the records at the kill and the
    rerun's output."""
    corpus = write_corpus(root / "corpus", files=4, paragraphs=30)
    env = cli_env(root / "data")
    workdir = root / "run"
    args = train_cmd(corpus, workdir, *RUN_ARGS)
    killed = kill_when(args, env, lambda: (workdir / "checkpoints" / "8").is_dir())
    at_kill = records(workdir) if killed else []
    rerun = run_cli(args, env)
    return {"corpus": corpus, "env": env, "workdir": workdir, "args": args, "killed": killed,
            "at_kill": at_kill, "rerun": rerun}


def unfinished_copy(src: Path, dst: Path) -> Path:
    """`src` as left by a kill after its final checkpoint (no summary.json)."""
    shutil.copytree(src, dst)
    (dst / "summary.json").unlink()
    return dst


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` (e.g. "4m") mounted at `path` (a small disk to fill), unmounted after."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(disk: Path, leave_pages: int = 0) -> None:
    """Fill the file system of `disk` until `leave_pages` pages are free (a real, dense file)."""
    st = os.statvfs(disk)
    size = max(0, (st.f_bavail - leave_pages) * st.f_frsize)
    with open(disk / "filler", "wb") as f:
        with contextlib.suppress(OSError):
            f.write(b"\0" * size)


@contextlib.contextmanager
def bind_mounted(path: Path) -> Iterator[Path]:
    """`path` bind-mounted onto itself: a mount point, which no rename can move."""
    subprocess.run(["mount", "--bind", str(path), str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)
