"""Replication, round 2: where does N̄ hold at sparsity ~0.8? Size and depth apart, 3 seeds, both
sides' learning rates, on a corpus that is not repeated (and one check that measures repetition).

Runs are built exactly as round 1's (configs/sweeps/replication.py: configs/tiny.py with a shape
override, batch 32 x 64 tokens, 4 heads, AdamW with warm-up 10% and cosine to 10%, lr 0.01; sparse
runs 25%/75% geometric, 20 events; a matched run is pruned so that its exact N̄ equals its dense
partner's size at the partner's steps), but read the GCIDE dictionary (39.95 MB of English text,
the Debian package dict-gcide; docs/data.md) through `text:`, prepared by

    python3 results/replication/round2.py corpus --dest runs/corpus

Parts (`part`; `all` runs them in this order, so that stopping early leaves whole comparisons):
  rep       repetition check: the 2-layer small pair (seed 0) on a quarter-size corpus (4 epochs);
            its <= 1 epoch twin is the same pair's seed 0 in `pairs`
  pairs     the 2 x 2 of matched pairs at 100 tokens per parameter of the dense partner, sparsity
            ~0.8: 2 layers d64 -> d48 and d96 -> d72, 4 layers d32 -> d24 and d64 -> d48; 3 seeds;
            each with a dense run of the sparse run's final size (the nearest width) at the same D
  ladder    the dense ladder of each depth at 100 tokens per parameter (with the partners and the
            final-size runs, the law's dense points: N and D both vary)
  lr        learning rate x0.5 and x2 on both sides of every pair (seed 0; x1 is the pair's seed 0)
  smoke     CI: a dense d24 and a d32 pruned to its N̄, 8 steps each, 2 seeds

    python -m jaxsparse.sweep configs/sweeps/replication2.py --list
    python3 results/replication/round2.py run --parallel 2    # resumes from the committed results

Arguments: part (default all), corpus (the prepared folder, default runs/corpus/gcide; its quarter
is `<corpus>_quarter`), lr (default 1e-2).

Why not d48 -> d36 for the small 4-layer pair (as issue 28 suggests): with 4 heads d36 has an odd
head dimension (9), which rotary embeddings refuse; d32 -> d24 keeps the width ratio (sparsity ~0.8).
Every run sees under one epoch of the full corpus (the largest, d96 -> d72, 20.4M tokens of 37.9M),
so the repetition check is the only run that repeats data.
"""
from jaxsparse.sweep.spec import load_module
from jaxsparse.train import parse_config_args

R1 = load_module("configs/sweeps/replication.py")   # round 1: shapes, runs, schedules, matching
Shape = R1.Shape
BUDGET = 100.0                       # tokens per parameter of the dense partner
SEEDS = (0, 1, 2)
LR_FACTORS = (0.5, 2.0)
PAIRS = {"2L_small": (Shape(64), Shape(48)), "2L_large": (Shape(96), Shape(72)),
         "4L_small": (Shape(32, 4), Shape(24, 4)), "4L_large": (Shape(64, 4), Shape(48, 4))}
PAIR_ORDER = ("2L_small", "4L_small", "2L_large", "4L_large")   # cheapest first
LADDERS = {2: (24, 32, 40), 4: (16, 32, 40)}                     # besides the partners
WIDTHS = tuple(range(8, 129, 8))     # widths a final-size dense run may take (4 heads: even head_dim)
CORPUS_BYTES = 39_952_321            # gcide.dict.dz of dict-gcide 0.48.5+nmu2, uncompressed
VALIDATION = 0.05                    # the data config's validation_fraction (held-out documents)
REPEAT_EPOCHS = 4
PARTS = ("rep", "pairs", "ladder", "lr")


def quarter_bytes() -> int:
    """Bytes of the repetition check's corpus: the small pair's tokens seen REPEAT_EPOCHS times."""
    tokens = R1.steps_for(PAIRS["2L_small"][1], BUDGET) * R1.BATCH * R1.SEQ
    return int(tokens / REPEAT_EPOCHS / (1 - VALIDATION))


def _data(corpus: str, corpus_bytes: int, steps: int) -> tuple[dict, dict]:
    """(the override that reads `corpus`, its tags: corpus name and nominal epochs seen)."""
    epochs = steps * R1.BATCH * R1.SEQ / (corpus_bytes * (1 - VALIDATION))  # byte tokenizer
    return ({"data.dataset": f"text:{corpus}"},
            {"corpus": corpus.rstrip("/").rsplit("/", 1)[-1], "epochs": round(epochs, 3)})


def final_width(sparse: Shape, partner: Shape, steps: int) -> int:
    """The width (same depth) whose dense size is nearest the matched sparse run's final size."""
    c = R1.counts(sparse)
    n_final = c.total - R1.matched_sparsity(sparse, partner, steps) * c.prunable
    return min(WIDTHS, key=lambda w: abs(R1.counts(Shape(w, sparse.layers)).total - n_final))


def dense(shape, steps, a, *, name, seed=0, lr_factor=1.0, kind="dense", corpus=None, tags=None):
    over, data_tags = _data(corpus or a.corpus, CORPUS_BYTES, steps)
    return R1.run(name, shape, steps, seed=seed, lr=a.lr * lr_factor, extra=over,
                  tags={"kind": kind, "budget": BUDGET, "variant": "base", **data_tags, **(tags or {})})


def pair(key, a, seed, *, lr_factor=1.0, variant="base", corpus=None, corpus_bytes=CORPUS_BYTES):
    """The pair `key` at `seed`: dense partner and the matched sparse run (same D, N̄ = N)."""
    sparse, partner = PAIRS[key]
    steps = R1.steps_for(partner, BUDGET)
    suffix = "" if variant == "base" else f"_{variant}"
    over, data_tags = _data(corpus or a.corpus, corpus_bytes, steps)
    tags = {"budget": BUDGET, "pair": key, "variant": variant, **data_tags}
    lr = a.lr * lr_factor
    d = R1.run(f"dense_{partner.tag}_{key}{suffix}", partner, steps, seed=seed, lr=lr, extra=over,
               tags={"kind": "dense", **tags})
    m = R1.run(f"matched_{key}{suffix}", sparse, steps, R1.matched_sparsity(sparse, partner, steps),
               seed=seed, lr=lr, extra=over, tags={"kind": "matched", "match": d["name"], **tags})
    return [d, m]


def rep(a):
    """The small 2-layer pair, seed 0, on the quarter corpus: REPEAT_EPOCHS epochs."""
    return pair("2L_small", a, 0, variant="4ep", corpus=f"{a.corpus.rstrip('/')}_quarter",
                corpus_bytes=quarter_bytes())


def pairs(a):
    """Every pair, 3 seeds, each with a dense run of its sparse run's final size at the same D."""
    runs = []
    for key in PAIR_ORDER:
        sparse, partner = PAIRS[key]
        steps = R1.steps_for(partner, BUDGET)
        width = final_width(sparse, partner, steps)
        for seed in SEEDS:
            runs += pair(key, a, seed)
            runs.append(dense(Shape(width, sparse.layers), steps, a, seed=seed, kind="final_size",
                              name=f"dense_{Shape(width, sparse.layers).tag}_final_{key}",
                              tags={"pair": key}))
    return runs


def ladder(a):
    """The dense ladder of each depth at BUDGET tokens per (own) parameter, seed 0."""
    return [dense(Shape(w, layers), R1.steps_for(Shape(w, layers), BUDGET), a,
                  name=f"dense_{Shape(w, layers).tag}_b{BUDGET:g}")
            for layers, widths in LADDERS.items() for w in widths]


def lr_check(a):
    """Both sides of every pair at lr x0.5 and x2, seed 0."""
    return [r for key in PAIR_ORDER for f in LR_FACTORS
            for r in pair(key, a, 0, lr_factor=f, variant=f"lrx{f:g}")]


def smoke(a):
    """CI: a dense d24 and a d32 pruned to its N̄, 8 steps each, 2 seeds, on `corpus`."""
    runs, steps, quick = [], 8, {"eval.batches": 2, "data.dataset": f"text:{a.corpus}"}
    for seed in (0, 1):
        small = R1.run("dense_d24", Shape(24), steps, seed=seed, lr=a.lr, extra=quick,
                       tags={"kind": "dense", "budget": 0.0, "pair": "smoke", "variant": "base"})
        runs += [small, R1.run("matched_smoke", Shape(32), steps,
                               R1.matched_sparsity(Shape(32), Shape(24), steps), seed=seed, lr=a.lr,
                               extra=quick, tags={"kind": "matched", "budget": 0.0, "variant": "base",
                                                  "match": small["name"], "pair": "smoke"})]
    return runs


BUILDERS = {"rep": rep, "pairs": pairs, "ladder": ladder, "lr": lr_check}


def in_fit(r: dict) -> bool:
    """Whether a run enters the law's fit: the sweep's learning rate, the full corpus (not the
    repetition check); both depths (the report splits them by the `layers` tag)."""
    t = r["tags"]
    return t["kind"] in ("dense", "matched", "final_size") and t.get("variant", "base") == "base"


def get_sweep(arg=None):
    a = parse_config_args(arg, part="all", corpus="runs/corpus/gcide", lr=R1.LEARNING_RATE)
    if a.part == "smoke":
        runs = smoke(a)
    elif a.part in BUILDERS:
        runs = BUILDERS[a.part](a)
    elif a.part in ("all", "fit"):
        runs = [r for part in PARTS for r in BUILDERS[part](a)]
    else:
        raise ValueError(f"replication2.py: part={a.part!r} is unknown; allowed: all, fit, smoke, "
                         f"{', '.join(BUILDERS)}")
    for r in runs:
        r["tags"]["fit"] = int(in_fit(r))
    return [r for r in runs if r["tags"]["fit"]] if a.part == "fit" else runs
