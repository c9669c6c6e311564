"""The training config: every key with its default and one-line doc, and its validation.

`KEYS` below is the single source of truth for the keys, their defaults and their docs
(`--print_config` prints them); `base_config()` builds the ConfigDict from it. Config files under
configs/ start from `base_config()` and change values (never add keys). `validate(config)`
checks every value before any compute starts and raises a `ConfigError` that names the field,
the value and what is allowed (unknown keys get the nearest known key suggested).

Units: `train.steps` are optimizer steps (one global batch each); `train.budget` is tokens per
(total, dense) parameter, e.g. 200 for "10x Chinchilla"; `pruning.start`/`pruning.end` are
fractions of `train.steps`; `pruning.interval`, `*.every_steps` and `train.warmup_steps` are steps.
"""
from __future__ import annotations

import importlib
import math
from typing import Any, NoReturn

import ml_collections

from jaxsparse import data as data_lib
from jaxsparse import models
from jaxsparse.data import data_config
from jaxsparse.config_keys import check_tree
from jaxsparse.errors import ConfigError
from jaxsparse.pruning.arguments import SCOPES
from jaxsparse.pruning.schedule import KINDS
from jaxsparse.pruning.scores import score_names
from jaxsparse.train.workdir import layout

# section -> ((key, default, one-line doc), ...). A default of (None, type) means "None = the
# model size's value", overridable with a value of that type.
KEYS: dict[str, tuple[tuple[str, Any, str], ...]] = {
    "": (("seed", 0, "seed of parameter init and the data order"),
         ("imports", "", "comma-separated Python modules imported before the config is checked and when its "
          "checkpoints are read: they register model families and data sources (docs/models.md)")),
    "model": (
        ("family", models.DEFAULT_FAMILY, "model family registered with jaxsparse.models.register"),
        ("size", "demo", f"named size: {', '.join(models.SIZES)}"),
        ("vocab_size", 0, "0 = the tokenizer's; else fixed (>= the tokenizer's)"),
        ("vocab_multiple", 128, "pad the vocabulary up to a multiple (shards over tensor)"),
        ("d_model", 0, "0 = the size's; else a width override (small sweeps)"),
        ("n_layers", 0, "0 = the size's"),
        ("n_heads", 0, "0 = the size's"),
        ("dtype", "", "'' = the size's compute dtype, else float32 | bfloat16"),
        ("scan_layers", (None, bool), "None = the size's; scan the blocks with nn.scan"),
        ("remat", (None, bool), "None = the size's; rematerialise each block in the backward pass"),
        ("init_from", "", "'' = random init; 'hf:/path' = a Hugging Face LLaMA folder of matching shapes"),
        ("remat_policy", "full", "with remat: full | save_dots | none (what the backward pass keeps)"),
        ("attention", "reference", "reference | dot_product | flash (the Pallas TPU kernel on TPU)"),
        ("loss_chunk", 0, "sequence positions per cross-entropy chunk; 0 = the whole [B, S, V] logits"),
    ),
    "train": (
        ("steps", 0, "optimizer steps; 0 = derive from train.budget"),
        ("budget", 0.0, "tokens per total parameter (200 = 10x Chinchilla); 0 = unset"),
        ("batch_size", 16, "global batch (sequences per step)"),
        ("seq_len", 256, "tokens per sequence"),
        ("grad_accum", (1, object), "micro-batches per step (batch_size must divide evenly); 'auto' = the "
         "fewest whose step fits the devices' memory, found by compiling"),
        ("learning_rate", 3e-3, "peak learning rate"),
        ("warmup_steps", -1, "-1 = 10% of train.steps (at most 1000)"),
        ("min_lr_ratio", 0.1, "the cosine decays to this fraction of the peak"),
        ("b1", 0.9, "AdamW beta1"),
        ("b2", 0.95, "AdamW beta2"),
        ("eps", 1e-8, "AdamW epsilon"),
        ("weight_decay", 0.1, "AdamW decoupled weight decay"),
        ("grad_clip", 1.0, "global-norm gradient clipping; 0 = off"),
        ("log_every_steps", 10, "steps between metrics records and console lines"),
    ),
    "pruning": (
        ("schedule", "geometric", f"one of {', '.join(KINDS)}"),
        ("final_sparsity", 0.8, "fraction of prunable weights zero at the end"),
        ("start", 0.25, "first pruning event, as a fraction of train.steps"),
        ("end", 0.75, "last pruning event, as a fraction of train.steps"),
        ("interval", 10, "steps between pruning events"),
        ("scope", "global", f"one of {', '.join(SCOPES)}"),
        ("structure", "", "'' (unstructured) or 'n:m' such as '2:4'"),
        ("include", "", "regex on parameter paths to prune; '' = every kernel"),
        ("exclude", "", "regex on parameter paths never pruned"),
        ("score", "magnitude", "what ranks the weights at an event: a registered score "
         f"(built in: {', '.join(score_names())}; more with jaxsparse.pruning.scores.register_score)"),
    ),
    "checkpoint": (
        ("every_steps", 100, "steps between checkpoints (also at the end and on SIGTERM)"),
        ("keep", 3, "newest checkpoints kept"),
        ("async_save", True, "save in the background while training continues"),
    ),
    "eval": (
        ("every_steps", 100, "steps between evaluations; 0 = only at the end"),
        ("batches", 4, "global batches of the fixed validation set"),
    ),
    "mesh": (
        ("data", -1, "data-parallel axis; -1 = all devices not used by fsdp x tensor"),
        ("fsdp", 1, "fully-sharded data-parallel axis"),
        ("tensor", 1, "tensor-parallel axis"),
    ),
    "metrics": (
        ("peak_tflops_per_device", 0.0, "for MFU; 0 = not reported"),
        ("tensorboard", True, "write TensorBoard event files"),
        ("plots", True, f"write {layout.PLOT} at the end"),
    ),
}


def _value(default: Any) -> Any:
    if isinstance(default, tuple):
        return ml_collections.FieldReference(default[0], field_type=default[1])
    return default


def base_config() -> ml_collections.ConfigDict:
    """All training keys with their defaults (a tiny CPU run on the embedded corpus)."""
    c = ml_collections.ConfigDict()
    for section, keys in KEYS.items():
        node = c
        if section:
            c[section] = ml_collections.ConfigDict()
            node = c[section]
        for key, default, _ in keys:
            node[key] = _value(default)
        if section == "model":
            c.data = data_lib.default_config()
    return c


def key_docs() -> dict[str, tuple[Any, str]]:
    """Dotted key -> (default, one-line doc), for every key of `base_config()`."""
    out = {}
    for section, keys in KEYS.items():
        for key, default, doc in keys:
            out[f"{section}.{key}" if section else key] = (
                default[0] if isinstance(default, tuple) else default, doc)
    for key, default in data_lib.default_config().items():
        out[f"data.{key}"] = (default, data_config.KEYS[key][1])
    return out


def describe_keys(config: ml_collections.ConfigDict) -> str:
    """Every resolved key: `key = value  (default ...)  # doc`, one a line, in KEYS order."""
    docs = key_docs()
    flat = _flatten(config)
    order = [k for k in docs if k in flat] + [k for k in flat if k not in docs]
    width = max(len(k) + len(repr(flat[k])) for k in order) + 3
    lines = []
    for key in order:
        value = flat[key]
        default, doc = docs.get(key, (None, ""))
        mark = "" if value == default else f"  (default {default!r})"
        lines.append(f"{f'{key} = {value!r}':<{width}}  # {doc}{mark}")
    return "\n".join(lines)


def _flatten(config: ml_collections.ConfigDict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in config.items():
        if isinstance(value, ml_collections.ConfigDict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def raise_not_allowed(field: str, value: Any, allowed: str) -> NoReturn:
    """Raise ConfigError 'config.FIELD=VALUE is not allowed: ALLOWED'."""
    raise ConfigError(f"config.{field}={value!r} is not allowed: {allowed}")


def _get(c: ml_collections.ConfigDict, field: str) -> Any:
    node = c
    for part in field.split("."):
        node = node[part]
    return node


def _int(c: ml_collections.ConfigDict, field: str, minimum: int) -> int:
    value = _get(c, field)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise_not_allowed(field, value, f"expected an integer >= {minimum}")
    return value


def _num(c: ml_collections.ConfigDict, field: str, lo: float, hi: float,
         lo_open: bool = False, hi_open: bool = False) -> float:
    value = _get(c, field)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
    if not ok:
        raise_not_allowed(field, value, f"expected a number in {'(' if lo_open else '['}{lo}, {hi}"
                                        f"{')' if hi_open else ']'}")
    return float(value)


def _one_of(c: ml_collections.ConfigDict, field: str, allowed: tuple) -> None:
    if _get(c, field) not in allowed:
        raise_not_allowed(field, _get(c, field), f"one of {', '.join(map(repr, allowed))}")


def check_keys(config: ml_collections.ConfigDict) -> None:
    """Every key of `config`, in every section, must exist in `base_config()`; an unknown key
    (a typo in a config file) raises ConfigError suggesting the nearest known key
    (`config_keys.check_tree`)."""
    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigError(f"the config is a {type(config).__name__}, expected an "
                          "ml_collections.ConfigDict (start from base_config())")
    check_tree(config, base_config(), what="config")


def _validate_model(config: ml_collections.ConfigDict) -> None:
    _one_of(config, "model.family", models.families())
    _one_of(config, "model.size", models.SIZES)
    for key in ("vocab_size", "d_model", "n_layers", "n_heads"):
        _int(config, f"model.{key}", 0)
    _int(config, "model.vocab_multiple", 1)
    _one_of(config, "model.dtype", ("", "float32", "bfloat16"))
    _one_of(config, "model.scan_layers", (None, True, False))
    _one_of(config, "model.remat", (None, True, False))
    if config.model.init_from and not str(config.model.init_from).startswith("hf:"):
        raise_not_allowed("model.init_from", config.model.init_from, "'' (random init) or 'hf:/path/to/folder'")
    _one_of(config, "model.remat_policy", models.model_config.REMAT_POLICIES)
    _one_of(config, "model.attention", models.model_config.ATTENTION_IMPLS)
    _int(config, "model.loss_chunk", 0)
    if config.model.loss_chunk and config.train.seq_len % config.model.loss_chunk:
        raise_not_allowed("model.loss_chunk", config.model.loss_chunk,
                          f"0 or a divisor of train.seq_len={config.train.seq_len}")


def _validate_train(config: ml_collections.ConfigDict) -> int | None:
    t = config.train
    _int(config, "train.steps", 0)
    _num(config, "train.budget", 0.0, 1e7)
    if t.steps == 0 and t.budget <= 0:
        raise_not_allowed("train.steps", t.steps, "an integer >= 1, or 0 together with train.budget > 0")
    _int(config, "train.batch_size", 1)
    _int(config, "train.seq_len", 1)
    grad_accum = grad_accum_of(config)
    _num(config, "train.learning_rate", 0.0, 1e30, lo_open=True)
    _int(config, "train.warmup_steps", -1)
    _num(config, "train.min_lr_ratio", 0.0, 1.0)
    _num(config, "train.b1", 0.0, 1.0, hi_open=True)
    _num(config, "train.b2", 0.0, 1.0, hi_open=True)
    _num(config, "train.eps", 0.0, 1.0, lo_open=True)
    _num(config, "train.weight_decay", 0.0, 10.0)
    _num(config, "train.grad_clip", 0.0, 1e9)
    _int(config, "train.log_every_steps", 1)
    return grad_accum


def grad_accum_of(config: ml_collections.ConfigDict) -> int | None:
    """The one reading of train.grad_accum: micro-batches per step (a divisor of train.batch_size),
    or None for "auto" (the fewest that fit, found by `jaxsparse.train.steps.compiled.search`)."""
    t = config.train
    if t.grad_accum == "auto":
        return None
    _int(config, "train.grad_accum", 1)
    if t.batch_size % t.grad_accum:
        raise_not_allowed("train.grad_accum", t.grad_accum, f"a divisor of train.batch_size={t.batch_size} or 'auto'")
    return t.grad_accum


def import_extensions(config: ml_collections.ConfigDict) -> None:
    """Import the modules `config.imports` names (comma-separated; '' or absent: none), so that the
    model families and data sources they register exist. ConfigError naming config.imports when
    one cannot be imported."""
    value = str(config.get("imports", "") or "")
    for name in filter(None, (part.strip() for part in value.split(","))):
        try:
            importlib.import_module(name)
        except ImportError as err:
            raise ConfigError(f"config.imports={value!r}: cannot import {name!r} ({err}); expected "
                              "modules importable from sys.path (PYTHONPATH)") from None


def validate(config: ml_collections.ConfigDict) -> int | None:
    """Check every value in one pass (not the mesh, vocabulary or schedule: `run.prepare` resolves them):
    every key (data's too), `config.imports` imported, the training sections, last the data section with
    the batch layout (`data_config.validate_data_values`). Returns `grad_accum_of`. Raises ConfigError."""
    check_keys(config)
    import_extensions(config)
    _int(config, "seed", 0)
    _validate_model(config)
    grad_accum = _validate_train(config)
    _one_of(config, "pruning.scope", SCOPES)
    _one_of(config, "pruning.score", score_names())
    _one_of(config, "pruning.schedule", KINDS)
    _int(config, "checkpoint.every_steps", 0)
    _int(config, "checkpoint.keep", 1)
    _int(config, "eval.every_steps", 0)
    _int(config, "eval.batches", 1)
    for axis in ("data", "fsdp", "tensor"):
        value = config.mesh[axis]
        if isinstance(value, bool) or not isinstance(value, int) or not (value >= 1 or value == -1):
            raise_not_allowed(f"mesh.{axis}", value, "an integer >= 1, or -1 for 'the remaining devices'")
    _num(config, "metrics.peak_tflops_per_device", 0.0, 1e6)
    try:
        data_config.validate_data_values(config.data, config.train.batch_size)
    except ConfigError:
        raise
    except ValueError as err:  # the data package's own checks
        raise ConfigError(f"config.data: {err}") from err
    return grad_accum
