"""The training config: every key with its default, and its validation.

`base_config()` is the single source of truth for the keys; config files under configs/ start
from it and change values (never add keys). `validate(config)` checks every value before any
compute starts and raises a ValueError that names the field, the value and what is allowed.

Units: `train.steps` are optimizer steps (one global batch each); `train.budget` is tokens per
(total, dense) parameter, e.g. 200 for "10x Chinchilla"; `pruning.start`/`pruning.end` are
fractions of `train.steps`; `pruning.interval`, `*.every_steps` and `train.warmup_steps` are steps.
"""
from __future__ import annotations

import math
from typing import Any

import ml_collections

from jaxsparse import data as data_lib
from jaxsparse.data import config as data_config
from jaxsparse import models
from jaxsparse.pruning import KINDS, SCOPES, Schedule


def base_config() -> ml_collections.ConfigDict:
    """All training keys with their defaults (a tiny CPU run on the embedded corpus)."""
    c = ml_collections.ConfigDict()
    c.seed = 0

    c.model = ml_collections.ConfigDict()
    c.model.size = "demo"            # one of jaxsparse.models.SIZES; vocab comes from the tokenizer
    c.model.vocab_size = 0           # 0 = the tokenizer's; else fixed (>= the tokenizer's)
    c.model.vocab_multiple = 128     # pad the vocabulary up to a multiple (shards over tensor)
    c.model.d_model = 0              # 0 = the size's; else a width override (small sweeps)
    c.model.n_layers = 0             # 0 = the size's
    c.model.n_heads = 0              # 0 = the size's
    c.model.dtype = ""               # "" = the size's default compute dtype, else float32|bfloat16
    c.model.scan_layers = False
    c.model.remat = False
    # --- tpu (issue 10): memory levers; defaults are today's reference path ---
    c.model.remat_policy = "full"    # with remat: full | save_dots | none (models.REMAT_POLICIES)
    c.model.attention = "reference"  # reference | dot_product | flash (Pallas TPU kernel)
    c.model.loss_chunk = 0           # sequence positions per cross-entropy chunk; 0 = whole logits
    # --- end tpu ---

    c.data = data_lib.default_config()

    c.train = ml_collections.ConfigDict()
    c.train.steps = 0                # optimizer steps; 0 = derive from train.budget
    c.train.budget = 0.0             # tokens per total parameter (200 = 10x Chinchilla); 0 = unset
    c.train.batch_size = 16          # global batch (sequences per step)
    c.train.seq_len = 256            # tokens per sequence
    # micro-batches per step (batch_size must divide evenly); "auto" (tpu, issue 10): the fewest
    # whose step fits the devices' memory, found by compiling (train/compile_target.py)
    c.train.grad_accum = ml_collections.FieldReference(1, field_type=object)
    c.train.learning_rate = 3e-3     # peak learning rate
    c.train.warmup_steps = -1        # -1 = 10% of train.steps (at most 1000)
    c.train.min_lr_ratio = 0.1       # cosine decays to this fraction of the peak
    c.train.b1 = 0.9
    c.train.b2 = 0.95
    c.train.eps = 1e-8
    c.train.weight_decay = 0.1
    c.train.grad_clip = 1.0          # global-norm clipping; 0 = off
    c.train.log_every_steps = 10

    c.pruning = ml_collections.ConfigDict()
    c.pruning.schedule = "geometric"  # jaxsparse.pruning.KINDS
    c.pruning.final_sparsity = 0.8
    c.pruning.start = 0.25           # fraction of train.steps
    c.pruning.end = 0.75             # fraction of train.steps
    c.pruning.interval = 10          # steps between pruning events
    c.pruning.scope = "global"       # global | layerwise
    c.pruning.structure = ""         # "" (unstructured) or "n:m" such as "2:4"
    c.pruning.include = ""           # regex on parameter paths; "" = default rule
    c.pruning.exclude = ""

    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.every_steps = 100
    c.checkpoint.keep = 3            # newest checkpoints kept
    c.checkpoint.async_save = True

    c.eval = ml_collections.ConfigDict()
    c.eval.every_steps = 100         # 0 = only at the end
    c.eval.batches = 4               # global batches of the fixed validation set

    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = -1                 # -1 = all devices not used by fsdp x tensor
    c.mesh.fsdp = 1
    c.mesh.tensor = 1

    c.metrics = ml_collections.ConfigDict()
    c.metrics.peak_tflops_per_device = 0.0  # for MFU; 0 = not reported
    c.metrics.tensorboard = True
    c.metrics.plots = True
    return c


def _fail(field: str, value: Any, allowed: str) -> None:
    raise ValueError(f"config.{field}={value!r} is not allowed: {allowed}")


def _int(c: ml_collections.ConfigDict, field: str, minimum: int) -> int:
    value = _get(c, field)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        _fail(field, value, f"expected an integer >= {minimum}")
    return value


def _num(c: ml_collections.ConfigDict, field: str, lo: float, hi: float,
         lo_open: bool = False, hi_open: bool = False) -> float:
    value = _get(c, field)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
    if not ok:
        _fail(field, value, f"expected a number in {'(' if lo_open else '['}{lo}, {hi}"
                            f"{')' if hi_open else ']'}")
    return float(value)


def _get(c: ml_collections.ConfigDict, field: str) -> Any:
    node = c
    for part in field.split("."):
        node = node[part]
    return node


def check_keys(config: ml_collections.ConfigDict) -> None:
    """Every key of `config` must exist in `base_config()` (catches typos in config files)."""
    def walk(have, want, prefix):
        for key in have.keys():
            name = f"{prefix}{key}"
            if key not in want:
                raise ValueError(f"config.{name} is not a known key; known keys under "
                                 f"config.{prefix or ''}: {', '.join(sorted(want.keys()))}")
            if isinstance(have[key], ml_collections.ConfigDict) and key != "data":
                walk(have[key], want[key], name + ".")
    walk(config, base_config(), "")


def model_config(config: ml_collections.ConfigDict, vocab_size: int) -> models.ModelConfig:
    """The ModelConfig of a training config, with the tokenizer's vocabulary padded up to a
    multiple of model.vocab_multiple (the extra ids are never produced by the tokenizer)."""
    multiple = config.model.vocab_multiple
    padded = -(-vocab_size // multiple) * multiple
    overrides: dict[str, Any] = dict(vocab_size=padded, max_seq_len=config.train.seq_len,
                                     scan_layers=config.model.scan_layers,
                                     remat=config.model.remat,
                                     remat_policy=config.model.remat_policy,  # tpu
                                     attention=config.model.attention,  # tpu
                                     loss_chunk=config.model.loss_chunk)  # tpu
    if config.model.dtype:
        overrides["dtype"] = config.model.dtype
    for key in ("d_model", "n_layers", "n_heads"):
        if config.model[key]:
            overrides[key] = config.model[key]
    try:
        return models.get_config(config.model.size, **overrides)
    except ValueError as err:
        raise ValueError(f"config.model: {err}") from err


def schedule(config: ml_collections.ConfigDict) -> Schedule:
    """The pruning Schedule of a training config (the one place it is built)."""
    p = config.pruning
    if p.schedule not in KINDS:
        _fail("pruning.schedule", p.schedule, f"one of {', '.join(KINDS)}")
    try:
        return Schedule(p.schedule, float(p.final_sparsity), float(p.start), float(p.end),
                        p.interval)
    except ValueError as err:
        raise ValueError(f"config.pruning: {err}") from err


def total_steps(config: ml_collections.ConfigDict, n_total: int) -> int:
    """train.steps, or ceil(budget * n_total / tokens per step) when steps is 0."""
    if config.train.steps > 0:
        return config.train.steps
    tokens_per_step = config.train.batch_size * config.train.seq_len
    return max(1, math.ceil(config.train.budget * n_total / tokens_per_step))


def validate(config: ml_collections.ConfigDict) -> None:
    """Check every value (not the mesh against devices, nor vocabulary: see the trainer)."""
    check_keys(config)
    _int(config, "seed", 0)
    if config.model.size not in models.SIZES:
        _fail("model.size", config.model.size, f"one of {', '.join(models.SIZES)}")
    for key in ("vocab_size", "d_model", "n_layers", "n_heads"):
        _int(config, f"model.{key}", 0)
    _int(config, "model.vocab_multiple", 1)
    for key, allowed in (("remat_policy", models.config.REMAT_POLICIES),  # tpu
                         ("attention", models.config.ATTENTION_IMPLS)):
        if config.model[key] not in allowed:
            _fail(f"model.{key}", config.model[key], f"one of {', '.join(allowed)}")
    _int(config, "model.loss_chunk", 0)  # tpu
    if config.model.loss_chunk and config.train.seq_len % config.model.loss_chunk:  # tpu
        _fail("model.loss_chunk", config.model.loss_chunk, f"0 or a divisor of train.seq_len={config.train.seq_len}")
    if config.model.dtype not in ("", "float32", "bfloat16"):
        _fail("model.dtype", config.model.dtype, "'', 'float32' or 'bfloat16'")
    data_config.validate(config.data)
    t = config.train
    _int(config, "train.steps", 0)
    _num(config, "train.budget", 0.0, 1e7)
    if t.steps == 0 and t.budget <= 0:
        _fail("train.steps", t.steps, "an integer >= 1, or 0 together with train.budget > 0")
    _int(config, "train.batch_size", 1)
    _int(config, "train.seq_len", 1)
    if t.grad_accum != "auto":  # tpu: "auto" is resolved by compiling (train/compile_target.py)
        _int(config, "train.grad_accum", 1)
    if t.grad_accum != "auto" and t.batch_size % t.grad_accum:
        _fail("train.grad_accum", t.grad_accum,
              f"a divisor of train.batch_size={t.batch_size}")
    _num(config, "train.learning_rate", 0.0, 1e30, lo_open=True)
    _int(config, "train.warmup_steps", -1)
    _num(config, "train.min_lr_ratio", 0.0, 1.0)
    _num(config, "train.b1", 0.0, 1.0, hi_open=True)
    _num(config, "train.b2", 0.0, 1.0, hi_open=True)
    _num(config, "train.eps", 0.0, 1.0, lo_open=True)
    _num(config, "train.weight_decay", 0.0, 10.0)
    _num(config, "train.grad_clip", 0.0, 1e9)
    _int(config, "train.log_every_steps", 1)
    if config.pruning.scope not in SCOPES:
        _fail("pruning.scope", config.pruning.scope, f"one of {', '.join(SCOPES)}")
    schedule(config)
    _int(config, "checkpoint.every_steps", 0)
    _int(config, "checkpoint.keep", 1)
    _int(config, "eval.every_steps", 0)
    _int(config, "eval.batches", 1)
    for axis in ("data", "fsdp", "tensor"):
        value = config.mesh[axis]
        if isinstance(value, bool) or not isinstance(value, int) or not (value >= 1 or value == -1):
            _fail(f"mesh.{axis}", value, "an integer >= 1, or -1 for 'the remaining devices'")
    _num(config, "metrics.peak_tflops_per_device", 0.0, 1e6)
