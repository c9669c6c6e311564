"""The trainer compiles each step it runs once: train.grad_accum="auto" is decided by compiling
(`jaxsparse.train.steps.compiled`), and the session calls the executables the search kept.

Compilations are counted with JAX's own monitoring events: every backend compilation records
`/jax/core/compile/backend_compile_duration` with the jitted function's name.
"""
from __future__ import annotations

import collections
import importlib.util

import pytest
from jax import monitoring
from train_utils import REPO, tiny_config

from jaxsparse import models
from jaxsparse.train import prepare, train
from jaxsparse.train.resolve import train_config
from jaxsparse.train.resolve import environment
from jaxsparse.train.steps import compiled
from jaxsparse.train.steps.state import abstract_state

COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


@pytest.fixture
def compilations():
    """A Counter: "jit(NAME)" of a jitted function -> its backend compilations during the test."""
    counts: collections.Counter = collections.Counter()

    def listener(event, duration, **kwargs):
        if event == COMPILE_EVENT:
            counts[kwargs.get("fun_name")] += 1
    monitoring.register_event_duration_secs_listener(listener)
    yield counts
    monitoring.unregister_event_duration_listener(listener)


def _config(corpus, tmp_path, **overrides):
    base = {"data.data_dir": str(tmp_path / "data"), "train.steps": 8, "train.grad_accum": "auto",
            "mesh.data": 2, "mesh.fsdp": 1, "mesh.tensor": 4}  # 2 data shards: A in 1, 2, 4
    return tiny_config(corpus, **{**base, **overrides})


def test_auto_on_the_cpu_compiles_each_step_once_and_the_trainer_reuses_it(
        corpus, tmp_path, compilations):
    run = prepare(_config(corpus, tmp_path))
    assert run.grad_accum is None and run.config.train.grad_accum == "auto"  # prepare never compiles
    assert compilations["jit(train_step)"] == compilations["jit(eval_step)"] == 0
    summary = train(_config(corpus, tmp_path), str(tmp_path / "run"))
    assert summary["final_eval_loss"] is not None  # evals at steps 8 (eval.every_steps) and the end
    assert compilations["jit(train_step)"] == 1  # the CPU reports no memory limit: A = 1, compiled once
    assert compilations["jit(eval_step)"] == 1


def test_auto_search_keeps_the_chosen_steps_for_the_session(
        corpus, tmp_path, monkeypatch, compilations):
    run = prepare(_config(corpus, tmp_path))
    state = abstract_state(run.model, run.tx, run.mesh, models.DEFAULT_RULES, run.seq_len)
    measured = {a: compiled.search(run, run.mesh, None, [a], state=state).measured for a in (1, 2)}
    needs = {a: max(m["train"]["bytes"]["total"], m["eval"]["bytes"]["total"]) for a, m in measured.items()}
    assert needs[2] < needs[1]  # half the micro-batch, fewer activation bytes
    limit = int(needs[2] / compiled.HEADROOM) + 1  # A = 2 fits, A = 1 does not
    monkeypatch.setattr(environment, "device_bytes_limit", lambda: limit)
    compilations.clear()
    summary = train(_config(corpus, tmp_path), str(tmp_path / "run"), force=True)
    assert summary["final_eval_loss"] is not None
    assert compilations["jit(train_step)"] == 2  # A = 1 (does not fit) and A = 2 (chosen); no third
    assert compilations["jit(eval_step)"] == 2
    assert summary["config"]["train"]["grad_accum"] == 2


def paper(arg):
    spec = importlib.util.spec_from_file_location("paper_config", REPO / "configs" / "paper.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def test_grad_accum_auto_resolves_on_cpu_and_searches_candidates():
    config = paper("size=58m,batch=32")
    config.train.grad_accum = "auto"
    train_config.validate(config)  # "auto" is a valid value
    assert prepare(config).grad_accum is None  # decided by compiling (tests/train/steps/test_compiled.py)
    assert compiled.accum_candidates(4096, 64) == [1, 2, 4, 8, 16, 32, 64]
    assert compiled.accum_candidates(48, 8) == [1, 2, 3, 6]
    config.train.grad_accum = "sometimes"
    with pytest.raises(ValueError, match="train.grad_accum"):
        train_config.validate(config)
