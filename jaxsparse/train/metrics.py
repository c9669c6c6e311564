"""Metrics of a run: WORKDIR/metrics.jsonl, TensorBoard event files, and a console line.

Every record of metrics.jsonl is one JSON object with a "kind" ("train", "eval" or
"pruning_event") and a "step". Only process 0 writes (the others get a no-op writer).
"""
from __future__ import annotations

import json
import os
import time
from typing import Any

from absl import logging


def format_duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


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


class Progress:
    """A console line per log interval: step, loss, density, tokens/s and ETA."""

    def __init__(self, total_steps: int, start_step: int):
        self.total = total_steps
        self.start_step = start_step
        self.t0 = time.time()

    def line(self, step: int, loss: float, density: float, tokens_per_s: float) -> str:
        done = step - self.start_step
        elapsed = time.time() - self.t0
        eta = elapsed / done * (self.total - step) if done > 0 else float("nan")
        eta_text = format_duration(eta) if done > 0 else "?"
        return (f"step {step:>7d}/{self.total} ({100 * step / self.total:5.1f}%)  "
                f"loss {loss:7.4f}  density {density:6.4f}  {tokens_per_s:10,.0f} tok/s  "
                f"elapsed {format_duration(elapsed)}  ETA {eta_text}")

    def log(self, *args: Any) -> None:
        say(self.line(*args))


def say(message: str) -> None:
    """A console line from process 0 (stdout, flushed), also sent to the absl log."""
    logging.info(message)
    import jax
    if jax.process_index() == 0:
        print(message, flush=True)
