"""launch/slurm/train.sbatch and the trainer under SLURM: the srun line the script builds, and two
local CPU processes that join one job from SLURM's environment alone (no coordinator flags).

No SLURM is needed: the script is run with DRY_RUN=1 and the variables sbatch would set, and the
command it would hand to srun is started twice with the variables srun gives each task."""
from __future__ import annotations

import os
import random
import shlex
import shutil
import socket
import subprocess

import numpy as np
import pytest
from train_utils import REPO, cli_env, run_cli, train_cmd, train_losses, wait_all, write_corpus

SBATCH = REPO / "launch" / "slurm" / "train.sbatch"
STEPS = 10
EXTRA = [f"--config.train.steps={STEPS}", "--config.train.log_every_steps=1", "--config.eval.every_steps=0",
         "--config.eval.batches=1", "--config.checkpoint.every_steps=0"]
# JAX's SLURM detection takes the coordinator port from the job id: 61440 + SLURM_JOB_ID % 4096
PORT_BASE = 65536 - 4096


def _sbatch(*command: str, **env: str) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    full.update(env, DRY_RUN="1")
    return subprocess.run([shutil.which("bash"), str(SBATCH), *command], capture_output=True, text=True,
                          env=full, cwd=REPO, timeout=30)


def _srun_command(out: subprocess.CompletedProcess) -> list[str]:
    assert out.returncode == 0, out.stderr
    srun = shlex.split(out.stdout.splitlines()[-1])
    assert srun[0] == "srun" and "--kill-on-bad-exit=1" not in srun, out.stdout
    return srun[1:]


def test_sbatch_directives_come_before_the_first_command():
    # sbatch stops reading #SBATCH lines at the first line that is not a comment
    lines = SBATCH.read_text().splitlines()
    first_command = next(i for i, line in enumerate(lines) if line.strip() and not line.startswith("#"))
    directives = [i for i, line in enumerate(lines) if line.startswith("#SBATCH")]
    assert directives and max(directives) < first_command
    assert "#SBATCH --ntasks-per-node=8" in lines and "#SBATCH --gpus-per-node=8" in lines


def test_sbatch_runs_the_command_under_srun_one_process_per_gpu_or_per_node(tmp_path):
    command = ["python3", "-m", "jaxsparse.train", "--config=configs/tiny.py", "--workdir=/shared/runs/a b"]
    per_gpu = _sbatch(*command, SLURM_JOB_ID="7", SLURM_SUBMIT_DIR=str(tmp_path),
                      SLURM_NTASKS_PER_NODE="8", SLURM_GPUS_ON_NODE="8")
    assert per_gpu.stdout.splitlines() == [
        "srun python3 -m jaxsparse.train --config=configs/tiny.py "
        r"--workdir=/shared/runs/a\ b"]
    assert _srun_command(per_gpu) == command
    per_node = _sbatch(*command, SLURM_JOB_ID="7", SLURM_SUBMIT_DIR=str(tmp_path),
                       SLURM_NTASKS_PER_NODE="1", SLURM_GPUS_ON_NODE="4")
    assert per_node.stdout.splitlines()[0] == "export JAX_LOCAL_DEVICE_IDS=0,1,2,3"
    assert _srun_command(per_node) == command


@pytest.mark.parametrize("args, env, message", [
    ([], {"SLURM_JOB_ID": "7"}, "error: no command: give it after the script"),
    (["python3", "-m", "jaxsparse.train"], {}, "error: SLURM_JOB_ID is not set: submit this script with sbatch"),
])
def test_sbatch_refuses_a_missing_command_or_allocation(args, env, message):
    out = _sbatch(*args, **env)
    assert out.returncode == 2 and out.stdout == "" and message in out.stderr, out.stderr


def _coordinator_port() -> int:
    """A free port that SLURM's port rule gives for some job id."""
    for port in random.Random().sample(range(PORT_BASE, 65536), 200):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in SLURM's coordinator range")


def _slurm_task(base: dict, job_id: int, proc: int, tasks: int) -> dict:
    """The environment srun gives task `proc` of a one-node step on this machine."""
    return dict(base, SLURM_JOB_ID=str(job_id), SLURM_STEP_NODELIST="127.0.0.1", SLURM_STEP_NUM_NODES="1",
                SLURM_NTASKS=str(tasks), SLURM_NTASKS_PER_NODE=str(tasks), SLURM_PROCID=str(proc),
                SLURM_LOCALID=str(proc))


def _losses(workdir) -> list[float]:
    got = train_losses(workdir)
    assert sorted(got) == list(range(1, STEPS + 1))
    return [got[s] for s in range(1, STEPS + 1)]


def test_two_slurm_tasks_train_like_one_process(tmp_path):
    corpus = write_corpus(tmp_path / "corpus", files=4, paragraphs=20)
    data_dir = tmp_path / "data"
    single = tmp_path / "single"
    out = run_cli(train_cmd(corpus, single, *EXTRA), cli_env(data_dir, devices=2))
    assert out.returncode == 0, out.stderr[-3000:]
    want = _losses(single)
    assert len(set(want)) == STEPS  # each step sees its own batch

    double = tmp_path / "double"
    port = _coordinator_port()
    command = _srun_command(_sbatch(*train_cmd(corpus, double, *EXTRA), SLURM_JOB_ID=str(port - PORT_BASE),
                                    SLURM_SUBMIT_DIR=str(REPO), SLURM_NTASKS_PER_NODE="2"))
    assert not any(a.startswith(("--coordinator_address", "--num_processes", "--process_id")) for a in command)
    base = cli_env(data_dir, devices=1)
    procs = [subprocess.Popen(command, env=_slurm_task(base, port - PORT_BASE, i, 2), cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = wait_all(procs)
    # one job of two processes: only process 0 reports, and the losses are the one-process run's
    assert "done: eval loss" in outs[0][0] and "loss" not in outs[1][0]
    np.testing.assert_allclose(_losses(double), want, rtol=0, atol=1e-6)


def test_a_garbled_slurm_task_count_is_one_line_and_exit_2(tmp_path):
    env = dict(_slurm_task(cli_env(tmp_path / "data", devices=1), 7, 0, 2), SLURM_NTASKS="2(x2)")
    out = run_cli(train_cmd(tmp_path / "corpus", tmp_path / "run", *EXTRA), env, timeout=120)
    assert out.returncode == 2, out.stderr[-2000:]
    assert out.stderr.strip().splitlines()[-1] == "error: SLURM_NTASKS='2(x2)': expected a number of tasks"
    assert not (tmp_path / "run").exists()
