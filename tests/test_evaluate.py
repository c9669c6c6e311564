"""jaxsparse.evaluate: loss, perplexity and bits per byte over a whole split."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from hf_fixtures import train_tiny_run
from jaxsparse import models
from jaxsparse.data import open_splits
from jaxsparse.data.packing import TokenizeDocument
from jaxsparse.evaluate import evaluate
from jaxsparse.inference.restore import load_run
from train_utils import REPO, cli_env


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return load_run(str(train_tiny_run(tmp_path_factory.mktemp("eval"))))


def _reference(run, split):
    """Nats, predicted tokens and bytes from one plain loop over the split's windows."""
    _, sources = open_splits(run.config.data)
    texts = [TokenizeDocument.text_of(sources[split][i]) for i in range(len(sources[split]))]
    tok, seq = run.tokenizer, run.model_cfg.max_seq_len
    stream = [t for text in texts for t in [tok.bos_id, *tok.encode(text), tok.eos_id]]
    apply = jax.jit(lambda t: models.Transformer(run.model_cfg).apply({"params": run.params, "masks": run.masks}, t))
    nats, count = 0.0, 0
    for start in range(0, len(stream) - 1, seq):
        window = stream[start:start + seq + 1]
        logits = apply(jnp.asarray([window[:-1]], jnp.int32))
        ce = optax.softmax_cross_entropy_with_integer_labels(logits[0], jnp.asarray(window[1:]))
        nats, count = nats + float(jnp.sum(ce)), count + len(window) - 1
    return nats, count, sum(len(t.encode("utf-8")) for t in texts), len(stream)


@pytest.mark.parametrize("split", ["validation", "train"])
def test_figures_cover_the_whole_split_and_match_a_plain_loop(run, split):
    nats, count, n_bytes, n_stream = _reference(run, split)
    got = evaluate(run, split=split)
    assert got["tokens"] == count == n_stream - 1  # every token but the first, once
    assert got["bytes"] == n_bytes
    assert got["loss"] == pytest.approx(nats / count, rel=1e-5)
    assert got["perplexity"] == pytest.approx(math.exp(nats / count), rel=1e-5)
    assert got["bits_per_byte"] == pytest.approx(nats / (math.log(2) * n_bytes), rel=1e-5)
    if split == "validation":  # padding rows and a short last batch change nothing
        assert evaluate(run, split=split, batch_size=24)["loss"] == pytest.approx(got["loss"], rel=1e-5)


def test_cli_prints_json_and_progress_and_refuses_bad_input(run, tmp_path, capsys):
    from jaxsparse.evaluate import main

    out = tmp_path / "eval.json"
    evaluate(run, split="validation", batch_size=8, progress_every_s=0.0)
    assert "ETA" in capsys.readouterr().err
    env = cli_env(tmp_path.parent / "data")
    env["JAXSPARSE_DATA_DIR"] = str(run.config.data.data_dir)
    done = subprocess.run([sys.executable, "-m", "jaxsparse.evaluate", f"--workdir={run.workdir}",
                           f"--out={out}"], env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert printed == json.loads(out.read_text()) | {"seconds": printed["seconds"]}
    assert printed["loss"] == pytest.approx(evaluate(run)["loss"], rel=1e-5)
    assert main([f"--workdir={run.workdir}", "--split=test"]) == 2
    assert "has splits ['train', 'validation']" in capsys.readouterr().err
    assert np.isfinite(printed["bits_per_byte"])
