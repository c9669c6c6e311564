"""The layout of a run directory: the one owner of every name in it and of what a look at the
files (no restore) can tell. Every reader and writer builds its paths here.

    WORKDIR/
      checkpoints/<step>/                     a complete checkpoint (orbax writes a temporary
                                              sibling and renames it when complete)
      checkpoints/<step>.corrupt-<UTC time>   one set aside as damaged
      checkpoints/<step>.diverged-<UTC time>  one whose parameters gave a non-finite loss
      metrics.jsonl                           the records (`records`)
      tensorboard/                            TensorBoard event files of the same records
      summary.json                            the end-of-run summary (`read_summary`)
      training.png                            the end-of-run plots
      trainer.lock                            one trainer per workdir (`lock`)
      trainer.log                             the trainer's log from the first step on
                                              (process p > 0: trainer.p.log)
      previous/<UTC time>/                    outputs set aside by --restart (`check`)
      log.txt                                 a sweep runner's log of the trainers it started
      tpu_logs/                               a TPU sweep's logs of the workers

Imports nothing from jax or orbax (cheap for the checks done before any compute).
"""
from __future__ import annotations

import errno
import json
import os
import time
from typing import Any

from jaxsparse.errors import ConfigError

CHECKPOINTS = "checkpoints"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
PLOT = "training.png"
TENSORBOARD = "tensorboard"
LOCK = "trainer.lock"
TRAINER_LOG = "trainer.log"  # libraries' log, warnings and tracebacks (`train.loop.run_log`)
PREVIOUS = "previous"
CORRUPT_TAG = ".corrupt-"  # damaged
DIVERGED_TAG = ".diverged-"  # its parameters gave a non-finite loss
RUNNER_LOG = "log.txt"  # written by `jaxsparse.sweep`, not by the trainer
TPU_LOGS = "tpu_logs"  # written by `jaxsparse.sweep --run tpu`
# What a run writes into its workdir; `--restart` moves these aside (never deletes them).
RUN_OUTPUTS = (CHECKPOINTS, METRICS, SUMMARY, PLOT, TENSORBOARD)


def checkpoint_dir(workdir: str) -> str:
    """WORKDIR/checkpoints (absolute)."""
    return os.path.join(os.path.abspath(workdir), CHECKPOINTS)


def step_dir(workdir: str, step: int) -> str:
    """WORKDIR/checkpoints/<step> (absolute): checkpoint `step`."""
    return os.path.join(checkpoint_dir(workdir), str(step))


def set_aside_path(workdir: str, step: int, tag: str) -> str:
    """The name checkpoint `step` is renamed to when set aside now: <step><tag><UTC time>."""
    return step_dir(workdir, step) + tag + utc_stamp()


def metrics_path(workdir: str) -> str:
    return os.path.join(workdir, METRICS)


def summary_path(workdir: str) -> str:
    return os.path.join(workdir, SUMMARY)


def plot_path(workdir: str) -> str:
    return os.path.join(workdir, PLOT)


def tensorboard_dir(workdir: str) -> str:
    return os.path.join(workdir, TENSORBOARD)


def lock_path(workdir: str) -> str:
    """WORKDIR/trainer.lock (absolute)."""
    return os.path.join(os.path.abspath(workdir), LOCK)


def trainer_log_path(workdir: str, process: int = 0) -> str:
    """WORKDIR/trainer.log (absolute), or trainer.<process>.log for a process other than 0."""
    name = TRAINER_LOG if process == 0 else TRAINER_LOG.replace(".log", f".{process}.log")
    return os.path.join(os.path.abspath(workdir), name)


def runner_log_path(workdir: str) -> str:
    return os.path.join(workdir, RUNNER_LOG)


def tpu_logs_dir(workdir: str) -> str:
    return os.path.join(workdir, TPU_LOGS)


def previous_dir(workdir: str) -> str:
    """WORKDIR/previous: each --restart moves the old outputs into a <UTC time> folder in it."""
    return os.path.join(workdir, PREVIOUS)


def utc_stamp() -> str:
    """The current UTC time as the set-aside names spell it (e.g. 20260101T120000Z)."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


def is_run_dir(path: str) -> bool:
    """Whether `path` is a run directory: it holds a trainer's metrics.jsonl or lock, the names
    no other tool writes (summary.json is also what `evaluate --out` writes, and a folder that
    only holds checkpoints/ may be anything)."""
    return any(os.path.lexists(os.path.join(path, n)) for n in (METRICS, LOCK))


def run_dir_holding(path: str, workdir: str) -> str | None:
    """The run directory that `path`, a file to be written, would land in, or None: `workdir` when
    `path` is in it or below it, else the first `is_run_dir` folder from `path`'s folder up
    (symlinks resolved). Reader commands write nowhere in a run directory."""
    folder, run = os.path.dirname(os.path.realpath(path)), os.path.realpath(workdir)
    if os.path.commonpath([folder, run]) == run:
        return workdir
    while not is_run_dir(folder):
        if os.path.dirname(folder) == folder:
            return None
        folder = os.path.dirname(folder)
    return folder


def check_reader_output(out: str, workdir: str) -> None:
    """ConfigError when `out` (a reader command's --out: a file or a folder to write) lands in a
    run directory (`run_dir_holding`): reader commands never write into one."""
    run_dir = run_dir_holding(out, workdir)
    if run_dir is not None:
        raise ConfigError(f"--out={out}: it is in the run directory {run_dir}, and reader commands "
                          "never write into a run directory (its files stay the trainer's); give a "
                          "path outside it")


def present_outputs(workdir: str) -> list[str]:
    """The names of RUN_OUTPUTS that exist in `workdir`, in RUN_OUTPUTS order."""
    return [n for n in RUN_OUTPUTS if os.path.exists(os.path.join(workdir, n))]


def _numbered(workdir: str) -> list[tuple[int, bool]]:
    """(step, is a directory) of every entry of checkpoints/ named by a step; [] when there is
    no checkpoints/ directory. Read from the disk at every call. ConfigError when checkpoints/
    cannot be listed for another reason (a symlink loop, no permission): see `check_checkpoints`."""
    directory = checkpoint_dir(workdir)
    try:
        names = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as err:
        raise ConfigError(f"--workdir={workdir}: its {CHECKPOINTS} ({directory}) cannot be "
                          f"listed ({err.strerror or err}); make it a directory this user can read") from None
    return [(int(n), os.path.isdir(os.path.join(directory, n))) for n in names if n.isdigit()]


def not_a_directory(path: str) -> str | None:
    """What takes the place of the directory `path` ("a file", "a symlink loop (it points to
    B)", ...), or None when `path` is a directory (or a symlink to one) or does not exist."""
    if os.path.isdir(path) or not os.path.lexists(path):
        return None
    if not os.path.islink(path):
        return "a file"
    try:
        os.stat(path)
    except OSError as err:
        kind = "a symlink loop" if err.errno == errno.ELOOP else "a symlink to nothing"
    else:
        kind = "a symlink to a file"
    return f"{kind} (it points to {os.readlink(path)})"


def check_checkpoints(workdir: str) -> None:
    """ConfigError (bad input, found before any compute) when WORKDIR/checkpoints exists but is
    not a directory: a file, a symlink loop, a symlink to nothing or to a file. Checked by the
    trainer before it starts and by every reader before it lists the steps."""
    path = checkpoint_dir(workdir)
    problem = not_a_directory(path)
    if problem is not None:
        raise ConfigError(f"--workdir={workdir}: {path} is {problem}, not the directory of the "
                          "run's checkpoints; move it away (or use another --workdir) and rerun")


def saved_steps(workdir: str) -> list[int]:
    """The steps of the complete checkpoints (directories named by their step), ascending;
    [] when there is no checkpoints/ directory. Read from the disk at every call."""
    return sorted(step for step, is_dir in _numbered(workdir) if is_dir)


def stray_files(workdir: str) -> list[int]:
    """Steps whose name in checkpoints/ is taken by something that is not a directory (a file
    a user or tool put there, a symlink loop or to nothing): saving that step would replace it.
    `stray_reason` says what it is."""
    return sorted(step for step, is_dir in _numbered(workdir) if not is_dir)


def stray_reason(workdir: str, step: int) -> str:
    """Why the entry of `step` in checkpoints/ (one of `stray_files`) is not a checkpoint."""
    problem = not_a_directory(step_dir(workdir, step)) or "gone"
    return f"it is {problem}, not a checkpoint directory"


def set_aside_entries(workdir: str, tag: str = CORRUPT_TAG) -> list[str]:
    """Names in checkpoints/ of the checkpoints set aside with `tag` (default: as damaged,
    ``<step>.corrupt-<time>``), sorted."""
    directory = checkpoint_dir(workdir)
    if not os.path.isdir(directory):
        return []
    return sorted(n for n in os.listdir(directory) if tag in n)


def newest_set_aside(workdir: str, step: int, tag: str) -> str:
    """The path of the newest checkpoint `step` set aside with `tag` (``<step><tag><UTC time>``;
    ``<step><tag>?`` when there is none)."""
    prefix = f"{step}{tag}"
    names = [n for n in set_aside_entries(workdir, tag) if n.startswith(prefix)]
    return os.path.join(checkpoint_dir(workdir), max(names, default=prefix + "?"))


def read_summary(workdir: str) -> dict[str, Any] | None:
    """WORKDIR/summary.json as written at the end of a run (a JSON object), or None when there is
    none (the run has not finished). ConfigError naming the file when it cannot be read or is not
    a JSON object: "<path> is not a summary written by jaxsparse.train (<error type>: <error>)"."""
    path = summary_path(workdir)
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            summary = json.load(f)
        if not isinstance(summary, dict):
            raise TypeError(f"a JSON {type(summary).__name__}, not an object")
    except (OSError, ValueError, TypeError) as err:
        raise ConfigError(f"{path} is not a summary written by jaxsparse.train "
                          f"({type(err).__name__}: {err})") from err
    return summary


def unreadable(path: str) -> str | None:
    """The first file or directory under `path` this process may not read (a permission
    problem, not damage), or None. Opens every file, so it sees what a restore would see; a path
    that is missing (e.g. removed meanwhile by a live trainer's keep-N) is not a permission problem."""
    denied: list[str] = []

    def note(err: OSError) -> None:  # os.walk's errors: a directory it could not list
        if isinstance(err, PermissionError):
            denied.append(err.filename)
    for root, _, files in os.walk(path, onerror=note):
        if denied:
            break
        for name in files:
            try:
                with open(os.path.join(root, name), "rb"):
                    pass
            except PermissionError:
                return os.path.join(root, name)
            except OSError:
                continue  # missing or broken: the restore reports it as damage
    return denied[0] if denied else None
