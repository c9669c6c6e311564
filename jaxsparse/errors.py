"""Error kinds and exit codes shared by every jaxsparse command line (one place for each).

Every CLI (`train`, `data`, `sweep`, `scaling`, `generate`, `evaluate`, `export`) exits with one of
the EXIT_* codes below; docs/checkpoints-and-faults.md states what each means for a user.

This module imports nothing from jaxsparse, so `data/`, `models/`, `train/` and the other
packages can all raise `ConfigError` (the pruning library stays standalone and raises ValueError).
"""
from __future__ import annotations

import contextlib
import difflib
import os
import sys
from collections.abc import Callable, Iterable
from typing import NoReturn, TypeVar

EXIT_OK = 0
EXIT_FAULT = 1  # a fault after compute started: the message says what was saved
EXIT_BAD_INPUT = 2  # bad input: nothing computed or written
EXIT_DIVERGED = 3  # non-finite loss: the newest good checkpoint is kept
EXIT_DOES_NOT_FIT = 4  # --compile_for: the run does not fit the target's memory
EXIT_PREEMPTED = 75  # SIGTERM, checkpoint saved; EX_TEMPFAIL: "try again"


class ConfigError(ValueError):
    """Bad input, found before any compute: the message names the field (or file), the value and
    what is allowed. Command lines turn it into one plain line on stderr and exit 2."""


def unknown_key_message(section: str, key: str, allowed: Iterable[str]) -> str:
    """'unknown key data.tokenzier; did you mean data.tokenizer? Known: ...'."""
    allowed = sorted(allowed)
    prefix = f"{section}." if section else ""
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    hint = f"; did you mean {prefix}{close[0]}?" if close else ""
    return f"unknown key {prefix}{key}{hint} Known keys: {', '.join(prefix + k for k in allowed)}"


def fail(message: str, code: int = EXIT_BAD_INPUT, now: bool = False) -> NoReturn:
    """Print `error: message` (plain text, no traceback) to stderr and exit with `code`. The line is
    written in one call, so a background thread's output (orbax's) cannot split it. `now`: exit at
    once, not waiting for background threads (after an I/O fault one may wait forever). The callers
    that pass `now` have already closed the checkpointer (orbax's writes finished) and the metrics
    writer; atexit handlers (absl's log flush) are skipped. A console on a full disk cannot stop it."""
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write(f"error: {message}\n")
        sys.stderr.flush()
    if now:
        with contextlib.suppress(OSError, ValueError):
            sys.stdout.flush()
        os._exit(code)
    sys.exit(code)


T = TypeVar("T")


def exit_on_bad_input(fn: Callable[..., T]) -> Callable[..., T]:
    """Decorate a CLI entry point: a `ConfigError` becomes one line on stderr and exit 2."""

    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ConfigError as err:
            fail(str(err), EXIT_BAD_INPUT)

    wrapper.__name__ = getattr(fn, "__name__", "main")
    wrapper.__doc__ = fn.__doc__
    return wrapper
