"""Where a run's checkpoints live on disk, and what a look at the files (no restore) can tell.

Layout: WORKDIR/checkpoints/<step>/ (a directory per complete checkpoint; orbax writes into a
temporary sibling and renames it when complete), ``<step>.corrupt-<UTC time>`` for one set aside
as damaged and ``<step>.diverged-<UTC time>`` for one whose parameters gave a non-finite loss.
This module owns that layout: the trainer, the readers (generate, evaluate, export), the workdir
checks and the fault messages all list steps through `saved_steps`.
Imports nothing from jax or orbax (cheap for the checks done before any compute).
"""
from __future__ import annotations

import os

CHECKPOINTS = "checkpoints"
CORRUPT_TAG = ".corrupt-"  # damaged
DIVERGED_TAG = ".diverged-"  # its parameters gave a non-finite loss


def checkpoint_dir(workdir: str) -> str:
    """WORKDIR/checkpoints (absolute)."""
    return os.path.join(os.path.abspath(workdir), CHECKPOINTS)


def saved_steps(workdir: str) -> list[int]:
    """The steps of the complete checkpoints (directories named by their step), ascending;
    [] when there is no checkpoints/ directory. Read from the disk at every call."""
    directory = checkpoint_dir(workdir)
    try:
        names = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(int(n) for n in names if n.isdigit() and os.path.isdir(os.path.join(directory, n)))


def set_aside_entries(workdir: str) -> list[str]:
    """Names of the checkpoints that were set aside as damaged (``<step>.corrupt-<time>``)."""
    directory = checkpoint_dir(workdir)
    if not os.path.isdir(directory):
        return []
    return sorted(n for n in os.listdir(directory) if CORRUPT_TAG in n)


def stray_files(workdir: str) -> list[int]:
    """Steps whose name in checkpoints/ is taken by something that is not a directory (a file
    a user or tool put there): saving that step would replace it."""
    directory = checkpoint_dir(workdir)
    if not os.path.isdir(directory):
        return []
    return sorted(int(n) for n in os.listdir(directory)
                  if n.isdigit() and not os.path.isdir(os.path.join(directory, n)))


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
