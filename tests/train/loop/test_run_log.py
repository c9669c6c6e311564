"""The trainer's log file: while started, the Python log, warnings and background threads'
exceptions go to the file, not to stderr; stop gives the console back; a file that cannot be
written (a full device) drops records silently and says so; keep leaves it routed; an exception
a native library's callback thread cannot raise (unraisable) goes to the file too."""
from __future__ import annotations

import asyncio
import logging
import sys
import threading
import warnings

import pytest
import tensorstore as ts
from absl import logging as absl_logging

from jaxsparse.train.loop.run_log import RunLog


@pytest.fixture
def console(capfd):
    """absl's handler on the root logger, writing to stderr, as `app.run` leaves it."""
    handler, root = absl_logging.get_absl_handler(), logging.getLogger()
    added = handler not in root.handlers
    if added:
        root.addHandler(handler)
    yield handler
    if added:
        root.removeHandler(handler)


def _raise_in_thread() -> None:
    def fail():
        raise OSError(28, "No space left on device")
    thread = threading.Thread(target=fail, name="saver")
    thread.start()
    thread.join()


def _report_everything() -> None:
    absl_logging.error("orbax says: failed to commit")
    logging.getLogger("orbax.checkpoint").warning("a library warning")
    warnings.warn("a python warning", UserWarning, stacklevel=1)
    _raise_in_thread()


def test_a_started_log_takes_what_libraries_report_and_stop_gives_it_back(tmp_path, capfd,
                                                                        console):
    hook = threading.excepthook
    log = RunLog()
    log.start(str(tmp_path / "trainer.log"))
    assert console not in logging.getLogger().handlers
    _report_everything()
    log.close()
    assert capfd.readouterr().err == ""  # nothing reached the console
    text = (tmp_path / "trainer.log").read_text()
    assert text.startswith("E") and "] orbax says: failed to commit" in text
    for words in ("a library warning", "UserWarning: a python warning",
                  "exception in thread saver", "Traceback", "OSError: [Errno 28]"):
        assert words in text, words
    assert log.where() == f"details in {tmp_path / 'trainer.log'}"
    # stopped: the console has its handler, warnings and thread hook back
    assert console in logging.getLogger().handlers and threading.excepthook is hook
    logging.getLogger("after").warning("back on the console")
    assert "back on the console" in capfd.readouterr().err
    assert "back on the console" not in (tmp_path / "trainer.log").read_text()


def test_an_attempt_that_logs_nothing_writes_no_file(tmp_path, console):
    log = RunLog()
    log.start(str(tmp_path / "trainer.log"))
    log.close()
    assert not (tmp_path / "trainer.log").exists()


def test_a_file_that_cannot_be_written_drops_records_without_a_word(capfd, console):
    log = RunLog()
    log.start("/dev/full")  # every write fails with ENOSPC, as on a full disk
    _report_everything()
    assert isinstance(log.failed, OSError) and log.failed.errno == 28
    assert log.where().startswith("details in /dev/full; some could not be written (OSError: ")
    log.close()
    assert capfd.readouterr().err == ""  # no "--- Logging error ---" either


def test_a_kept_log_stays_routed_until_the_next_start(tmp_path, capfd, console):
    first, second = RunLog(), RunLog()
    first.start(str(tmp_path / "first.log"))
    first.keep()
    first.close()  # kept: still routed, as while a faulted trainer exits
    logging.getLogger("late").error("a thread's late traceback")
    assert capfd.readouterr().err == ""
    second.start(str(tmp_path / "second.log"))  # the next run in this process
    assert not first.started
    logging.getLogger("next").error("the next run's record")
    second.close()
    assert "late traceback" in (tmp_path / "first.log").read_text()
    assert "next run's record" in (tmp_path / "second.log").read_text()
    assert console in logging.getLogger().handlers and capfd.readouterr().err == ""


def _complete_a_future_awaited_by_a_closed_loop() -> None:
    """What orbax leaves behind after a failed save: a tensorstore future awaited on an event loop
    that is closed by the time the future completes. Its callback thread calls
    `loop.call_soon_threadsafe`, which raises `Event loop is closed`, an unraisable exception."""
    promise, future = ts.Promise.new()
    loop = asyncio.new_event_loop()

    async def wait():
        return await future
    task = loop.create_task(wait())
    loop.run_until_complete(asyncio.sleep(0.01))
    loop.close()
    completer = threading.Thread(target=promise.set_result, args=(1,))
    completer.start()
    completer.join()
    del task


def test_a_native_callback_thread_exception_goes_to_the_file(tmp_path, capfd, console):
    hook = sys.unraisablehook
    log = RunLog()
    log.start(str(tmp_path / "trainer.log"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the pending task's own "was destroyed" notice
        _complete_a_future_awaited_by_a_closed_loop()
    log.close()
    assert capfd.readouterr().err == ""  # was: a bare "Traceback ..." on stderr per failed write
    text = (tmp_path / "trainer.log").read_text()
    assert "exception ignored" in text and "RuntimeError: Event loop is closed" in text, text
    assert sys.unraisablehook is hook  # stopped: the console's hook is back


def test_a_hook_chained_on_while_started_is_not_undone_by_stop(tmp_path, capfd, console):
    """`workdir.fallback.drop_failed_read_noise` wraps whatever unraisable hook is current, for the
    rest of the process; a log stopped after it must not put back the hook from before it."""
    from jaxsparse.train.workdir import fallback
    original = sys.unraisablehook
    log = RunLog()
    log.start(str(tmp_path / "trainer.log"))
    try:
        fallback.drop_failed_read_noise()
        chained = sys.unraisablehook
        log.close()
        assert sys.unraisablehook is chained and chained is not original
    finally:
        log.close()
        sys.unraisablehook = original
