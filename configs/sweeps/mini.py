"""A CPU-sized replication of both paper sweeps: tiny dense models of several sizes, sparse runs
(25%/75% geometric schedule) at several final sparsities, and sparse runs whose N̄ matches a
dense run's size at the same tokens (equal training compute). About 20-25 minutes on 2 cores.

    python -m jaxsparse.sweep mini        # runs, results.csv, scaling fit, plots, report.md

Every run is configs/tiny.py (embedded Shakespeare, byte tokenizer, vocabulary 259) with width
overrides: n_layers 2, n_heads 4, d_model in WIDTHS; batch 32 x 64 tokens. Steps come from a
token budget in tokens per total parameter (BUDGETS; far below Chinchilla's 20: a CPU demo, not
the paper's regime). Matched runs take the dense partner's step count (same D) and the final
sparsity whose exact N̄ (jaxsparse.pruning.average_param_count) equals the partner's size.

Argument (optional): scale (multiplies every token budget; default 1.0; e.g. 0.1 for a smoke run).
"""
from jaxsparse.models import ParamCounts
from jaxsparse.pruning import Schedule
from jaxsparse.sweep import matching
from jaxsparse.train import base_config, parse_config_args

WIDTHS = (32, 48, 64, 80, 96)          # d_model of the dense ladder
N_LAYERS, N_HEADS = 2, 4
BUDGETS = (2.0, 4.0)                   # tokens per total parameter
SPARSE = {64: (0.5, 0.8), 96: (0.5, 0.8)}  # width -> final sparsities (25/75 geometric)
MATCHED = ((64, 48), (80, 64))         # (sparse width, dense width whose N and D it matches)
BATCH, SEQ = 32, 64
LEARNING_RATE = 1e-2
START, END, EVENTS = 0.25, 0.75, 10    # pruning window (fractions) and events in it


def _config(width: int):
    c = base_config()
    c.model.size, c.model.d_model, c.model.n_layers, c.model.n_heads = (
        "test", width, N_LAYERS, N_HEADS)
    c.train.batch_size, c.train.seq_len = BATCH, SEQ
    return c


def counts(width: int) -> ParamCounts:
    """Parameter counts of the width-`width` model as the trainer builds it (byte vocabulary)."""
    return matching.config_param_counts(_config(width))


def steps_for(width: int, budget: float) -> int:
    """Optimizer steps of `budget` tokens per total parameter (the trainer's own rule)."""
    return matching.steps_for(_config(width), budget, counts(width).total)


def interval_for(steps: int) -> int:
    return max(1, round((END - START) * steps / EVENTS))


def matched_sparsity(width: int, target: float, steps: int) -> float:
    """The final sparsity (4 decimals) at which N̄ of `width` equals `target` parameters."""
    c = counts(width)
    return matching.matched_sparsity(
        lambda s: matching.n_avg(c, Schedule("geometric", s, START, END, interval_for(steps)), steps), target)


def _run(name, width, steps, sparsity, tags):
    sparse = sparsity > 0
    return {
        "name": name,
        "config": f"configs/tiny.py:steps={steps}",
        "overrides": {
            "model.d_model": width, "model.n_layers": N_LAYERS, "model.n_heads": N_HEADS,
            "train.batch_size": BATCH, "train.seq_len": SEQ,
            "train.learning_rate": LEARNING_RATE, "train.warmup_steps": -1,
            "train.log_every_steps": 25,
            "pruning.schedule": "geometric" if sparse else "dense",
            "pruning.final_sparsity": float(sparsity),
            "pruning.start": START, "pruning.end": END, "pruning.interval": interval_for(steps),
            "checkpoint.every_steps": 250, "eval.every_steps": 0, "eval.batches": 16,
        },
        "tags": {"kind": tags.pop("kind"), "width": width, "sparsity": float(sparsity), **tags},
    }


def get_sweep(arg=None):
    a = parse_config_args(arg, scale=1.0)
    runs = []
    for budget in BUDGETS:
        b = budget * a.scale
        for width in WIDTHS:
            runs.append(_run(f"dense_d{width}_b{budget:g}", width, steps_for(width, b), 0.0,
                             {"kind": "dense", "budget": budget}))
        for width, sparsities in SPARSE.items():
            for s in sparsities:
                runs.append(_run(f"sparse_d{width}_s{s:g}_b{budget:g}", width,
                                 steps_for(width, b), s, {"kind": "sparse", "budget": budget}))
        for width, partner in MATCHED:
            steps = steps_for(partner, b)
            s = matched_sparsity(width, counts(partner).total, steps)
            runs.append(_run(f"matched_d{width}_to_d{partner}_b{budget:g}", width, steps, s,
                             {"kind": "matched", "budget": budget,
                              "match": f"dense_d{partner}_b{budget:g}"}))
    return runs
