"""Write a restored run as a Hugging Face LLaMA folder, atomically.

DIR gets config.json, generation_config.json, model.safetensors (float32, masks applied), the
tokenizer files, README.md (the model card) and the marker jaxsparse-export.json (the step); no
file holds a local path (the card's config has them cut, `card.without_local_paths`). Everything
is written to a temporary sibling directory that takes DIR's name only when complete
(`hf.replace`: an atomic exchange on Linux, so that DIR always names a complete export, the old or
the new, even if the process is killed). An existing DIR is replaced only with `overwrite=True`
and only if it holds the marker (an export, not a user's folder); a symlink at DIR is followed, its
target replaced and the link kept. Missing parent folders of DIR are made.
"""
from __future__ import annotations

import contextlib
import json
import os
from typing import Any, Optional, Protocol

import jax
import numpy as np

from jaxsparse.errors import ConfigError
from jaxsparse.hf import card, convert, replace
from jaxsparse.hf.hf_config import llama_config
from jaxsparse.hf.tokenizer import write_tokenizer

MARKER = "jaxsparse-export.json"  # in every export: --overwrite replaces only folders holding it


class ExportSource(Protocol):
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


def _nearest_existing(path: str) -> str:
    while not os.path.lexists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path


def check_out_dir(out: str, overwrite: bool) -> str:
    """The folder that `out` names (a symlink to an earlier export names its target), after the
    checks that need no compute; ConfigError when `out` exists and overwrite is False, is not an
    export, is a dangling symlink, or cannot be made (a missing parent folder is made at write)."""
    if not out:
        raise ConfigError("--out is required: the folder to write the Hugging Face model to")
    if os.path.islink(out) and not os.path.exists(out):
        raise ConfigError(f"--out={out!r} is a symlink to {os.readlink(out)!r}, which does not exist; "
                          "point it at an earlier export or choose a new folder")
    target = os.path.realpath(out)
    if os.path.exists(out) and not overwrite:
        raise ConfigError(f"--out={out!r} already exists; pass --overwrite to replace it, or choose a new folder")
    if os.path.exists(out) and not os.path.isdir(out):
        raise ConfigError(f"--out={out!r} exists and is not a directory")
    if os.path.isdir(out) and not os.path.isfile(os.path.join(out, MARKER)):
        raise ConfigError(f"--out={out!r} holds no {MARKER}, so it is not an export written by this "
                          "command; --overwrite replaces only those. Move it away or choose a new folder")
    ancestor = _nearest_existing(os.path.dirname(target))
    if not os.path.isdir(ancestor) or not os.access(ancestor, os.W_OK | os.X_OK):
        raise ConfigError(f"--out={out!r}: cannot create the folder there ({ancestor} is not a writable "
                          "directory)")
    return target


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


def generation_config(run: ExportSource, ids: dict[str, int]) -> dict[str, Any]:
    """Greedy by default; the vocabulary's padding ids (never produced by the tokenizer) suppressed."""
    padding = list(range(run.tokenizer.vocab_size, run.model_cfg.vocab_size))
    out = {**ids, "do_sample": False}
    if padding:
        out["suppress_tokens"] = padding
    return out


def write_export(run: ExportSource, out: str, overwrite: bool = False, *, summary: Optional[dict],
                 records: list[dict]) -> dict[str, Any]:
    """Export `run` to `out` (see the module docstring); returns a summary of what was written.
    `summary` and `records`: the run's summary.json (None: not finished) and metrics.jsonl records,
    for the model card (`card.run_figures`). Missing parent folders of `out` are made (and removed
    again if the write fails); leftovers of interrupted exports to `out` are removed after.
    ConfigError before anything is written for a family other than LLaMA (`convert.require_llama`)."""
    convert.require_llama(run.model_cfg, f"--workdir={run.workdir}")
    target = check_out_dir(out, overwrite)
    params, masks = jax.device_get((run.params, run.masks))
    tensors = convert.to_hf(run.model_cfg, params, masks)
    masked = masked_names(run.model_cfg, masks)
    n_total = sum(int(w.size) for w in tensors.values())
    n_prunable = sum(int(tensors[n].size) for n in masked)
    zeros = sum(int(np.sum(tensors[n] == 0.0)) for n in masked)
    sizes = {"total": n_total, "prunable": n_prunable, "zeros": zeros}
    figures = card.run_figures(run.step, run.meta, run.config, n_total, summary, records)
    made: list[str] = []
    try:
        _make_parents(os.path.dirname(target), made)
        with replace.staging(target) as tmp:
            _write_files(run, tmp, tensors, card.layer_sparsity(tensors, masked), sizes, figures)
            replace.put_in_place(tmp, target)
    except BaseException:
        for folder in reversed(made):
            with contextlib.suppress(OSError):
                os.rmdir(folder)
        raise
    removed = replace.remove_leftovers(target)
    if os.path.abspath(out) != target:  # --out is a symlink: an earlier export may have left its own
        removed += replace.remove_leftovers(os.path.abspath(out))
    return {"out": os.path.abspath(out), "step": run.step, "tensors": len(tensors), "params": n_total,
            "zeros": zeros, "sparsity_prunable": zeros / max(n_prunable, 1), **figures,
            "removed_leftovers": [os.path.basename(p) for p in removed]}


def _make_parents(folder: str, made: list[str]) -> None:
    """Make `folder` and its missing parents, appending each to `made` (outermost first) once made."""
    missing = []
    while not os.path.lexists(folder):
        missing.append(folder)
        folder = os.path.dirname(folder)
    for path in reversed(missing):
        os.mkdir(path)
        made.append(path)


def _write_files(run: ExportSource, tmp: str, tensors: dict[str, np.ndarray], sparsity: dict[str, float],
                 sizes: dict[str, int], figures: dict[str, Any]) -> None:
    """Every file of the export, into the empty folder `tmp`."""
    from safetensors import SafetensorError
    from safetensors.numpy import save_file

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
    text = card.model_card(step=run.step, config=run.config, figures=figures, sparsity=sparsity,
                           model_cfg=run.model_cfg, sizes=sizes)
    with open(os.path.join(tmp, "README.md"), "w", encoding="utf-8") as f:
        f.write(text)
    with open(os.path.join(tmp, MARKER), "w", encoding="utf-8") as f:
        json.dump({"step": run.step}, f)
    _make_readable(tmp)


def _make_readable(folder: str) -> None:
    """mkdtemp and safetensors create owner-only files: give them the permissions the umask allows."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(folder, 0o777 & ~umask)
    for name in os.listdir(folder):
        os.chmod(os.path.join(folder, name), 0o666 & ~umask)
