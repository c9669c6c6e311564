"""Two processes on 127.0.0.1 (gloo), four fake CPU devices each, against one 8-device process."""
from __future__ import annotations

import socket
import subprocess

import numpy as np

from jaxsparse import data as data_lib
from jaxsparse import models
from test_train_sharding import run_steps
from train_utils import cli_env, tiny_config, train_cmd, train_losses, write_corpus

STEPS = 6
OVERRIDES = {"train.steps": STEPS, "pruning.interval": 1, "pruning.start": 0.0,
             "pruning.end": 0.5, "train.log_every_steps": 1, "eval.batches": 1}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_single_process_eight_devices(tmp_path):
    corpus = write_corpus(tmp_path / "corpus")
    data_dir = tmp_path / "data"
    config = tiny_config(corpus, **{"data.data_dir": str(data_dir), **OVERRIDES})
    # Reference: one process, 8 devices, global batch = process 0's rows then process 1's.
    iters = [data_lib.make_train_iterator(config.data, seq_len=config.train.seq_len,
                                          global_batch_size=config.train.batch_size,
                                          process_index=p, process_count=2, seed=config.seed)
             for p in range(2)]
    batches = [{k: np.concatenate([a[k], b[k]]) for k in a}
               for a, b in ([next(it) for it in iters] for _ in range(STEPS))]
    _, _, want = run_steps(config, batches, models.make_mesh(8, 1, 1))

    workdir = tmp_path / "run"
    port = _free_port()
    env = cli_env(data_dir, devices=4)
    extra = [f"--config.{k}={v}" for k, v in OVERRIDES.items()]
    procs = [subprocess.Popen(
        train_cmd(corpus, workdir, *extra, f"--coordinator_address=127.0.0.1:{port}",
                  "--num_processes=2", f"--process_id={i}"),
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    got = train_losses(workdir)
    assert sorted(got) == list(range(1, STEPS + 1))
    np.testing.assert_allclose([got[s] for s in range(1, STEPS + 1)], want, rtol=0, atol=1e-5)
    assert (workdir / "summary.json").exists()
    # only process 0 reports (gloo prints its own connection lines on every process)
    assert "done: eval loss" in outs[0][0] and "done: eval loss" not in outs[1][0]
    assert "loss" not in outs[1][0]
