"""Checkpointer (jaxsparse.train.workdir.checkpoints) beside a live trainer's keep-N deletions."""
import threading
import time

import orbax.checkpoint as ocp

from jaxsparse.train.workdir import layout
from jaxsparse.train.workdir.checkpoints import Checkpointer


def _save_and_delete_until(stop: threading.Event, workdir: str, saved: list[int]) -> None:
    """What a trainer with checkpoint.keep=1 does to checkpoints/: save a step, then remove the older."""
    options = ocp.CheckpointManagerOptions(max_to_keep=1, enable_async_checkpointing=False)
    manager = ocp.CheckpointManager(layout.checkpoint_dir(workdir), options=options, item_names=("meta",))
    step = 0
    while not stop.is_set():
        step += 1
        manager.save(step, args=ocp.args.Composite(meta=ocp.args.JsonSave({"step": step})))
        saved.append(step)
    manager.close()


def test_opening_a_reader_beside_a_trainer_that_removes_old_steps_never_fails(tmp_path):
    """orbax lists the step directories and then reads each one's metadata when it opens; a step
    removed in between (without the retry: about 1 opening in 20 failed with FileNotFoundError)
    is listed again, never raised to the reader."""
    workdir, stop, saved = str(tmp_path), threading.Event(), []
    writer = threading.Thread(target=_save_and_delete_until, args=(stop, workdir, saved))
    writer.start()
    failures, opened, deadline = [], 0, time.monotonic() + 240
    try:
        while len(saved) < 2:
            stop.wait(0.01)
        first = saved[-1]
        # at least 200 openings, during which the trainer saved (and removed) at least 30 steps
        while (opened < 200 or saved[-1] - first < 30) and time.monotonic() < deadline:
            try:
                Checkpointer(workdir, keep=1_000_000, async_save=False).close()
                opened += 1
            except Exception as err:  # noqa: BLE001 - what a reader would see
                failures.append(f"{type(err).__name__}: {err}")
    finally:
        stop.set()
        writer.join()
    assert failures == [], failures[:3]
    assert opened >= 200 and saved[-1] - first >= 30, (opened, first, saved[-1])
