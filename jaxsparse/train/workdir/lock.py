"""One trainer per workdir: WORKDIR/trainer.lock, held by process 0 for the whole run.

The lock file is JSON ``{"host", "pid", "pid_start", "started", "command"}``. It is created
atomically (written to a private file, then hard-linked to the lock name, which fails if the
name exists), so a reader never sees a half-written lock. A lock whose holder is gone is
*stale* and taken over with a message: same host and the pid no longer runs (or now belongs to a
process started at another time, i.e. a reused pid). A lock from another host cannot be checked:
it is refused, naming the file to delete if no trainer runs there. Refusals raise
`WorkdirLocked` (a ConfigError: the trainer's command line exits 2 having written nothing).
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
import uuid
from collections.abc import Iterator

from jaxsparse.errors import ConfigError
from jaxsparse.train.workdir.layout import lock_path


class WorkdirLocked(ConfigError):
    """The workdir is held by another trainer (or a lock that cannot be checked)."""


def _process_start(pid: int) -> str | None:
    """The start time of process `pid` in clock ticks since boot (Linux), else None."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return fields[19] if len(fields) > 19 else None


def pid_alive(pid: int, pid_start: str | None = None) -> bool:
    """Whether `pid` runs on this host (a zombie counts as gone; with `pid_start`, a process
    started at another time, i.e. a reused pid, counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by another user
        pass
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                return False
    except (OSError, IndexError):
        pass
    return not (pid_start and _process_start(pid) not in (None, pid_start))


def read_lock(workdir: str) -> dict | None:
    """The lock's record, None if there is no lock; an unreadable lock gives {"raw": text}."""
    try:
        with open(lock_path(workdir), encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        return None
    try:
        record = json.loads(text)
        return record if isinstance(record, dict) else {"raw": text}
    except json.JSONDecodeError:
        return {"raw": text}


def holder_state(record: dict) -> str:
    """'alive', 'stale' (its process is gone: safe to take over) or 'unknown' (another host,
    or an unreadable lock)."""
    if "pid" not in record or "host" not in record:
        return "unknown"
    if record["host"] != socket.gethostname():
        return "unknown"
    return "alive" if pid_alive(int(record["pid"]), record.get("pid_start")) else "stale"


def describe(record: dict) -> str:
    if "pid" not in record:
        return f"an unreadable lock ({record.get('raw', '')[:80]!r})"
    return (f"pid {record['pid']} on host {record.get('host')!r}, started "
            f"{record.get('started', '?')}")


def _record() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(),
            "pid_start": _process_start(os.getpid()),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "command": " ".join(sys.argv)[:500]}


def _try_link(path: str, record: dict) -> bool:
    """Atomically create `path` holding `record`; False if it exists."""
    tmp = f"{path}.{uuid.uuid4().hex}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(record, f)
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        os.remove(tmp)


@contextlib.contextmanager
def _guard(workdir: str) -> Iterator[None]:
    """An exclusive flock on the workdir directory itself: takers on this host run one at a
    time through check-and-take-over (no extra file)."""
    fd = os.open(workdir, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the flock


def acquire(workdir: str, say=lambda m: print(m, file=sys.stderr, flush=True)) -> dict:
    """Take the workdir's lock for this process and return its record; raise WorkdirLocked
    naming the holder if another live trainer (or an uncheckable lock) holds it."""
    os.makedirs(workdir, exist_ok=True)
    path, mine = lock_path(workdir), _record()
    if os.path.lexists(path) and not os.path.isfile(path):
        raise WorkdirLocked(f"--workdir={workdir}: {path} is not a lock file (a directory or other "
                            "non-file takes its name); move it away and rerun")
    with _guard(workdir):
        if _try_link(path, mine):
            return mine
        held = read_lock(workdir)
        if held is None and _try_link(path, mine):  # released in between
            return mine
        held = held or read_lock(workdir) or {}
        state = holder_state(held)
        if state == "alive":
            raise WorkdirLocked(f"--workdir={workdir} is in use by another trainer ({describe(held)}; "
                                f"lock file {path}); wait for it to finish or stop it")
        if state == "unknown":
            raise WorkdirLocked(f"--workdir={workdir} is locked by {describe(held)}, which cannot be "
                                f"checked from this host; if no trainer runs there, delete {path}")
        os.remove(path)
        say(f"warning: took over the stale lock {path} of {describe(held)}, which no longer runs")
        if _try_link(path, mine):
            return mine
    raise WorkdirLocked(f"could not take the lock {path}: another trainer took it first")


def release(workdir: str, record: dict) -> None:
    """Remove the lock if it is still `record`'s (never another trainer's)."""
    held = read_lock(workdir)
    if held is not None and held.get("pid") == record["pid"] and \
            held.get("started") == record["started"] and held.get("host") == record["host"]:
        with contextlib.suppress(FileNotFoundError):
            os.remove(lock_path(workdir))


@contextlib.contextmanager
def held(workdir: str) -> Iterator[None]:
    """Hold the workdir's lock around a run: process 0 takes it, every process learns whether
    it succeeded (several processes: a broadcast), and a refusal raises WorkdirLocked on all."""
    import jax
    record, error = None, None
    if jax.process_index() == 0:
        try:
            record = acquire(workdir)
        except WorkdirLocked as err:
            error = err
    if jax.process_count() > 1:
        import numpy as np
        from jax.experimental import multihost_utils
        ok = bool(multihost_utils.broadcast_one_to_all(np.int32(error is None)))
        if not ok and error is None:
            error = WorkdirLocked(f"--workdir={workdir} is in use: process 0 could not lock it")
    if error is not None:
        raise error
    try:
        yield
    finally:
        if record is not None:
            release(workdir, record)
