"""The trainer end to end on the test-size model (in-process API and command line)."""
from __future__ import annotations

import json
import math
import signal
import time

import jax
import numpy as np
import pytest
from train_utils import (
    cli_env,
    config_in,
    find_key,
    flat,
    restore_raw_state,
    run_cli,
    train_cmd,
    train_losses,
)

from jaxsparse.pruning import Schedule
from jaxsparse.pruning.selection import prunable_flags
from jaxsparse.train import train


def test_sparse_run_follows_schedule_zeroes_pruned_weights_and_reports_exact_n_avg(
        corpus, data_dir, tmp_path, capsys):
    config = config_in(corpus, data_dir)
    summary = train(config, str(tmp_path))
    console = capsys.readouterr().out.splitlines()
    steps = config.train.steps
    sched = Schedule(config.pruning.schedule, config.pruning.final_sparsity,
                     config.pruning.start, config.pruning.end, config.pruning.interval)
    n_prunable = summary["n_prunable"]
    events = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    events = {r["step"]: r for r in events if r["kind"] == "pruning_event"}
    want = [int(s) for s in sched.event_steps(steps) if s < steps]
    assert sorted(events) == want
    for step, rec in events.items():  # realised density = schedule, up to rounding of one weight
        assert abs(rec["density"] - sched.density_at(step, steps)) <= 1.0 / n_prunable
    # global scope: per-layer sparsities differ at the final event
    per_layer = list(events[want[-1]]["per_layer_sparsity"].values())
    assert max(per_layer) - min(per_layer) > 0.05
    # a tensor the global threshold emptied is named on the console, each warning once
    emptied = {path.split("[")[0] for path, s in events[want[-1]]["per_layer_sparsity"].items() if s == 1.0}
    warned = [line for line in console if line.startswith("warning: pruning emptied")]
    assert len(warned) == len(set(warned))
    assert all(any(path in line for line in warned) for path in emptied)
    assert bool(warned) == bool(emptied)

    n_other = summary["n_total"] - n_prunable
    exact = n_other + sched.average_density(steps) * n_prunable
    assert summary["n_avg"] == pytest.approx(exact, rel=1e-12)
    assert summary["n_avg_realised"] == pytest.approx(exact, rel=1e-4)
    assert summary["final_sparsity"] == pytest.approx(0.75, abs=1.0 / n_prunable)
    assert summary["tokens"] == steps * config.train.batch_size * config.train.seq_len
    assert math.isfinite(summary["final_eval_loss"])
    first = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()][0]
    assert summary["final_train_loss"] < first["loss"]  # it learns

    state = restore_raw_state(tmp_path, steps)
    params = flat(state["params"])  # in jax.tree.leaves order, as the state's masks are
    p = config.pruning
    flags = prunable_flags(state["params"], p.include or None, p.exclude or None).flags
    kernels = [key for key, prunable in zip(params, flags) if prunable]
    masks = [np.asarray(m) for m in jax.tree.leaves(find_key(state["opt_state"], "masks"))]
    assert len(masks) == len(kernels)  # one mask per prunable kernel, in leaf order
    checked = 0
    for key, m in zip(kernels, masks):
        w = params[key]
        assert m.dtype == np.bool_ and m.shape == w.shape
        assert np.all(w[~m] == 0.0)
        checked += 1
    assert checked == 2 * 7 + 1  # 7 kernels per block x 2 blocks + LM head
    assert all(np.count_nonzero(v) == v.size for k, v in params.items()
               if "embed" in k or "scale" in k)


def test_nan_loss_stops_with_clear_message_and_keeps_last_good_checkpoint(
        corpus, data_dir, tmp_path):
    config = config_in(corpus, data_dir, **{"train.learning_rate": 1e6, "train.grad_clip": 0.0,
                                          "checkpoint.every_steps": 1,
                                          "checkpoint.async_save": False,
                                          "train.log_every_steps": 1, "train.steps": 40})
    with pytest.raises(FloatingPointError, match="not finite.*last good checkpoint"):
        train(config, str(tmp_path))
    saved = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    assert saved, "a checkpoint before the divergence must exist"
    state = restore_raw_state(tmp_path, saved[-1])
    assert all(np.all(np.isfinite(v)) for v in flat(state["params"]).values())
    assert not any(p.name.endswith("tmp") for p in (tmp_path / "checkpoints").iterdir())


def test_resume_after_sigkill_matches_uninterrupted_run_bitwise(corpus, data_dir, tmp_path):
    env = cli_env(data_dir)
    extra = ["--config.train.steps=48", "--config.checkpoint.every_steps=8",
             "--config.train.log_every_steps=1", "--config.pruning.interval=10",
             "--config.eval.every_steps=0"]
    full, killed = tmp_path / "full", tmp_path / "killed"
    done = run_cli(train_cmd(corpus, full, *extra), env)
    assert done.returncode == 0, done.stderr[-3000:]

    import subprocess
    proc = subprocess.Popen(train_cmd(corpus, killed, *extra), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    ckpts = killed / "checkpoints"
    while time.time() < deadline and proc.poll() is None:
        if ckpts.exists() and any(p.name.isdigit() and int(p.name) < 32 for p in ckpts.iterdir()):
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (killed / "summary.json").exists()
    again = run_cli(train_cmd(corpus, killed, *extra), env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resumed from" in again.stdout

    a, b = flat(restore_raw_state(full, 48)), flat(restore_raw_state(killed, 48))
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    la, lb = train_losses(full), train_losses(killed)
    assert la.keys() == lb.keys() == set(range(1, 49))
    assert la == lb  # bitwise: no batch repeated or skipped


def test_workdir_of_another_run_is_refused_and_left_untouched(corpus, data_dir, tmp_path):
    train(config_in(corpus, data_dir, **{"train.steps": 8}), str(tmp_path))
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "checkpoints").rglob("*")}
    for key, value in (("pruning.final_sparsity", 0.5), ("model.d_model", 32),
                       ("model.n_heads", 2), ("model.vocab_multiple", 64),
                       ("train.grad_clip", 0.0)):
        field = {"model.vocab_multiple": "model.vocab_size",
                 "train.grad_clip": "grad_clip"}.get(key, key)
        with pytest.raises(ValueError, match=field.replace(".", r"\.")):
            train(config_in(corpus, data_dir, **{"train.steps": 8, key: value}), str(tmp_path))
    after = {p: p.stat().st_mtime_ns for p in (tmp_path / "checkpoints").rglob("*")}
    assert before == after


def test_sigterm_saves_a_checkpoint_and_the_rerun_resumes(corpus, data_dir, tmp_path):
    import subprocess
    env = cli_env(data_dir)
    extra = ["--config.train.steps=160", "--config.checkpoint.every_steps=1000",
             "--config.eval.every_steps=0", "--config.pruning.interval=20"]
    proc = subprocess.Popen(train_cmd(corpus, tmp_path, *extra), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    for line in proc.stdout:  # wait until training is under way
        if line.startswith("step"):
            proc.send_signal(signal.SIGTERM)
            break
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 75  # EX_TEMPFAIL: saved, rerun to resume
    assert "SIGTERM: checkpoint saved at step" in out
    saved = int(out.split("checkpoint saved at step ")[1].split(";")[0])
    assert 0 < saved < 160 and (tmp_path / "checkpoints" / str(saved)).exists()
    assert not (tmp_path / "summary.json").exists()
    again = run_cli(train_cmd(corpus, tmp_path, *extra), env)
    assert again.returncode == 0 and f"resumed from {tmp_path}/checkpoints/{saved}" in again.stdout
    assert json.loads((tmp_path / "summary.json").read_text())["steps"] == 160


def test_finished_run_is_not_redone_and_its_summary_kept(corpus, data_dir, tmp_path):
    config = config_in(corpus, data_dir, **{"train.steps": 8, "eval.every_steps": 3})
    first = train(config, str(tmp_path))
    evals = [json.loads(x)["step"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()
             if json.loads(x)["kind"] == "eval"]
    assert evals == [3, 6, 8]  # every eval.every_steps, also off the log interval, and at the end
    again = train(config, str(tmp_path))
    assert again == json.loads((tmp_path / "summary.json").read_text())
    assert again["final_train_loss"] == first["final_train_loss"] is not None
    assert again["n_avg_realised"] == first["n_avg_realised"]
