"""The trainer's log file: from the first step on, what libraries report goes to the workdir.

While a `RunLog` is started, the Python log (absl, orbax, jax: every record the `--verbosity`
lets through), Python warnings, exceptions of background threads and unraisable exceptions
(tensorstore's callback threads report `Event loop is closed` that way after a failed save) go to
WORKDIR/trainer.log (`layout.trainer_log_path`; process p > 0 of a multi-process run writes
trainer.p.log) instead of stderr. The console keeps the trainer's own lines (stdout) and, after a
fault, its one `error:` line (stderr); orbax's tracebacks and the fault's own are in the file.

The file is appended to by every attempt and opened at its first record (an attempt that logs
nothing adds nothing). A record that cannot be written (a full disk) is dropped, and the first
such error kept (`failed`), so a log never stops a run nor floods the console.
"""
from __future__ import annotations

import logging
import sys
import threading
import warnings

from absl import logging as absl_logging


class _FileHandler(logging.FileHandler):
    """absl's line format, appending, opened at the first record; write errors kept, not printed."""

    def __init__(self, path: str):
        super().__init__(path, mode="a", encoding="utf-8", delay=True)
        self.setFormatter(absl_logging.PythonFormatter())
        self.failed: BaseException | None = None

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        if self.failed is None:
            self.failed = sys.exc_info()[1]

    def close(self) -> None:
        try:
            super().close()
        except OSError as err:  # the last flush, on a full disk
            self.failed = self.failed or err


def _to_console(handler: logging.Handler) -> bool:
    """Whether `handler` writes to the console: absl's, or a stream handler on stderr."""
    if handler is absl_logging.get_absl_handler():
        return True
    if type(handler) is not logging.StreamHandler:  # a file's, or a test runner's capture
        return False
    try:
        return handler.stream in (sys.stderr, sys.__stderr__) or handler.stream.fileno() == 2
    except (AttributeError, OSError, ValueError):  # no file descriptor
        return False


def _log_thread_exception(args: threading.ExceptHookArgs) -> None:
    name = args.thread.name if args.thread else "?"
    logging.getLogger(__name__).error("exception in thread %s", name, exc_info=(
        args.exc_type, args.exc_value, args.exc_traceback))


def _log_unraisable(args) -> None:
    where = "" if args.object is None else f" in {args.object!r}"
    logging.getLogger(__name__).error("%s%s", args.err_msg or "exception ignored", where, exc_info=(
        args.exc_type, args.exc_value, args.exc_traceback))


_kept: list[RunLog] = []  # a log left started by a fault (see `keep`), stopped by the next start


class RunLog:
    """The log file of one training attempt: `start(path)` routes the log there, `stop` gives
    the console its handlers back; `keep` leaves it routed until the process ends."""

    def __init__(self):
        self.path: str | None = None
        self._handler: _FileHandler | None = None
        self._console: list[logging.Handler] = []
        self._warnings: warnings.catch_warnings | None = None
        self._excepthook = threading.excepthook
        self._unraisablehook = sys.unraisablehook

    @property
    def started(self) -> bool:
        return self._handler is not None

    @property
    def failed(self) -> BaseException | None:
        """The first error met writing the file (e.g. a full disk), or None."""
        return self._handler.failed if self._handler is not None else None

    def start(self, path: str) -> None:
        """Route the log, warnings, background threads' and unraisable exceptions to the file
        `path`."""
        while _kept:
            _kept.pop().stop()
        root = logging.getLogger()
        self._console = [h for h in root.handlers if _to_console(h)]
        for handler in self._console:
            root.removeHandler(handler)
        self.path, self._handler = path, _FileHandler(path)
        root.addHandler(self._handler)
        self._warnings = warnings.catch_warnings()
        self._warnings.__enter__()
        logging.captureWarnings(True)
        self._excepthook, threading.excepthook = threading.excepthook, _log_thread_exception
        self._unraisablehook, sys.unraisablehook = sys.unraisablehook, _log_unraisable

    def stop(self) -> None:
        """Give the console back what `start` took; close the file. Idempotent."""
        if self._handler is None:
            return
        threading.excepthook = self._excepthook
        if sys.unraisablehook is _log_unraisable:  # a hook chained on since (workdir.fallback's) stays
            sys.unraisablehook = self._unraisablehook
        logging.captureWarnings(False)
        self._warnings.__exit__(None, None, None)
        root = logging.getLogger()
        root.removeHandler(self._handler)
        self._handler.close()
        for handler in self._console:
            root.addHandler(handler)
        self._handler, self._console = None, []

    def keep(self) -> None:
        """Leave the log routed (`close` does not stop it): after a fault the process exits at
        once, and the checkpointer's threads may log until then. The next `start` (an in-process
        caller's next run) stops it."""
        _kept.append(self)

    def close(self) -> None:
        """The end of the attempt: `stop`, unless kept."""
        if self not in _kept:
            self.stop()

    def where(self) -> str:
        """Where the details are, for a fault message: "details in PATH", and whether some
        records could not be written there."""
        if self.failed is not None:
            return (f"details in {self.path}; some could not be written "
                    f"({type(self.failed).__name__}: {self.failed})")
        return f"details in {self.path}"
