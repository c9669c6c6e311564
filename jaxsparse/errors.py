"""Error kinds, exit codes and the one path from an error to an exit status, for every command line.

Every CLI (`train`, `data`, `sweep`, `scaling`, `models`, `generate`, `evaluate`, `export`) exits
with one of the EXIT_* codes below (docs/checkpoints-and-faults.md states what each means for a
user), through `entry_point`; argparse-based ones build their parser with `ArgumentParser`, whose
usage errors are bad input like any other.

`entry_point` also quiets libtpu's start-up probe on a machine without a TPU before `main` runs
(`jaxsparse.noise`, the owner of other libraries' console noise).

This module imports nothing else from jaxsparse, so `data/`, `models/`, `train/` and the other
packages can all raise `ConfigError` (the pruning library stays standalone and raises ValueError).
"""
from __future__ import annotations

import argparse
import contextlib
import difflib
import functools
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import NoReturn

from jaxsparse import noise

EXIT_OK = 0
EXIT_FAULT = 1  # a fault after compute started: the message says what was saved
EXIT_BAD_INPUT = 2  # bad input: nothing computed or written
EXIT_DIVERGED = 3  # non-finite loss: the newest good checkpoint is kept
EXIT_DOES_NOT_FIT = 4  # --compile_for: the run does not fit the target's memory
EXIT_PREEMPTED = 75  # SIGTERM, checkpoint saved; EX_TEMPFAIL: "try again"


class ConfigError(ValueError):
    """Bad input, found before any compute: the message names the field (or file), the value and
    what is allowed. Command lines turn it into one plain line on stderr and exit 2."""


class Fault(RuntimeError):
    """A fault after compute started (an I/O error, a full disk): the message says what was saved
    and how to resume; exit 1. `at_once`: the process exits without waiting for background threads
    (after an I/O fault one may wait forever); a subclass sets it once its writers are closed."""

    at_once = False


def unknown_key_message(section: str, key: str, allowed: Iterable[str]) -> str:
    """'unknown key data.tokenzier; did you mean data.tokenizer? Known keys: ...'."""
    allowed = sorted(allowed)
    prefix = f"{section}." if section else ""
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    hint = f"; did you mean {prefix}{close[0]}?" if close else ""
    return f"unknown key {prefix}{key}{hint} Known keys: {', '.join(prefix + k for k in allowed)}"


@contextlib.contextmanager
def as_bad_input(*kinds: type[BaseException]) -> Iterator[None]:
    """Inside the block, an exception of `kinds` (e.g. FileNotFoundError while reading a run's
    files) is bad input: re-raised as a ConfigError with the same message."""
    try:
        yield
    except ConfigError:
        raise
    except kinds as err:
        raise ConfigError(str(err)) from err


class ArgumentParser(argparse.ArgumentParser):
    """argparse, with a usage error raised as ConfigError '<prog>: <what is wrong> (see --help)'
    (one line, no usage block) so it takes the one exit path; sub-parsers share the class."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{self.prog}: {message} (see --help)")


def _print_error(message: str) -> None:
    """`error: message` on stderr, written in one call so that a background thread's output
    (orbax's) cannot split it; a console on a full disk cannot stop the exit."""
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write(f"error: {message}\n")
        sys.stderr.flush()


def _silence_stdout() -> None:
    """After a reader closed stdout (`| head`): point it at /dev/null, so that the interpreter's
    final flush raises nothing more."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


ExitRules = tuple[tuple[type[BaseException], int], ...]


def exit_status(err: BaseException, exits: ExitRules = ()) -> int | None:
    """The exit status for `err`, after printing its one `error:` line; None: not an input error
    or a fault, but a bug, which keeps its traceback.

    ConfigError -> EXIT_BAD_INPUT; Fault -> EXIT_FAULT (with `at_once`, the process ends here);
    each (kind, status) of `exits` -> status; BrokenPipeError (stdout closed early) -> EXIT_OK,
    nothing printed; SystemExit (argparse's --help) -> its code."""
    if isinstance(err, SystemExit) and (err.code is None or isinstance(err.code, int)):
        return err.code or EXIT_OK
    if isinstance(err, BrokenPipeError):
        _silence_stdout()
        return EXIT_OK
    for kind, status in ((ConfigError, EXIT_BAD_INPUT), (Fault, EXIT_FAULT), *exits):
        if isinstance(err, kind):
            _print_error(str(err))
            if getattr(err, "at_once", False):  # its writers are closed; atexit handlers skipped
                with contextlib.suppress(OSError, ValueError):
                    sys.stdout.flush()
                os._exit(status)
            return status
    return None


def entry_point(fn: Callable | None = None, *, exits: ExitRules = (), raise_exit: bool = False):
    """Decorate a command line's `main(argv) -> status | None`: every error takes `exit_status`,
    so bad input is one `error: ...` line on stderr, exit 2, and nothing on stdout. Before `main`,
    `noise.quiet_libtpu()` (no libtpu start-up noise on a machine without a TPU).

    The wrapper returns the status (`sys.exit(main())` exits with it; in-process callers read it);
    `raise_exit=True` raises SystemExit(status) instead, for hooks whose return value is not a
    status (absl's `flags_parser`). `exits`: more (exception kind, status) pairs, e.g. the
    trainer's (FloatingPointError, EXIT_DIVERGED)."""

    def decorate(main: Callable) -> Callable:
        @functools.wraps(main)
        def wrapper(*args, **kwargs):
            try:
                noise.quiet_libtpu()
                return main(*args, **kwargs)
            except BaseException as err:  # noqa: BLE001 - exit_status says which end the process
                status = exit_status(err, exits)
                if status is None:
                    raise
            if raise_exit:
                raise SystemExit(status)
            return status

        return wrapper

    return decorate if fn is None else decorate(fn)
