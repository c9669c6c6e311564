"""Checkpoint checksums across hosts: two processes (127.0.0.1, gloo, four fake CPU devices
each) write checksums that one 8-device process verifies; damaged checkpoints are judged by the
two processes together (one verdict, one rename by process 0, one report). Resuming across host
counts is tested in tests/train/loop/test_multihost.py."""
from __future__ import annotations

import numpy as np
import orbax.checkpoint as ocp
from train_utils import (TWO_PROCESS_CKPT, TWO_PROCESS_OVERRIDES, TWO_PROCESS_STEPS, flat, tiny_config,
                         train_losses, two_processes, write_corpus)

from jaxsparse import models
from jaxsparse.train import prepare
from jaxsparse.train.steps.state import abstract_state
from jaxsparse.train.workdir.checkpoints import Checkpointer

# the run of tests/train/loop/test_multihost.py: checkpoints at steps 3 and 6
STEPS, CKPT = TWO_PROCESS_STEPS, TWO_PROCESS_CKPT


def _state_arrays(step_dir) -> dict[str, np.ndarray]:
    return flat(ocp.StandardCheckpointer().restore(step_dir / "state"))


def test_two_process_checksums_verify_on_one_process_and_damage_verdicts_are_collective(tmp_path):
    corpus = write_corpus(tmp_path / "corpus", files=4, paragraphs=30)
    data_dir = tmp_path / "data"
    workdir = tmp_path / "run"
    two_processes(corpus, workdir, data_dir)
    losses = train_losses(workdir)

    # One process with 8 devices verifies the checksums the two processes wrote.
    config = tiny_config(corpus, **{"data.data_dir": str(data_dir), **TWO_PROCESS_OVERRIDES})
    run = prepare(config)
    abstract, _ = abstract_state(run.model, run.tx, run.mesh, models.DEFAULT_RULES, config.train.seq_len)
    ckpt = Checkpointer(str(workdir), keep=3, async_save=False)
    restored = ckpt.restore_verified(STEPS, abstract, ident={})
    assert restored.step == STEPS and STEPS in ckpt.verified
    assert len(restored.meta["checksums"]["state"]) == len(flat(restored.state))
    ckpt.close()

    # Damage both checkpoints: the two processes agree on each verdict, process 0 sets each
    # aside once, and both refuse to start over silently (exit 2), having trained nothing.
    before = (workdir / "metrics.jsonl").read_bytes()
    (workdir / "checkpoints" / str(STEPS) / "meta" / "metadata").write_text("{ not json")
    _flip_middle_bit(_largest_data_file(workdir / "checkpoints" / str(CKPT)))
    (workdir / "summary.json").unlink()
    outs = two_processes(corpus, workdir, data_dir, expect=2)
    for step in (STEPS, CKPT):
        line = f"warning: checkpoint {workdir / 'checkpoints' / str(step)} (step {step}) is damaged"
        assert line in outs[0][1] and line not in outs[1][1]  # on the console once, by process 0
    assert all("every checkpoint in" in err and "Traceback" not in err for _, err in outs)
    names = sorted(p.name for p in (workdir / "checkpoints").iterdir())
    assert [n.split(".corrupt-")[0] for n in names] == [str(CKPT), str(STEPS)]
    assert all(".corrupt-" in n for n in names)
    assert (workdir / "metrics.jsonl").read_bytes() == before
    assert train_losses(workdir) == losses


def _largest_data_file(step_dir):
    files = [p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
    return max(files, key=lambda p: p.stat().st_size)


def _flip_middle_bit(path) -> None:
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x04
    path.write_bytes(bytes(raw))
