"""The console's progress line: ETA from the first completed step."""
from __future__ import annotations


def test_eta_counts_from_the_first_completed_step():
    from jaxsparse.train.loop.console import Progress
    progress = Progress(total_steps=100)
    t0 = progress.t0
    assert "ETA ?" in progress.line(1, 1.0, 1.0, 1.0, now=t0 + 50)  # still compiling
    progress.started(1, now=t0 + 50)  # the first step completed after 50 s of compilation
    line = progress.line(10, 1.0, 1.0, 1.0, now=t0 + 59)  # 9 steps in 9 s: 90 steps left
    assert "ETA 1m30s" in line and "elapsed 0m59s" in line  # not (59 s / 10 steps) x 90
