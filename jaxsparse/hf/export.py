"""Write a restored run as a Hugging Face LLaMA folder, atomically.

DIR gets config.json, generation_config.json, model.safetensors (float32, masks applied), the
tokenizer files, README.md (the model card) and the marker jaxsparse-export.json. Everything is
written to a temporary sibling directory that is renamed to DIR only when complete; an existing
DIR is replaced only with `overwrite=True`, only if it holds the marker (an export, not a user's
folder), and only after the new folder is complete.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from typing import Any, Optional, Protocol

import jax
import numpy as np

from jaxsparse.errors import ConfigError
from jaxsparse.hf import card, convert
from jaxsparse.hf.config import llama_config
from jaxsparse.hf.tokenizer import write_tokenizer

MARKER = "jaxsparse-export.json"  # in every export: --overwrite replaces only folders holding it


class RestoredRun(Protocol):
    """What the export reads of a restored run (`jaxsparse.inference.restore.load_run` gives one;
    hf imports nothing above it): the checkpoint `step` of `workdir`, its config (a ConfigDict),
    model config, params and masks (Flax trees), meta (identity, progress) and tokenizer."""

    workdir: str
    step: int
    config: Any
    model_cfg: Any
    params: Any
    masks: Any
    meta: dict
    tokenizer: Any


def check_out_dir(out: str, overwrite: bool) -> None:
    """ConfigError (before any compute) when `out` exists and overwrite is False, or cannot be made."""
    if not out:
        raise ConfigError("--out is required: the folder to write the Hugging Face model to")
    if os.path.exists(out) and not overwrite:
        raise ConfigError(f"--out={out!r} already exists; pass --overwrite to replace it, or choose a new folder")
    if os.path.exists(out) and not os.path.isdir(out):
        raise ConfigError(f"--out={out!r} exists and is not a directory")
    if os.path.isdir(out) and not os.path.isfile(os.path.join(out, MARKER)):
        raise ConfigError(f"--out={out!r} holds no {MARKER}, so it is not an export written by this "
                          "command; --overwrite replaces only those. Move it away or choose a new folder")
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
        raise ConfigError(f"--out={out!r}: the parent folder {parent} does not exist or is not writable")


def masked_names(model_cfg: Any, masks: Any) -> set[str]:
    """HF names of the exported tensors that carry a pruning mask."""
    names = set()
    for path, name, _ in convert.TOP_TENSORS:
        if convert.get_path(masks, path) is not None:
            names.add(name)
    for i in range(model_cfg.n_layers):
        for path, name, _ in convert.LAYER_TENSORS:
            if convert.block_leaf(model_cfg, masks, i, path) is not None:
                names.add(f"model.layers.{i}.{name}")
    return names


def generation_config(run: RestoredRun, ids: dict[str, int]) -> dict[str, Any]:
    """Greedy by default; the vocabulary's padding ids (never produced by the tokenizer) suppressed."""
    padding = list(range(run.tokenizer.vocab_size, run.model_cfg.vocab_size))
    out = {**ids, "do_sample": False}
    if padding:
        out["suppress_tokens"] = padding
    return out


def write_export(run: RestoredRun, out: str, overwrite: bool = False, *, summary: Optional[dict],
                 records: list[dict]) -> dict[str, Any]:
    """Export `run` to `out` (see the module docstring); returns a summary of what was written.
    `summary` and `records`: the run's summary.json (None: not finished) and metrics.jsonl records,
    for the model card (`card.run_figures`)."""
    from safetensors import SafetensorError
    from safetensors.numpy import save_file

    check_out_dir(out, overwrite)
    params, masks = jax.device_get((run.params, run.masks))
    tensors = convert.to_hf(run.model_cfg, params, masks)
    masked = masked_names(run.model_cfg, masks)
    sparsity = card.layer_sparsity(tensors, masked)
    n_total = sum(int(w.size) for w in tensors.values())
    n_prunable = sum(int(tensors[n].size) for n in masked)
    zeros = sum(int(np.sum(tensors[n] == 0.0)) for n in masked)
    parent = os.path.dirname(os.path.abspath(out))
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(os.path.abspath(out))}.tmp-", dir=parent)
    try:
        ids = write_tokenizer(run.tokenizer, tmp)
        with open(os.path.join(tmp, "config.json"), "w", encoding="utf-8") as f:
            json.dump(llama_config(run.model_cfg, ids["bos_token_id"], ids["eos_token_id"], ids["pad_token_id"]),
                      f, indent=2)
        with open(os.path.join(tmp, "generation_config.json"), "w", encoding="utf-8") as f:
            json.dump(generation_config(run, ids), f, indent=2)
        try:
            save_file(tensors, os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
        except SafetensorError as err:  # safetensors reports its I/O errors as its own type
            raise OSError(f"model.safetensors: {err}") from err
        figures = card.run_figures(run.step, run.meta, run.config, n_total, summary, records)
        text = card.model_card(workdir=run.workdir, step=run.step, config=run.config, figures=figures,
                               sparsity=sparsity, model_cfg=run.model_cfg,
                               sizes={"total": n_total, "prunable": n_prunable, "zeros": zeros})
        with open(os.path.join(tmp, "README.md"), "w", encoding="utf-8") as f:
            f.write(text)
        with open(os.path.join(tmp, MARKER), "w", encoding="utf-8") as f:
            json.dump({"workdir": os.path.abspath(run.workdir), "step": run.step}, f)
        _make_readable(tmp)
        _replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"out": os.path.abspath(out), "step": run.step, "tensors": len(tensors), "params": n_total,
            "zeros": zeros, "sparsity_prunable": zeros / max(n_prunable, 1), **figures}


def _make_readable(folder: str) -> None:
    """mkdtemp and safetensors create owner-only files: give them the permissions the umask allows."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(folder, 0o777 & ~umask)
    for name in os.listdir(folder):
        os.chmod(os.path.join(folder, name), 0o666 & ~umask)


def _replace(tmp: str, out: str) -> None:
    """Rename the finished `tmp` to `out`; an existing `out` is moved aside first and removed after."""
    if not os.path.exists(out):
        os.rename(tmp, out)
        return
    aside = f"{os.path.abspath(out)}.old-{uuid.uuid4().hex[:8]}"
    os.rename(out, aside)
    os.rename(tmp, out)
    shutil.rmtree(aside, ignore_errors=True)
