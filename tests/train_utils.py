"""Shared helpers of the trainer tests: a tiny corpus, tiny configs, CLI runs, reference runs."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np

REPO = Path(__file__).resolve().parents[1]


def write_corpus(root: Path, files: int = 12, paragraphs: int = 40, seed: int = 0) -> Path:
    """A deterministic plain-text corpus (about 200 KB) of random words."""
    rng = np.random.default_rng(seed)
    words = ["".join(rng.choice(list("etaoinshrdlucmfw"), size=int(rng.integers(2, 7))))
             for _ in range(200)]
    root.mkdir(parents=True, exist_ok=True)
    for f in range(files):
        paras = [" ".join(rng.choice(words, size=int(rng.integers(20, 60))))
                 for _ in range(paragraphs)]
        (root / f"doc_{f}.txt").write_text("\n\n".join(paras) + "\n", encoding="utf-8")
    return root


def tiny_config(corpus: Path, **overrides):
    """configs/tiny.py on `corpus` (bytes tokenizer), with dotted-key overrides."""
    sys.path.insert(0, str(REPO / "configs"))
    try:
        import tiny  # noqa: PLC0415
    finally:
        sys.path.pop(0)
    config = tiny.get_config(f"corpus={corpus}")
    for key, value in overrides.items():
        node = config
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return config


def cli_env(data_dir: Path, devices: int = 8) -> dict:
    env = dict(os.environ)
    env["JAXSPARSE_DATA_DIR"] = str(data_dir)
    env["JAX_PLATFORMS"] = "cpu"
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def train_cmd(corpus: Path, workdir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "jaxsparse.train", f"--config={REPO}/configs/tiny.py:corpus={corpus}",
            f"--workdir={workdir}", *extra]


def run_cli(args: list[str], env: dict, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(args, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)


# The run of the two-process tests (tests/train/loop/test_multihost.py and
# tests/train/workdir/test_checkpoint_multihost.py): one config, so that its steps, compiled for two
# processes of 4 devices, come from the session's compilation cache after the first of them.
TWO_PROCESS_STEPS, TWO_PROCESS_CKPT = 6, 3
TWO_PROCESS_OVERRIDES = {
    "train.steps": TWO_PROCESS_STEPS, "pruning.interval": 1, "pruning.start": 0.0, "pruning.end": 0.5,
    "train.log_every_steps": 1, "eval.batches": 1, "eval.every_steps": 0,
    "checkpoint.every_steps": TWO_PROCESS_CKPT, "checkpoint.async_save": False}


def two_processes(corpus: Path, workdir: Path, data_dir: Path, expect: int = 0) -> list[tuple[str, str]]:
    """(stdout, stderr) of each of two trainer processes (4 CPU devices each, 127.0.0.1, gloo) running
    TWO_PROCESS_OVERRIDES on `corpus` in `workdir`; each must exit with `expect`."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    extra = [f"--config.{k}={v}" for k, v in TWO_PROCESS_OVERRIDES.items()]
    procs = [subprocess.Popen(
        train_cmd(corpus, workdir, *extra, f"--coordinator_address=127.0.0.1:{port}",
                  "--num_processes=2", f"--process_id={i}"),
        env=cli_env(data_dir, devices=4), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(2)]
    return wait_all(procs, expect)


def wait_all(procs: list[subprocess.Popen], expect: int = 0) -> list[tuple[str, str]]:
    """(stdout, stderr) of each of `procs` (started with text pipes), each of which must exit with
    `expect` within 300 s; none outlives this call."""
    try:
        outs = [p.communicate(timeout=300) for p in procs]
    finally:  # a hung process must not outlive the test
        for p in procs:
            p.kill()
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == expect, err[-3000:]
    return outs


def train_losses(workdir: Path) -> dict[int, float]:
    """step -> logged train loss (the last record of each step wins, as after a resume)."""
    out = {}
    for line in (workdir / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec["kind"] == "train":
            out[rec["step"]] = rec["loss"]
    return out


def restore_raw_state(workdir: Path, step: int | None = None) -> dict:
    """The saved TrainState of a workdir as nested numpy containers (no target needed)."""
    import orbax.checkpoint as ocp
    ckpt_dir = workdir / "checkpoints"
    if step is None:
        step = max(int(p.name) for p in ckpt_dir.iterdir() if p.name.isdigit())
    return ocp.StandardCheckpointer().restore(ckpt_dir / str(step) / "state")


def find_key(tree, key):
    """The first value stored under `key` anywhere in nested dicts/lists."""
    if isinstance(tree, dict):
        if key in tree:
            return tree[key]
        children = tree.values()
    elif isinstance(tree, (list, tuple)):
        children = tree
    else:
        return None
    for child in children:
        hit = find_key(child, key)
        if hit is not None:
            return hit
    return None


def flat(tree) -> dict[str, np.ndarray]:
    return {jax.tree_util.keystr(p): np.asarray(v)
            for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


# Damage to a checkpoint directory, as a disk or a person might do it.
def data_files(step_dir: Path) -> list[Path]:
    files = [p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
    return sorted(files, key=lambda p: p.stat().st_size, reverse=True)


def flip_bit(step_dir: Path) -> None:
    path = data_files(step_dir)[0]
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x10
    path.write_bytes(bytes(raw))


def truncate(step_dir: Path) -> None:
    path = data_files(step_dir)[0]
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


def garbage_meta(step_dir: Path) -> None:
    (step_dir / "meta" / "metadata").write_bytes(b"\x00\x17not json{{")


def config_in(corpus: Path, data_dir: Path, **overrides):
    """`tiny_config` on `corpus` with its tfds data built in `data_dir`."""
    return tiny_config(corpus, **{"data.data_dir": str(data_dir), **overrides})
