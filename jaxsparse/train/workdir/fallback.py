"""The one fallback of every checkpoint reader: the newest checkpoint that verifies; and the
trainer's setting aside of checkpoints a divergence spoiled (`set_aside_from`).

The trainer reports each newer damaged checkpoint by path and step and sets it aside
(``Checkpointer.set_aside``: renamed ``<step>.corrupt-<UTC time>``, never deleted); generate, evaluate
and export report it and read the next older one, changing nothing. A reader beside a live trainer
(which saves new checkpoints and removes old ones) lists the steps again instead of calling a
vanished or overtaken step damaged. Works on a `checkpoints.Checkpointer` (duck-typed here, so this
module imports nothing of it).
"""
from __future__ import annotations

import sys
from typing import Any

import jax
from absl import logging

from jaxsparse.errors import ConfigError
from jaxsparse.train.workdir import layout


class DamagedCheckpoint(Exception):
    """A checkpoint that cannot be trusted (the message says why)."""


def warn(message: str) -> None:
    """A `warning:` line on stderr (process 0) and in the absl log."""
    logging.warning(message)
    if jax.process_index() == 0:
        print(f"warning: {message}", file=sys.stderr, flush=True)


def short(err: BaseException, limit: int = 300) -> str:
    """An exception's message on one line, cut at `limit` characters."""
    text = " ".join(str(err).split())
    return text if len(text) <= limit else text[:limit] + " ..."


_FAILED_READ = "Encountered error while reading array"  # orbax's message for an unreadable array


def drop_failed_read_noise() -> None:
    """After orbax failed to read a damaged checkpoint, its leftover read coroutines raise the same
    error again when they are freed (often at exit), which Python prints as "Exception ignored in:
    <coroutine ...>" with a traceback. The damage was already reported in one line: from now on this
    process drops those and hands every other unraisable exception to the hook it had (the console's,
    or `train.loop.run_log`'s while a run's log is started)."""
    previous = sys.unraisablehook
    if getattr(previous, "drops_failed_reads", False):
        return

    def hook(unraisable) -> None:
        if not str(unraisable.exc_value).startswith(_FAILED_READ):
            previous(unraisable)
    hook.drops_failed_reads = True
    sys.unraisablehook = hook


def all_agree(ok: bool) -> bool:
    """True when `ok` holds on every process (one process: `ok`)."""
    if jax.process_count() == 1:
        return ok
    import numpy as np
    from jax.experimental import multihost_utils
    return bool(np.all(multihost_utils.process_allgather(np.asarray(ok))))


def newest_intact(ckpt: Any, abstract: Any, ident: dict | None, set_aside: bool = True) -> Any:
    """`ckpt`'s newest checkpoint that verifies (a `Restored`), or None if the workdir has none.

    Every newer damaged checkpoint is reported by path and step, and so is a file or a symlink
    that is not a checkpoint directory in place of a newer step (`layout.stray_files`); the
    trainer (`set_aside`) renames each aside, a reader leaves it. If there were checkpoints but
    every one is damaged, raise ConfigError naming them: resuming from scratch would silently redo
    the run. Collective."""
    if set_aside:
        for step in layout.stray_files(ckpt.workdir):
            ckpt.set_aside(step, layout.stray_reason(ckpt.workdir, step))
    damaged: list[str] = []
    tried: set[int] = set()
    while True:
        strays = set() if set_aside else set(layout.stray_files(ckpt.workdir)) - tried
        steps = sorted((set(layout.saved_steps(ckpt.workdir)) - tried) | strays, reverse=True)
        if not steps:
            break
        step, reason = steps[0], None
        tried.add(step)
        if step in strays:
            reason = layout.stray_reason(ckpt.workdir, step)
        else:
            try:
                restored = ckpt.restore_verified(step, abstract, ident)
            except DamagedCheckpoint as err:
                reason = str(err)
        if all_agree(reason is None):
            if damaged:
                warn(f"using the newest intact checkpoint {ckpt.path(step)} (step {step}, verified)")
            return restored
        if not set_aside and step not in strays and _overtaken(ckpt, step, tried):  # a live trainer
            continue
        damaged.append(ckpt.set_aside(step, reason) if set_aside else _report(ckpt, step, reason))
    if damaged:
        raise ConfigError(f"every checkpoint in {ckpt.directory} is damaged"
                          + _every_damaged_advice(damaged, set_aside))
    return None


def named_step_damaged(path: str, step: int, reason: str) -> ConfigError:
    """The refusal of a damaged checkpoint asked for by name (a reader's --step)."""
    return ConfigError(f"checkpoint {path} (step {step}) is damaged: {reason}. Nothing was read; "
                       "pick another --step, or leave --step out to read the newest intact checkpoint")


def set_aside_from(ckpt: Any, first: int, reason: str) -> str:
    """Once every pending save of `ckpt` is complete, set aside (layout.DIVERGED_TAG) every
    checkpoint of step >= `first`: not good, `reason`. Returns `ckpt.describe` of the newest
    remaining one (the last good checkpoint: the one a rerun resumes from). Collective."""
    ckpt.wait()
    steps = layout.saved_steps(ckpt.workdir)
    for step in [s for s in steps if s >= first]:
        ckpt.set_aside(step, reason, layout.DIVERGED_TAG, "is not good")
    return ckpt.describe(max([s for s in steps if s < first], default=None))


def _overtaken(ckpt: Any, step: int, tried: set[int]) -> bool:
    """Whether `step` vanished, or a step not tried yet appeared, while it was read: not damage."""
    now = layout.saved_steps(ckpt.workdir)
    if step in now and not [s for s in now if s > step and s not in tried]:
        return False
    warn(f"checkpoint {ckpt.path(step)} changed while it was read (a running trainer saved a newer "
         "one and removes old ones); trying the newest one")
    return True


def _report(ckpt: Any, step: int, reason: str | None) -> str:  # a reader's: left in place
    warn(f"checkpoint {ckpt.path(step)} (step {step}) is damaged: {reason}. Left in place "
         "(readers change nothing); reading the previous checkpoint")
    return ckpt.path(step)


def _every_damaged_advice(damaged: list[str], set_aside: bool) -> str:
    if set_aside:  # the trainer
        return (f"; each was set aside (renamed, not deleted): {', '.join(damaged)}. Nothing was "
                "trained. To start the run over from step 0, rerun with --restart (or use a new "
                "--workdir)")
    return f": {', '.join(damaged)}. Nothing was read and nothing was changed"
