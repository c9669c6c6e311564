"""Verified checkpoints: a damaged newest checkpoint is reported, set aside (renamed, never
deleted) and the run resumes from the newest intact one, ending bitwise equal to a run that was
never damaged; a workdir whose every checkpoint is damaged is refused with a clear message."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from train_utils import (
    find_key,
    flat,
    flip_bit,
    garbage_meta,
    restore_raw_state,
    tiny_config,
    train_losses,
    truncate,
    write_corpus,
)

from jaxsparse.errors import ConfigError
from jaxsparse.inference.restore import _abstract_for
from jaxsparse.pruning import get_masks, mask_collection
from jaxsparse.pruning.state import PruningState
from jaxsparse.train import train
from jaxsparse.train.workdir.checkpoints import Checkpointer
from jaxsparse.train.workdir.checksum import state_checksums

STEPS = 24
OVERRIDES = {"checkpoint.every_steps": 8, "checkpoint.async_save": False, "checkpoint.keep": 3,
             "train.log_every_steps": 1, "eval.every_steps": 0, "train.steps": STEPS}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """(config, workdir) of an uninterrupted 24-step run with checkpoints at 8, 16 and 24."""
    corpus = write_corpus(tmp_path_factory.mktemp("corpus"), files=4, paragraphs=30)
    data_dir = tmp_path_factory.mktemp("data")
    config = tiny_config(corpus, **{"data.data_dir": str(data_dir), **OVERRIDES})
    workdir = tmp_path_factory.mktemp("reference")
    train(config, str(workdir))
    return config, workdir


def _copy_unfinished(reference: Path, dst: Path) -> Path:
    """The reference workdir as left by a SIGKILL right after its final checkpoint: every
    record and checkpoint written, no summary.json yet."""
    shutil.copytree(reference, dst)
    (dst / "summary.json").unlink()
    return dst


def _empty(step_dir: Path) -> None:
    shutil.rmtree(step_dir)
    step_dir.mkdir()


def _wrong_checksum(step_dir: Path) -> None:
    """Valid files whose recorded checksum no longer matches one array (a silent change)."""
    path = step_dir / "meta" / "metadata"
    meta = json.loads(path.read_text())
    sums = meta["checksums"]["state"]
    key = sorted(sums)[0]
    sums[key] = f"{(int(sums[key], 16) ^ 1):08x}"
    path.write_text(json.dumps(meta))


CORRUPTIONS = {"flipped_bit": flip_bit, "truncated": truncate, "emptied": _empty,
               "garbage_meta": garbage_meta, "checksum_mismatch": _wrong_checksum}


def _state_arrays(workdir: Path) -> dict[str, np.ndarray]:
    state = restore_raw_state(workdir, STEPS)
    return {**{"params" + k: v for k, v in flat(state["params"]).items()},
            **{"masks" + k: v for k, v in flat(find_key(state["opt_state"], "masks")).items()}}


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_damaged_newest_checkpoint_is_set_aside_and_run_resumes_bitwise(
        reference, tmp_path, capsys, kind):
    config, ref = reference
    work = _copy_unfinished(ref, tmp_path / "work")
    newest = work / "checkpoints" / str(STEPS)
    CORRUPTIONS[kind](newest)

    summary = train(config, str(work))
    out = capsys.readouterr()
    assert f"checkpoint {newest} (step {STEPS}) is damaged" in out.err
    assert f"resumed from {work / 'checkpoints'}/16" in out.out
    aside = [p for p in (work / "checkpoints").iterdir() if p.name.startswith(f"{STEPS}.corrupt-")]
    assert len(aside) == 1 and str(aside[0]) in out.err  # renamed, not deleted
    assert summary["steps"] == STEPS

    a, b = _state_arrays(ref), _state_arrays(work)
    assert a.keys() == b.keys() and any(k.startswith("masks") for k in a)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert train_losses(ref) == train_losses(work)
    records = [json.loads(x) for x in (work / "metrics.jsonl").read_text().splitlines()]
    keys = [(r["kind"], r["step"]) for r in records]
    assert len(keys) == len(set(keys))  # nothing written twice across the resume
    assert keys == [(r["kind"], r["step"]) for r in
                    map(json.loads, (ref / "metrics.jsonl").read_text().splitlines())]


def test_every_checkpoint_damaged_is_refused_naming_them(reference, tmp_path, capsys):
    config, ref = reference
    work = _copy_unfinished(ref, tmp_path / "work")
    before = (work / "metrics.jsonl").read_bytes()
    for step in (8, 16, 24):
        garbage_meta(work / "checkpoints" / str(step))
    with pytest.raises(ConfigError, match="every checkpoint in .* is damaged") as err:
        train(config, str(work))
    names = sorted(p.name for p in (work / "checkpoints").iterdir())
    assert [n.split(".")[0] for n in names] == ["16", "24", "8"]
    assert all(".corrupt-" in n for n in names) and all(n in str(err.value) for n in names)
    assert "--restart" in str(err.value)
    assert (work / "metrics.jsonl").read_bytes() == before  # nothing rewritten
    assert "is damaged" in capsys.readouterr().err


class _OldPruningState(NamedTuple):
    """The pruning state before its masks became a flat tuple: a params-shaped masks tree."""

    count: Any
    masks: Any
    invalid: Any


def _old_layout(opt_state):
    def old(node):
        if not isinstance(node, PruningState):
            return node
        return _OldPruningState(node.count, mask_collection(get_masks(node)), node.invalid)
    return jax.tree.map(old, opt_state, is_leaf=lambda x: isinstance(x, PruningState))


def test_a_checkpoint_of_the_old_pruning_state_layout_is_refused_and_left_untouched(reference, tmp_path):
    """A checkpoint written before the pruning state held its masks in a flat tuple: a clear error
    naming the differing paths; nothing set aside as damaged, nothing trained or rewritten."""
    config, ref = reference
    work = _copy_unfinished(ref, tmp_path / "work")
    ckpt = Checkpointer(str(work), keep=3, async_save=False)
    meta = ckpt.read_meta(STEPS)
    state, data = ckpt.restore(STEPS, _abstract_for(str(work), None, {}, meta))
    ckpt.close()
    shutil.rmtree(work / "checkpoints" / str(STEPS))
    ckpt = Checkpointer(str(work), keep=3, async_save=False)
    ckpt.save_step(STEPS, state.replace(opt_state=_old_layout(state.opt_state)), data,
                   {k: v for k, v in meta.items() if k != "checksums"}, wait=True)
    ckpt.close()
    before = (work / "metrics.jsonl").read_bytes()
    with pytest.raises(ConfigError, match=r"another layout.*masks\[0\].*masks\['layers_0'\].*--restart"):
        train(config, str(work))
    assert sorted(p.name for p in (work / "checkpoints").iterdir()) == ["16", "24", "8"]
    assert (work / "metrics.jsonl").read_bytes() == before


def test_checksum_is_independent_of_sharding_and_sees_one_flipped_bit():
    x = np.random.default_rng(0).normal(size=(16, 24)).astype(np.float32)
    tree = {"w": x, "b16": x.astype(jnp.bfloat16), "mask": x > 0, "step": np.int32(7)}
    single = state_checksums(jax.tree.map(jnp.asarray, tree))
    mesh = Mesh(np.array(jax.devices()).reshape(4, 2), ("a", "b"))
    placed = jax.tree.map(lambda v: jax.device_put(v, NamedSharding(
        mesh, PartitionSpec("a", "b") if np.ndim(v) == 2 else PartitionSpec())), tree)
    assert state_checksums(placed) == single
    for bit in (0, 13, 31):
        flipped = x.copy()
        flipped.view(np.uint32)[5, 7] ^= np.uint32(1 << bit)
        assert state_checksums({"w": flipped})["['w']"] != single["['w']"]
    swapped = x.copy()
    swapped[[0, 1]] = swapped[[1, 0]]  # same values, other places
    assert state_checksums({"w": swapped})["['w']"] != single["['w']"]


def test_kill_after_final_checkpoint_then_torn_line_resumes_without_duplicates(
        reference, tmp_path, capsys):
    """A SIGKILL right after the final checkpoint (final eval record written, no summary), then
    a crash mid-write that left a torn last line: the rerun warns about the line, writes the
    summary and no record twice."""
    config, ref = reference
    work = _copy_unfinished(ref, tmp_path / "work")
    with open(work / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write('{"kind": "eval", "step": 24, "eval_lo')
    summary = train(config, str(work))
    err = capsys.readouterr().err
    assert f"{work / 'metrics.jsonl'}: dropped its torn last line" in err
    assert summary["final_eval_loss"] == json.loads((ref / "summary.json").read_text())[
        "final_eval_loss"]
    assert (work / "metrics.jsonl").read_text() == (ref / "metrics.jsonl").read_text()


def test_divergence_message_does_not_claim_an_unverified_checkpoint_is_intact(reference, tmp_path):
    config, _ = reference
    config = config.copy_and_resolve_references()
    config.train.learning_rate, config.train.grad_clip = 1e6, 0.0
    config.checkpoint.every_steps = 1
    with pytest.raises(FloatingPointError, match="last good checkpoint") as err:
        train(config, str(tmp_path))
    message = str(err.value)
    assert "intact" not in message and "verified against" not in message
    assert "saved by this run with checksums" in message


def test_finished_run_with_a_damaged_final_checkpoint_is_redone_from_the_previous(
        reference, tmp_path, capsys):
    config, ref = reference
    work = tmp_path / "work"
    shutil.copytree(ref, work)  # summary.json kept
    garbage_meta(work / "checkpoints" / str(STEPS))
    summary = train(config, str(work))
    assert f"checkpoint {work / 'checkpoints' / str(STEPS)} (step {STEPS}) is damaged" in \
        capsys.readouterr().err
    assert summary["final_eval_loss"] == json.loads((ref / "summary.json").read_text())[
        "final_eval_loss"]
    assert train_losses(ref) == train_losses(work)
