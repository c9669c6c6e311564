"""Host-count-independent training: one process x 8 devices against two processes x 4 devices (127.0.0.1,
gloo), and checkpoints that resume under the other process count.

The reference is the one-process run through the same CLI, so a data order that depended on the number
of processes (the global batch of a step built from each process's own document stream) fails here.
What is exact (docs/training.md, "Multi-host"): the data order, a checkpoint's state restored under
any process count, and a resume on the same process count (bitwise). What is not: the float sums
of the loss and gradients, whose order follows the topology, so the two counts agree to float noise.
"""
from __future__ import annotations

import re
import shutil

import jax
import numpy as np
import orbax.checkpoint as ocp
from train_utils import (TWO_PROCESS_CKPT, TWO_PROCESS_OVERRIDES, TWO_PROCESS_STEPS, cli_env, run_cli, train_cmd,
                         train_losses, two_processes, write_corpus)

from jaxsparse.inference.restore import load_run

STEPS, CKPT = TWO_PROCESS_STEPS, TWO_PROCESS_CKPT
EXTRA = [f"--config.{k}={v}" for k, v in TWO_PROCESS_OVERRIDES.items()]


def _one_process(corpus, workdir, data_dir) -> str:
    out = run_cli(train_cmd(corpus, workdir, *EXTRA), cli_env(data_dir, devices=8))
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def _two_processes(corpus, workdir, data_dir) -> list[str]:
    return [out for out, _ in two_processes(corpus, workdir, data_dir)]


def _interrupted_copy(workdir, dest):
    """`workdir` as a run stopped right after the checkpoint of step CKPT: later checkpoints and the
    summary removed (the metrics of later steps are dropped by the resume)."""
    shutil.copytree(workdir, dest)
    for step in range(CKPT + 1, STEPS + 1):
        shutil.rmtree(dest / "checkpoints" / str(step), ignore_errors=True)
    (dest / "summary.json").unlink()
    return dest


def _losses(workdir) -> list[float]:
    got = train_losses(workdir)
    assert sorted(got) == list(range(1, STEPS + 1))
    return [got[s] for s in range(1, STEPS + 1)]


def _saved_arrays(workdir, step: int) -> dict[str, np.ndarray]:
    """Checkpoint `step`'s train state as written, read as plain numpy (no mesh, no restore)."""
    path = workdir / "checkpoints" / str(step) / "state"
    reader = ocp.PyTreeCheckpointer()
    tree = reader.metadata(path).item_metadata.tree
    raw = reader.restore(path, restore_args=jax.tree.map(
        lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree))
    return {jax.tree_util.keystr(p): np.asarray(v)
            for p, v in jax.tree_util.tree_flatten_with_path(raw)[0]}


def _flat(tree, prefix: str) -> dict[str, np.ndarray]:
    return {prefix + jax.tree_util.keystr(p): np.asarray(v)
            for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _assert_same_state(a, b, step: int) -> None:
    got, want = _saved_arrays(a, step), _saved_arrays(b, step)
    assert got.keys() == want.keys()
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def test_two_processes_match_one_process_and_resume_across_process_counts(tmp_path):
    corpus = write_corpus(tmp_path / "corpus")
    data_dir = tmp_path / "data"
    single = tmp_path / "single"
    _one_process(corpus, single, data_dir)
    want = _losses(single)
    assert len(set(want)) == STEPS  # the steps see different batches

    double = tmp_path / "double"
    outs = _two_processes(corpus, double, data_dir)
    # not bitwise: the loss and gradient sums run in an order that follows the topology
    np.testing.assert_allclose(_losses(double), want, rtol=0, atol=1e-5)
    assert (double / "summary.json").exists()
    # only process 0 reports (gloo prints its own connection lines on every process)
    assert "done: eval loss" in outs[0] and "done: eval loss" not in outs[1]
    assert "loss" not in outs[1]

    # Exact: a checkpoint written by two processes restores bitwise on one (8 devices here) ...
    restored = load_run(str(double), CKPT, with_tokenizer=False)
    saved = _saved_arrays(double, CKPT)
    params = _flat(restored.params, "['params']")
    assert params and all(saved[k].dtype == v.dtype for k, v in params.items())
    for key, value in params.items():
        np.testing.assert_array_equal(value, saved[key], err_msg=key)
    # ... and a resume on the same process count continues bitwise: losses, weights, masks, moments
    two_from_two = _interrupted_copy(double, tmp_path / "two_from_two")
    outs = _two_processes(corpus, two_from_two, data_dir)
    assert re.search(rf"resumed .*{CKPT}", outs[0]), outs[0][-2000:]
    assert _losses(two_from_two) == _losses(double)
    _assert_same_state(two_from_two, double, STEPS)

    # A checkpoint written by two processes resumes on one, and the reverse: both continue to within
    # the float noise of the other topology's sums.
    one_from_two = _interrupted_copy(double, tmp_path / "one_from_two")
    stdout = _one_process(corpus, one_from_two, data_dir)
    assert re.search(rf"resumed .*{CKPT}", stdout), stdout[-2000:]  # from the checkpoint, not from scratch
    np.testing.assert_allclose(_losses(one_from_two), want, rtol=0, atol=1e-5)
    two_from_one = _interrupted_copy(single, tmp_path / "two_from_one")
    outs = _two_processes(corpus, two_from_one, data_dir)
    assert re.search(rf"resumed .*{CKPT}", outs[0]), outs[0][-2000:]
    np.testing.assert_allclose(_losses(two_from_one), want, rtol=0, atol=1e-5)
