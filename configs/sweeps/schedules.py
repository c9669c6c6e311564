"""The paper's 80 schedule runs (Jin et al., ICLR 2025, section 3), all on the 162M model.

10 (start, end) pairs: dense fraction a in {0, 0.25, 0.5, 0.75} x pruning fraction p in
{0.25, 0.5, 0.75, 1.0} with a + p <= 1 (start = a, end = a + p, fractions of training), x final
sparsity {0.2, 0.4, 0.6, 0.8} x token budget {10x, 20x} Chinchilla (200, 400 tokens/param).
Geometric schedule. Each run is configs/paper.py with arguments; no overrides.

    python -m jaxsparse.sweep configs/sweeps/schedules.py --list
    python -m jaxsparse.sweep configs/sweeps/schedules.py:batch=512,interval=100 --run tpu ...

Arguments (optional, passed to every run's configs/paper.py): batch (sequences of 2048 tokens,
default 256), lr (default 3e-4), interval (steps between pruning events, default 100).
"""
from jaxsparse.train import parse_config_args

DENSE_FRACTIONS = (0.0, 0.25, 0.5, 0.75)
PRUNING_FRACTIONS = (0.25, 0.5, 0.75, 1.0)
SPARSITIES = (0.2, 0.4, 0.6, 0.8)
BUDGETS = ("10x", "20x")


def schedule_pairs() -> list[tuple[float, float]]:
    """The 10 (start, end) pairs, as fractions of training."""
    return [(a, a + p) for a in DENSE_FRACTIONS for p in PRUNING_FRACTIONS if a + p <= 1.0]


def get_sweep(arg=None):
    a = parse_config_args(arg, batch=256, lr=3e-4, interval=100)
    runs = []
    for start, end in schedule_pairs():
        for sparsity in SPARSITIES:
            for budget in BUDGETS:
                name = f"162m_start{start:g}_end{end:g}_s{sparsity:g}_{budget}"
                runs.append({
                    "name": name,
                    "config": (f"configs/paper.py:size=162m,sparsity={sparsity},schedule=geometric,"
                               f"start={start},end={end},interval={a.interval},budget={budget},"
                               f"batch={a.batch},lr={a.lr}"),
                    "tags": {"size": "162m", "sparsity": sparsity, "start": start, "end": end,
                             "budget": budget},
                })
    return runs
