"""Helpers of the scaling tests: synthetic summaries written as the trainer lays out its workdirs."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence


def write_summaries(root: str | Path, summaries: Sequence[dict[str, Any]]) -> list[Path]:
    """Write each summary as root/size_<N>/run_<i>/summary.json (a nested tree, like trainer workdirs)."""
    paths = []
    for i, summary in enumerate(summaries):
        path = Path(root) / f"size_{int(summary['n_total'])}" / f"run_{i:03d}" / "summary.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(summary, indent=1))
        paths.append(path)
    return paths
