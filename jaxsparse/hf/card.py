"""The model card (README.md) of an exported run: N̄, sparsity per layer and overall, tokens, eval loss, config.

Figures come from the run's own records: summary.json when the exported step is the run's last,
else the checkpoint's progress (N̄ so far) and metrics.jsonl (the eval loss logged at that step).
The caller reads both files and passes their contents in: hf imports nothing from the trainer.
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from typing import Any, Optional

import numpy as np

from jaxsparse.hf.convert import hf_tensor_names


def layer_sparsity(hf_tensors: dict[str, np.ndarray], masked: set[str]) -> dict[str, float]:
    """Fraction of exact zeros of every exported tensor that had a mask (HF names)."""
    return {name: float(np.mean(hf_tensors[name] == 0.0)) for name in hf_tensors if name in masked}


def run_figures(step: int, meta: dict, config: Any, n_total: int, summary: Optional[dict],
                records: Sequence[dict]) -> dict[str, Any]:
    """{n_avg, n_avg_source, tokens, eval_loss} of checkpoint `step` of a run. `summary`: the run's
    summary.json (None: not finished) and `records`: its metrics.jsonl records in file order, both
    read by the caller (`jaxsparse.export`, through the trainer's workdir layout)."""
    summary = summary or {}
    if summary.get("steps") == step:
        return {"n_avg": summary.get("n_avg_realised", summary.get("n_avg")), "n_avg_source": "summary.json",
                "tokens": summary.get("tokens"), "eval_loss": summary.get("final_eval_loss")}
    active_sum = (meta.get("progress") or {}).get("active_sum")
    evals = [r.get("eval_loss") for r in records if r.get("kind") == "eval" and r.get("step") == step]
    return {"n_avg": active_sum / step if active_sum and step else float(n_total),
            "n_avg_source": "checkpoint progress (steps so far)",
            "tokens": step * int(config.train.batch_size) * int(config.train.seq_len),
            "eval_loss": evals[-1] if evals else None}


_LOCAL_PATH = re.compile(r"(?<![^\s:=,(\[])(?:~|/(?!/))[^\s,;:'\"()\[\]]*")


def _last_name(match: re.Match) -> str:
    name = os.path.basename(match.group(0).rstrip("/"))
    return f"…/{name}" if name else match.group(0)


def without_local_paths(value: Any) -> Any:
    """`value` (nested dicts, lists, strings) with every absolute or home-relative path in a string
    cut to its last name: "text:/home/me/corpus" -> "text:…/corpus". A card is published with the
    model; the layout of the machine it was trained on is not."""
    if isinstance(value, dict):
        return {k: without_local_paths(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [without_local_paths(v) for v in value]
    if isinstance(value, str):
        return _LOCAL_PATH.sub(_last_name, value)
    return value


def model_card(*, step: int, config: Any, figures: dict[str, Any], sparsity: dict[str, float],
               sizes: dict[str, int], model_cfg: Any) -> str:
    """README.md text (markdown) of an exported model; no local path (`without_local_paths`)."""
    total, prunable = sizes["total"], sizes["prunable"]
    zeros = sizes["zeros"]
    order = [n for n in hf_tensor_names(model_cfg) if n in sparsity]
    rows = "\n".join(f"| `{name}` | {sparsity[name]:.4f} |" for name in order)
    fmt = lambda x, spec: "n/a" if x is None else format(x, spec)  # noqa: E731
    return f"""---
library_name: transformers
tags: [llama, sparse, jaxsparse, magnitude-pruning]
---
# Sparse LLaMA-style model from jaxsparse

Exported by `python -m jaxsparse.export` from checkpoint step {step} of its training run.
Trained with gradual magnitude pruning ("The Journey Matters", Jin et al., ICLR 2025): pruned weights are
stored as exact zeros in `model.safetensors` (float32, LLaMA layout).

| figure | value |
|---|---|
| parameters (total) | {total:,} |
| prunable parameters (linear kernels and LM head) | {prunable:,} |
| zero weights | {zeros:,} |
| sparsity of the prunable weights | {zeros / max(prunable, 1):.4f} |
| sparsity over all parameters | {zeros / max(total, 1):.4f} |
| N̄, the average parameter count over training ({figures['n_avg_source']}) | {fmt(figures['n_avg'], ',.0f')} |
| training tokens | {fmt(figures['tokens'], ',')} |
| eval loss (nats/token) | {fmt(figures['eval_loss'], '.4f')} |

```python
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained("PATH")
tokenizer = AutoTokenizer.from_pretrained("PATH")
ids = tokenizer("ROMEO:", return_tensors="pt").input_ids
print(tokenizer.decode(model.generate(ids, max_new_tokens=40)[0]))
```

## Sparsity per layer (fraction of exact zeros)

| tensor | sparsity |
|---|---|
{rows}

## Training config

```json
{json.dumps(without_local_paths(config.to_dict()), indent=2, sort_keys=True, default=str, ensure_ascii=False)}
```
"""
