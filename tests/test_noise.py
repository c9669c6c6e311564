"""What reaches a command line's console (`jaxsparse.noise`): on this machine without a TPU, with
libtpu from `[tpu]` installed, no libtpu start-up probe and no tensorflow-datasets chatter; the trainer's
output starts with its start-up line, `generate`'s with the text and `evaluate`'s with its JSON."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from jaxsparse import noise
from jaxsparse.errors import EXIT_BAD_INPUT, EXIT_OK
from test_entry_points import BAD_ARGUMENTS
from train_utils import REPO, cli_env, run_cli, train_cmd, write_corpus

NOISE = re.compile(r"libtpu|TPU_|InitGoogle|common_lib|Using custom data configuration|Downloading and "
                   r"preparing|downloaded and prepared|Generating splits|examples/s|\r")


def _user_env(data_dir) -> dict:
    """A user's environment: JAX picks its platform itself (no JAX_PLATFORMS, one CPU device)."""
    env = cli_env(data_dir)
    for key in ("JAX_PLATFORMS", "XLA_FLAGS", *(k for k, _ in noise.NO_TPU_ENV)):
        env.pop(key, None)
    return env


@pytest.fixture(scope="module")
def no_tpu_here():
    pytest.importorskip("libtpu", reason="the console is quieted for libtpu from .[tpu]")
    if noise.tpu_chips_present():
        pytest.skip("this machine has TPU chips: libtpu starts for real")


@pytest.mark.trainer
def test_train_generate_evaluate_print_only_their_own_lines(tmp_path, no_tpu_here):
    env = _user_env(tmp_path / "cache" / "tfds")  # a fresh data cache: the corpus is built
    probe = subprocess.run([sys.executable, "-c", "import jax; jax.devices()"], capture_output=True, text=True,
                           env={**env, "ALLOW_MULTIPLE_LIBTPU_LOAD": "1"}, timeout=120)  # even if another holds libtpu
    assert "TPU_WORKER_HOSTNAMES" in probe.stderr, probe.stderr  # the noise is real here, unless quieted
    corpus, workdir = write_corpus(tmp_path / "corpus", files=3, paragraphs=10), tmp_path / "run"
    train = run_cli(train_cmd(corpus, workdir, "--config.train.steps=2",
                              "--config.pruning.final_sparsity=0.5"), env)
    assert train.returncode == EXIT_OK, train.stderr[-3000:]
    assert train.stdout.startswith("test model ("), train.stdout[:500]
    generate = run_cli([sys.executable, "-m", "jaxsparse.generate", f"--workdir={workdir}", "--prompt=ab",
                        "--max_new_tokens=4"], env)
    evaluate = run_cli([sys.executable, "-m", "jaxsparse.evaluate", f"--workdir={workdir}"], env)
    assert generate.returncode == evaluate.returncode == EXIT_OK, generate.stderr + evaluate.stderr
    assert generate.stdout.startswith("ab") and json.loads(evaluate.stdout)["step"] == 2
    for out in (train, generate, evaluate):
        assert not NOISE.search(out.stdout + out.stderr), (out.stdout + out.stderr)[:3000]


def test_no_command_line_starts_jax_backends_at_import():
    """`errors.entry_point` quiets libtpu before `main`: that is early enough only while importing
    a command line's module starts no JAX backend (a module-level array would)."""
    modules = []
    for name in sorted({argv[0] for _, argv, _ in BAD_ARGUMENTS}):
        main = REPO.joinpath(*name.split("."), "__main__.py")
        if not main.exists():
            modules.append(name)
        else:  # jaxsparse.scaling's __main__ runs its command line at import: its module is cli
            modules.append(name + (".__main__" if "__name__" in main.read_text() else ".cli"))
    code = ("import importlib, sys\nfrom absl import flags\nfrom jax._src import xla_bridge\n"
            "for m in sys.argv[1:]:\n    known = set(flags.FLAGS)\n    importlib.import_module(m)\n"
            "    for name in set(flags.FLAGS) - known: delattr(flags.FLAGS, name)  # absl: one --config\n"
            "print(xla_bridge.backends_are_initialized())")
    out = subprocess.run([sys.executable, "-c", code, *modules], env=cli_env(REPO / "unused"), cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert out.stdout.strip().splitlines()[-1:] == ["False"], out.stderr[-2000:]


def test_a_corpus_refused_while_building_leaves_one_error_line_and_no_cache(tmp_path):
    """Issue 27, case 16: the refusal is a line of its own (no progress bar before it) and the
    build it interrupted leaves no empty folders and no lock under the data cache."""
    corpus = tmp_path / "one_document"
    corpus.mkdir()
    (corpus / "a.txt").write_text("a single short document\n")
    data_dir = tmp_path / "cache" / "tfds"
    out = run_cli(train_cmd(corpus, tmp_path / "run"), cli_env(data_dir))
    assert out.returncode == EXIT_BAD_INPUT, out.stderr[-3000:]
    assert out.stdout == "" and "\r" not in out.stderr, out.stdout + out.stderr
    assert re.search(r"(?m)^error: config\.data\.dataset='text:.*one_document': .*at least 2", out.stderr)
    assert not (tmp_path / "cache").exists(), sorted(os.walk(tmp_path / "cache"))
    assert not (tmp_path / "run").exists()
