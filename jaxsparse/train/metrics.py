"""Metrics of a run: WORKDIR/metrics.jsonl and TensorBoard event files (console: train/console.py).

Every record of metrics.jsonl is one JSON object with a "kind" ("train", "eval" or
"pruning_event") and a "step". Only process 0 writes (the others get a no-op writer).
"""
from __future__ import annotations

import json
import os
from typing import Any



class MetricsWriter:
    """Appends records to metrics.jsonl (and TensorBoard scalars) in `workdir`."""

    def __init__(self, workdir: str, enabled: bool = True, tensorboard: bool = True,
                 keep_until: int = 0):
        """``keep_until``: the step the run resumes from; records of later steps (written
        before a crash, and about to be redone) are dropped so that no step appears twice."""
        self.enabled = enabled
        self._tb = None
        if not enabled:
            return
        path = os.path.join(workdir, "metrics.jsonl")
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                kept = [line for line in f if line.strip()
                        and json.loads(line).get("step", 0) <= keep_until]
            with open(path + ".tmp", "w", encoding="utf-8") as f:
                f.writelines(kept)
            os.replace(path + ".tmp", path)
        self._file = open(path, "a", encoding="utf-8")
        if tensorboard:
            from tensorboardX import SummaryWriter  # TensorBoard files without TensorFlow
            self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def write(self, kind: str, step: int, values: dict[str, Any]) -> None:
        if not self.enabled:
            return
        record = {"kind": kind, "step": int(step), **values}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._tb is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._tb.add_scalar(f"{kind}/{key}", value, step)

    def close(self) -> None:
        if self.enabled:
            self._file.close()
            if self._tb is not None:
                self._tb.close()
