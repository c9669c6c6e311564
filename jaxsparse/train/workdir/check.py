"""Checking a workdir before a run, and setting a previous run's outputs aside (`--restart`).

Every failure is a `ConfigError` (bad input: the command line exits 2, nothing computed). The
names checked are the layout's (`jaxsparse.train.workdir.layout`).
"""
from __future__ import annotations

import contextlib
import os
import uuid

import jax

from jaxsparse.errors import ConfigError
from jaxsparse.train.workdir import layout


def make_writable(workdir: str) -> None:
    """Create `workdir` if needed and prove it (and its checkpoints/, if there) writable with a
    probe file that is always removed. Runs before the workdir lock is taken (the lock file lives
    in the workdir), so a URL, a non-UTF-8 path, an unwritable folder or a checkpoints/ that is
    not a directory (`layout.check_checkpoints`) is refused first."""
    _check_path(workdir)
    layout.check_checkpoints(workdir)
    try:
        os.makedirs(workdir, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"--workdir={workdir} is not a writable directory: {err}") from err
    for where in (workdir, layout.checkpoint_dir(workdir)):
        if os.path.isdir(where) or where == workdir:
            _probe(where, workdir)


def outputs_to_set_aside(workdir: str, restart: bool = False) -> bool:
    """Whether the trainer must move the outputs of an earlier attempt aside
    (`move_previous_outputs`) before it starts from step 0; called once the workdir lock is held.

    A workdir holding summary.json but no checkpoint cannot be resumed, nor one whose every
    checkpoint was set aside as damaged: refused unless `restart`. metrics.jsonl with no intact or
    damaged checkpoint (a kill before the first one, or a divergence whose every checkpoint was set
    aside as not good) is safe to move aside: True, and the trainer says so. With `restart`: True
    if there is anything to move.
    """
    outputs = layout.present_outputs(workdir)
    if restart or layout.saved_steps(workdir):
        return restart and bool(outputs)
    damaged = layout.set_aside_entries(workdir)
    previous = layout.previous_dir(workdir)
    if damaged:
        raise ConfigError(
            f"--workdir={workdir}: every checkpoint was set aside as damaged ({', '.join(damaged)} in "
            f"{layout.checkpoint_dir(workdir)}), so there is nothing to resume from; pass --restart "
            f"to start over from step 0 (it moves the old outputs to {previous}/)")
    if layout.SUMMARY in outputs:
        raise ConfigError(
            f"--workdir={workdir} holds {layout.SUMMARY} but no checkpoint to resume from; use a new "
            f"--workdir, or pass --restart to start over (it moves the old outputs to {previous}/)")
    return layout.METRICS in outputs


def _check_path(workdir: str) -> None:
    if not workdir:
        raise ConfigError("--workdir is required: the directory for checkpoints, metrics and summary")
    if "://" in workdir:
        raise ConfigError(f"--workdir={workdir}: URLs are not supported; mount the bucket "
                          "(e.g. gcsfuse BUCKET /mnt/gcs, as launch/setup.sh does) and pass the "
                          "local path, e.g. /mnt/gcs/runs/NAME")
    try:
        os.path.abspath(workdir).encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError(f"--workdir={workdir!r} holds a byte that is not UTF-8; the checkpoint "
                          "library cannot write there. Use a UTF-8 (e.g. ASCII) path") from None


def _probe(directory: str, workdir: str) -> None:
    """Write and remove a probe file in `directory` (removed even when the write fails)."""
    probe = os.path.join(directory, f".write_probe_{uuid.uuid4().hex}")
    try:
        with open(probe, "w", encoding="utf-8") as f:
            f.write("ok")
            f.flush()
            os.fsync(f.fileno())
    except OSError as err:
        where = "" if directory == workdir else f" (its {os.path.basename(directory)}/)"
        raise ConfigError(f"--workdir={workdir}{where} is not a writable directory: {err}") from err
    finally:
        with contextlib.suppress(OSError):
            os.remove(probe)


def move_previous_outputs(workdir: str, why: str = "--restart") -> None:
    """`--restart`: move every output of a previous run (layout.RUN_OUTPUTS) to
    WORKDIR/previous/<UTC time>/ (process 0 moves, the others wait; nothing is deleted)."""
    outputs = layout.present_outputs(workdir)
    if jax.process_index() == 0 and outputs:
        target = os.path.join(layout.previous_dir(workdir), layout.utc_stamp())
        os.makedirs(target, exist_ok=True)
        for name in outputs:
            os.replace(os.path.join(workdir, name), os.path.join(target, name))
        print(f"{why}: moved {', '.join(outputs)} to {target}", flush=True)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices("jaxsparse --restart: previous outputs moved")
