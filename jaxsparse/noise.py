"""The one owner of other libraries' noise on a command line's console: what libtpu and
tensorflow-datasets would print that says nothing to a user.

- libtpu (from `.[tpu]`) starts when JAX first looks for devices. On a machine without a TPU chip its
  start-up probe prints "could not determine TPU accelerator type / worker hostnames" and an
  `INVALID_ARGUMENT ... TPU_WORKER_HOSTNAMES` error (JAX then picks the CPU or GPU, as it would
  without libtpu). `quiet_libtpu()` sets, only when no TPU chip is present (the test JAX itself uses to
  set TPU_SKIP_MDS_QUERY), and only where unset, the environment libtpu reads when it starts: no
  metadata-server query, a placeholder accelerator type and worker list, and no single-process
  lockfile (several processes may compile for a slice at once). On a TPU VM nothing changes.
  `errors.entry_point` calls it before every command line's `main` (no command initialises JAX's
  backends at import), and `--compile_for` before describing a slice; child processes inherit it.
- tensorflow-datasets: building a local corpus prints "Using custom data configuration", a
  "Downloading and preparing dataset" line on stdout and progress bars, although nothing is downloaded.
  `quiet_tfds()` keeps them off the console around a local build.

Imports nothing from jaxsparse; JAX and tensorflow-datasets are imported only when needed.
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import os
from collections.abc import Iterator

NO_TPU_ENV = (("TPU_SKIP_MDS_QUERY", "1"), ("TPU_WORKER_HOSTNAMES", "localhost"),
              ("TPU_ACCELERATOR_TYPE", "v4-8"), ("ALLOW_MULTIPLE_LIBTPU_LOAD", "1"))
TFDS_NOISE = ("Using custom data configuration",)  # tfds log lines that start so are dropped


def tpu_chips_present() -> bool:
    """Whether this machine has TPU chips (JAX's own PCI test); True when the test cannot answer,
    so that nothing is changed on a machine that might be a TPU VM."""
    try:
        from jax._src import hardware_utils  # noqa: PLC0415 - JAX only when libtpu is installed
        return hardware_utils.num_available_tpu_chips_and_device_id()[0] > 0
    except Exception:  # noqa: BLE001 - a private helper: no answer means a TPU may be present
        return True


def quiet_libtpu() -> None:
    """Before JAX initialises its backends: when libtpu is installed and no TPU chip is present, set
    NO_TPU_ENV's variables that are unset (module doc). Idempotent; never changes a set variable."""
    if importlib.util.find_spec("libtpu") is None or tpu_chips_present():
        return
    for key, value in NO_TPU_ENV:
        os.environ.setdefault(key, value)


class _Drop(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(TFDS_NOISE)


@contextlib.contextmanager
def quiet_tfds() -> Iterator[None]:
    """Around creating or building a local tfds dataset: drop tfds's TFDS_NOISE log lines, its
    progress bars and what it prints on stdout ("Downloading and preparing dataset ...", "...
    downloaded and prepared"); restored on exit."""
    import tensorflow_datasets as tfds  # noqa: PLC0415
    from absl import logging as absl_logging  # noqa: PLC0415
    from tensorflow_datasets.core.utils import tqdm_utils  # noqa: PLC0415

    logger, drop = absl_logging.get_absl_logger(), _Drop()
    bars = getattr(tqdm_utils, "_active", True)
    logger.addFilter(drop)
    tfds.display_progress_bar(False)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        tfds.display_progress_bar(bars)
        logger.removeFilter(drop)
