"""The paper's 30 scaling-law runs (Jin et al., ICLR 2025, section 2), all with the 25%/75% geometric schedule.

Sizes 58M, 162M, 468M x final sparsity {0, 0.2, 0.4, 0.6, 0.8} x token budget {10x, 20x}
Chinchilla (200, 400 tokens per total parameter). Sparsity 0 is the dense run. Each run is
configs/paper.py with arguments; no overrides. Fit: `python -m jaxsparse.sweep THIS --collect`
then `python -m jaxsparse.scaling fit RESULTS.csv`.

Arguments (optional, passed to every run's configs/paper.py): batch (sequences of 2048 tokens,
default 256), lr (default 3e-4), interval (steps between pruning events, default 100).
"""
from jaxsparse.train import parse_config_args

SIZES = ("58m", "162m", "468m")
SPARSITIES = (0.0, 0.2, 0.4, 0.6, 0.8)
BUDGETS = ("10x", "20x")


def get_sweep(arg=None):
    a = parse_config_args(arg, batch=256, lr=3e-4, interval=100)
    runs = []
    for size in SIZES:
        for sparsity in SPARSITIES:
            for budget in BUDGETS:
                runs.append({
                    "name": f"{size}_s{sparsity:g}_{budget}",
                    "config": (f"configs/paper.py:size={size},sparsity={sparsity},"
                               f"schedule=geometric,start=0.25,end=0.75,interval={a.interval},"
                               f"budget={budget},batch={a.batch},lr={a.lr}"),
                    "tags": {"size": size, "sparsity": sparsity, "budget": budget},
                })
    return runs
