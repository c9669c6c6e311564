"""Metrics of a run: WORKDIR/metrics.jsonl and TensorBoard event files (console: loop/console.py);
the paths are the layout's (`jaxsparse.train.workdir.layout`).

Every record of metrics.jsonl is one JSON object with a "kind" ("train", "eval" or
"pruning_event") and an integer "step". Only process 0 writes (the others get a no-op writer);
`read_records` is the one reader (the trainer, its plots, the model card of an export).
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
from typing import Any

import jax
import numpy as np
from absl import logging

from jaxsparse.errors import ConfigError
from jaxsparse.train.workdir import layout


class MetricsWriter:
    """Appends records to metrics.jsonl (and TensorBoard scalars) in `workdir`.

    Across a resume no record appears twice: records after the resume step are dropped when
    the writer opens (they are about to be redone), and a record whose (kind, step) is already
    in the file is not written again (e.g. an eval redone at the resume step while its record
    is there on process 0). A torn last line (a crash mid-write) is dropped with a warning naming
    the file; a garbled line elsewhere raises ConfigError naming the file and line.
    """

    def __init__(self, workdir: str, enabled: bool = True, tensorboard: bool = True,
                 keep_until: int = 0):
        """``keep_until``: the step the run resumes from; records of later steps (written
        before a crash, and about to be redone) are dropped so that no step appears twice."""
        self.enabled = enabled
        self._tb = None
        self._written: set[tuple[str, int]] = set()
        self.records: list[dict[str, Any]] = []  # every record of the file, in order (process 0)
        if not enabled:
            return
        self.path = layout.metrics_path(workdir)
        kept = [r for r in read_records(workdir) if int(r.get("step", 0)) <= keep_until]
        if os.path.exists(self.path):
            _rewrite(self.path, kept)
        self._written = {(str(r.get("kind")), int(r.get("step", 0))) for r in kept}
        self.records = list(kept)
        self._file = open(self.path, "a", encoding="utf-8")
        if tensorboard:
            from tensorboardX import SummaryWriter  # TensorBoard files without TensorFlow
            self._tb = SummaryWriter(layout.tensorboard_dir(workdir))

    def has(self, kind: str, step: int) -> bool:
        """Whether a `kind` record of `step` is already in the file (process 0's view)."""
        return (kind, int(step)) in self._written

    def value(self, kind: str, step: int, key: str) -> Any:
        """`key` of the `kind` record of `step` in the file (None: no such record, or not
        process 0)."""
        found = [r for r in self.records if r.get("kind") == kind and int(r.get("step", 0)) == int(step)]
        return found[-1].get(key) if found else None

    def agreed_missing(self, kind: str, step: int) -> bool:
        """Whether the file lacks the `kind` record of `step`, as process 0 sees it, on every
        process (collective: every process calls it)."""
        missing = not self.has(kind, step)
        if jax.process_count() == 1:
            return missing
        from jax.experimental import multihost_utils
        return bool(multihost_utils.broadcast_one_to_all(np.int32(missing)))

    def write_all(self, records: list[tuple[str, int, dict[str, Any]]]) -> None:
        """`write` each (kind, step, values) of `records`, in order (see `write`)."""
        for kind, step, values in records:
            self.write(kind, step, values)

    def write(self, kind: str, step: int, values: dict[str, Any]) -> None:
        if not self.enabled or self.has(kind, step):
            return
        record = {"kind": kind, "step": int(step), **values}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        self._written.add((kind, int(step)))
        self.records.append(record)
        if self._tb is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._tb.add_scalar(f"{kind}/{key}", value, step)

    def close(self) -> None:
        if self.enabled:
            self._file.close()
            if self._tb is not None:
                self._tb.close()


def read_records(workdir: str) -> list[dict[str, Any]]:
    """The records of WORKDIR/metrics.jsonl in file order ([] if it does not exist). A torn last
    line is dropped with a warning naming the file; any other unreadable line, or a step that is
    not an integer, raises ConfigError naming the file and line."""
    path = layout.metrics_path(workdir)
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = f.read().split("\n")
    numbered = [(i + 1, line) for i, line in enumerate(lines) if line.strip()]
    records = []
    for n, (lineno, line) in enumerate(numbered):
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError(f"a JSON {type(record).__name__}, not an object")
        except ValueError as err:  # json.JSONDecodeError is one
            if n == len(numbered) - 1:
                message = (f"{path}: dropped its torn last line {lineno} ({line[:60]!r}...): "
                           "a crash cut it short; that step's record is redone")
                logging.warning(message)
                print(f"warning: {message}", file=sys.stderr, flush=True)
                break
            raise ConfigError(f"{path}: line {lineno} is not a JSON record ({err}); fix or "
                              "delete that line to resume") from err
        step = record.get("step", 0)
        if not isinstance(step, int) or isinstance(step, bool):
            raise ConfigError(f"{path}: line {lineno} has step {step!r}, not an integer; fix or "
                              "delete that line to resume")
        records.append(record)
    return records


def _rewrite(path: str, records: list[dict[str, Any]]) -> None:
    """Replace `path` by `records` atomically (a temporary file, fsync, rename); ConfigError,
    with `path` unchanged and no temporary file left, if that cannot be written."""
    tmp = path + ".tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in records)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise ConfigError(f"{path}: cannot rewrite it to resume ({err.strerror or err}); it was left "
                          "as it was and nothing was computed. Free disk space (or fix its "
                          "permissions) and rerun the same command") from err
