"""The paper's replication design (Jin et al., ICLR 2025, sections 2 and 3) scaled down to one 2-core CPU.

Every run is configs/tiny.py (embedded Shakespeare, byte tokenizer, vocabulary 259 unpadded) with a
shape override (d_model, n_layers; 4 heads), batch 32 x 64 tokens, AdamW as the paper's section 5
(warm-up 10%, cosine to 10% of the peak), steps from a token budget in tokens per INITIAL (total)
parameter; a matched pair's budget is per parameter of its dense partner (the pair's D, which gives
the sparse run >= 50 tokens per initial parameter). Sparse runs: 25%/75% geometric, 20 events.
Matched runs: a bigger model pruned so that its exact N̄ (jaxsparse.pruning.average_param_count)
equals the dense partner's size, at the partner's step count (same D, so the same training FLOPs).

Parts (the argument `part`; `all` runs them in this order, the core verdict first):
  core      dense ladder at 200 tok/param; the matched pairs and their dense partners, 2 seeds
  sparse    final sparsity {0.2, 0.4, 0.6, 0.8} on 2 sizes at 50 tok/param
  budget    the dense ladder at 50 tok/param (D varies in the fit)
  lr        the dense ladder at 50 tok/param with lr / 3 and lr x 3 (the learning-rate check)
  invest    the investigation: one change at a time to the first matched pair, 2 seeds each
            (scope, recovery length, cosine floor, budget, width, depth)
  schedules the 10 (start, end) pairs of the paper's grid at one size and sparsity, 200 tok/param
  fit       the runs that enter the law's fit (tag fit=1): the paper's recipe, the 2-layer family
  scope     the investigation's layerwise-scope pairs alone (a subset of invest, to run early)
  smoke     CI: 4 runs of 8 steps (seconds each), a matched pair with 2 seeds

    python -m jaxsparse.sweep configs/sweeps/replication.py:part=core --list
    nice -n 19 python -m jaxsparse.sweep configs/sweeps/replication.py --run local \
        --root /work/runs/replication      # part=all; rerun to resume, finished runs are skipped

Other arguments: scale (multiplies every budget; default 1.0), lr (default 1e-2).

Throughput (measured on the shared 2-core machine, 2026-12-06; bench/bench_replication_shapes.py:
the trainer's sparse step, shapes interleaved in one process, medians of 5 x 20 steps, load 2.5):
  2 layers d32 66.4k tokens/s (30.8 ms/step), d48 49.9k, d64 37.1k, d96 24.0k; 4 layers d48 26.7k,
  d64 19.5k. Batch 64 x 64 or 32 x 128 instead of 32 x 64 gave no more tokens/s (d32: 43.2k, 50.1k;
  d64: 28.4k, 32.9k; load 2.9-3.2, separate runs).
Waste removed: a trainer process costs 7.7 s before and after its steps (imports, data, init,
compilation, final eval, checkpoint; one 1-step run, load 2.8), paid once per run; evaluation only at
the end (64 batches); checkpoints every 1000 steps, 1 kept (not every 100); console/metrics every 500
steps (plus the 20 event steps); no TensorBoard or plots; the vocabulary unpadded (259, not 384).
--parallel 2 against 1 (4 runs of d48, 600 steps, runner wall time, load 4-5): 198 s against 232 s,
so the sweep runs 2 at a time, each pinned to one core.
Expected wall time: 4.0 hours at those tokens/s plus start-up; on the shared machine at nice 19
(load 8-10 from other work) runs went 3-8x slower.
"""
import dataclasses

from jaxsparse.models import ParamCounts
from jaxsparse.pruning import Schedule
from jaxsparse.sweep import matching
from jaxsparse.train import base_config, parse_config_args

BATCH, SEQ, HEADS = 32, 64, 4
LEARNING_RATE = 1e-2
START, END, EVENTS = 0.25, 0.75, 20     # pruning window (fractions of training), events in it
SEEDS = (0, 1)
PARTS = ("core", "sparse", "budget", "lr", "invest", "schedules")


@dataclasses.dataclass(frozen=True)
class Shape:
    """A model shape: d_model and layers (4 heads)."""

    width: int
    layers: int = 2

    @property
    def tag(self) -> str:
        return f"d{self.width}" if self.layers == 2 else f"L{self.layers}d{self.width}"


LADDER = tuple(Shape(w) for w in (24, 32, 40, 48, 64))       # the dense ladder
SPARSE_SHAPES = (Shape(48), Shape(64))                         # the sparse grid's sizes
SPARSITIES = (0.2, 0.4, 0.6, 0.8)
PAIRS = ((Shape(32), Shape(24)), (Shape(40), Shape(32)), (Shape(64), Shape(48)))  # (sparse, dense partner)
DEEP_PAIR = (Shape(64, 4), Shape(48, 4))                       # the investigation's deeper pair
SCHEDULE_SHAPE, SCHEDULE_SPARSITY = Shape(32), 0.8
BUDGET, LOW_BUDGET, HIGH_BUDGET = 200.0, 50.0, 400.0   # tokens per initial parameter
PAIR_LOW_BUDGET = 100.0  # per partner parameter: the sparse run then gets >= 50 per initial parameter


def shape_overrides(shape: Shape) -> dict:
    """The trainer overrides that make configs/tiny.py this shape at the sweep's batch."""
    return {"model.d_model": shape.width, "model.n_layers": shape.layers, "model.n_heads": HEADS,
            "model.vocab_multiple": 1, "train.batch_size": BATCH, "train.seq_len": SEQ}


def _config(shape: Shape):
    c = base_config()
    c.model.size = "test"
    for key, value in shape_overrides(shape).items():
        section, name = key.split(".")
        c[section][name] = value
    return c


def counts(shape: Shape) -> ParamCounts:
    """Parameter counts of `shape` as the trainer builds it."""
    return matching.config_param_counts(_config(shape))


def steps_for(shape: Shape, budget: float) -> int:
    """Optimizer steps of `budget` tokens per total parameter of `shape`."""
    return matching.steps_for(_config(shape), budget, counts(shape).total)


def schedule(sparsity: float, steps: int, start: float = START, end: float = END) -> Schedule:
    """The geometric schedule of a `steps`-step run: EVENTS events over [start, end]."""
    interval = max(1, round((end - start) * steps / EVENTS))
    return Schedule("geometric", sparsity, start, end, interval)


def matched_sparsity(sparse: Shape, dense: Shape, steps: int, start=START, end=END) -> float:
    """The final sparsity at which `sparse`'s exact N̄ over `steps` steps is `dense`'s size."""
    c = counts(sparse)
    return matching.matched_sparsity(lambda s: matching.n_avg(c, schedule(s, steps, start, end), steps),
                                     counts(dense).total)


def run(name, shape, steps, sparsity=0.0, *, seed=0, lr=LEARNING_RATE, start=START, end=END,
        extra=None, tags=None, checkpoint_every=1000):
    """One run: configs/tiny.py with `shape`, `steps`, a 25/75 geometric schedule to `sparsity`
    (0: dense), and `extra` overrides; `tags` go to the CSV (kind, width, layers, sparsity, seed)."""
    sched = schedule(sparsity, steps, start, end)
    overrides = {
        **shape_overrides(shape), "seed": seed,
        "train.learning_rate": lr, "train.warmup_steps": -1, "train.log_every_steps": 500,
        "pruning.schedule": "geometric" if sparsity else "dense",
        "pruning.final_sparsity": float(sparsity), "pruning.start": start, "pruning.end": end,
        "pruning.interval": sched.interval,
        "checkpoint.every_steps": checkpoint_every, "checkpoint.keep": 1,
        "eval.every_steps": 0, "eval.batches": 64,
        "metrics.tensorboard": False, "metrics.plots": False, **(extra or {})}
    return {"name": f"{name}_s{seed}" if seed else name, "config": f"configs/tiny.py:steps={steps}",
            "overrides": overrides,
            "tags": {"width": shape.width, "layers": shape.layers, "sparsity": float(sparsity),
                     "lr": lr, **(tags or {})}}




def _dense(shape, budget, a, *, seed=0, lr_factor=1.0, kind="dense", extra=None, suffix=""):
    lr = a.lr * lr_factor
    name = f"dense_{shape.tag}_b{budget:g}" + (f"_lr{lr:.2g}" if lr_factor != 1 else "") + suffix
    return run(name, shape, steps_for(shape, budget * a.scale), seed=seed, lr=lr, extra=extra,
               tags={"kind": kind, "budget": budget})


def _pair(sparse, dense, budget, a, seed, *, variant="base", end=END, extra=None, both=False):
    """A matched pair: `sparse` pruned so that its exact N̄ equals `dense`'s size at `dense`'s D,
    and the dense run. `extra` overrides change the sparse run, and the dense one too when `both`
    (a variant that changes only the sparse run shares the base pair's dense run)."""
    suffix = "" if variant == "base" else f"_{variant}"
    steps = steps_for(dense, budget * a.scale)
    partner = _dense(dense, budget, a, seed=seed, extra=extra if both else None,
                     suffix=suffix if both else "")
    pair = f"{sparse.tag}_to_{dense.tag}_b{budget:g}"
    if both:
        partner["tags"]["variant"] = variant
    matched = run(f"matched_{pair}{suffix}", sparse, steps, matched_sparsity(sparse, dense, steps, START, end),
                  seed=seed, lr=a.lr, end=end, extra=extra,
                  tags={"kind": "matched", "budget": budget, "variant": variant,
                        "match": partner["name"], "pair": pair})
    return [partner, matched]


def core(a):
    """The verdict: the dense ladder at 200 tok/param, the matched pairs and partners, 2 seeds; the
    ladder's largest (and longest) run last, so that the pairs finish first."""
    runs = [_dense(s, BUDGET, a) for s in LADDER[:-1]]
    for seed in SEEDS:
        for sparse, dense in PAIRS:
            runs += _pair(sparse, dense, BUDGET, a, seed)
    return runs + [_dense(LADDER[-1], BUDGET, a)]


def sparse_grid(a):
    """Final sparsity {0.2, 0.4, 0.6, 0.8} on SPARSE_SHAPES at 50 tok/param."""
    return [run(f"sparse_{shape.tag}_s{s:g}_b{LOW_BUDGET:g}", shape, steps_for(shape, LOW_BUDGET * a.scale),
                s, lr=a.lr, tags={"kind": "sparse", "budget": LOW_BUDGET})
            for shape in SPARSE_SHAPES for s in SPARSITIES]


def budget_part(a):
    """The dense ladder at 50 tok/param: D varies in the fit."""
    return [_dense(s, LOW_BUDGET, a) for s in LADDER]


def lr_check(a):
    """The dense ladder at 50 tok/param with the learning rate / 3 and x 3."""
    return [_dense(s, LOW_BUDGET, a, lr_factor=f, kind="lr_check") for f in (1 / 3, 3.0) for s in LADDER]


def investigation(a):
    """One change at a time to the first matched pair at 200 tok/param, 2 seeds each: the budget
    (100, 400), width (the last pair at 100) and depth (4 layers at 100), the pruning window ending
    at 50% (longer recovery), layerwise scope, and a cosine floor of 50% (both runs of the pair)."""
    sparse, dense = PAIRS[0]
    floor = {"train.min_lr_ratio": 0.5}
    runs = []
    for seed in SEEDS:
        runs += _pair(sparse, dense, BUDGET, a, seed, variant="layerwise",
                      extra={"pruning.scope": "layerwise"})
        runs += _pair(sparse, dense, BUDGET, a, seed, variant="end0.5", end=0.5)
        runs += _pair(sparse, dense, BUDGET, a, seed, variant="floor0.5", extra=floor, both=True)
        runs += _pair(sparse, dense, PAIR_LOW_BUDGET, a, seed)
        runs += _pair(sparse, dense, HIGH_BUDGET, a, seed)
        runs += _pair(*PAIRS[-1], PAIR_LOW_BUDGET, a, seed)
        runs += _pair(*DEEP_PAIR, PAIR_LOW_BUDGET, a, seed, variant="deep")
    return runs


def scope_check(a):
    """The investigation's layerwise-scope pairs alone (2 seeds): a part to run early by hand."""
    return [r for r in investigation(a) if r["tags"].get("variant") == "layerwise"
            or r["name"] in {x["tags"].get("match") for x in investigation(a)
                             if x["tags"].get("variant") == "layerwise"}]


def schedule_pairs():
    """The paper's 10 (start, end) pairs (section 3): dense fraction {0, .25, .5, .75} x pruning
    fraction {.25, .5, .75, 1} with sum <= 1."""
    return [(d, d + p) for d in (0.0, 0.25, 0.5, 0.75) for p in (0.25, 0.5, 0.75, 1.0) if d + p <= 1.0]


def schedules(a):
    """The 10 (start, end) pairs on SCHEDULE_SHAPE at SCHEDULE_SPARSITY, 200 tok/param."""
    shape, steps = SCHEDULE_SHAPE, steps_for(SCHEDULE_SHAPE, BUDGET * a.scale)
    return [run(f"schedule_{shape.tag}_s{SCHEDULE_SPARSITY:g}_start{st:g}_end{en:g}", shape, steps,
                SCHEDULE_SPARSITY, lr=a.lr, start=st, end=en,
                tags={"kind": "schedule", "budget": BUDGET, "start": st, "end": en})
            for st, en in schedule_pairs()]


def smoke(a):
    """CI: a dense d24 run and a d32 pruned to its N̄, 8 steps each (seconds), 2 seeds."""
    runs, steps, quick = [], 8, {"eval.batches": 2}
    for seed in SEEDS:
        small = run("dense_d24", Shape(24), steps, seed=seed, lr=a.lr, extra=quick,
                    tags={"kind": "dense", "budget": 0.0})
        runs += [small, run("matched_d32_to_d24", Shape(32), steps,
                            matched_sparsity(Shape(32), Shape(24), steps), seed=seed, lr=a.lr, extra=quick,
                            tags={"kind": "matched", "budget": 0.0, "variant": "base",
                                  "match": small["name"], "pair": "d32_to_d24"})]
    return runs


BUILDERS = {"core": core, "sparse": sparse_grid, "budget": budget_part, "lr": lr_check,
            "invest": investigation, "schedules": schedules, "scope": scope_check}


def in_fit(r: dict, lr: float) -> bool:
    """Whether a run enters the law's fit: the paper's recipe (25/75 geometric, global scope, the
    cosine floor of section 5), the sweep's learning rate and the 2-layer family."""
    t = r["tags"]
    return (t["kind"] in ("dense", "sparse", "matched") and t.get("variant", "base") == "base"
            and t["layers"] == 2 and t["lr"] == lr)


def _tagged(runs: list, part: str, lr: float) -> list:
    for r in runs:
        r["tags"].update(part=part, fit=int(in_fit(r, lr)))
    return runs


def all_runs(a) -> list:
    """Every part's runs in PARTS order, each once, tagged with the first part that has it and
    with fit (1: the run enters the law's fit)."""
    runs, seen = [], set()
    for part in PARTS:
        for r in _tagged(BUILDERS[part](a), part, a.lr):
            if r["name"] not in seen:
                seen.add(r["name"])
                runs.append(r)
    return runs


def get_sweep(arg=None):
    a = parse_config_args(arg, part="all", scale=1.0, lr=LEARNING_RATE)
    if a.part == "smoke":
        return _tagged(smoke(a), "smoke", a.lr)
    if a.part not in (*BUILDERS, "all", "fit"):
        raise ValueError(f"replication.py: part={a.part!r} is unknown; allowed: all, fit, smoke, "
                         f"{', '.join(BUILDERS)}")
    runs = all_runs(a)
    if a.part == "fit":
        return [r for r in runs if r["tags"]["fit"]]
    if a.part != "all":
        names = {r["name"] for r in BUILDERS[a.part](a)}
        runs = [r for r in runs if r["name"] in names]
    return runs
