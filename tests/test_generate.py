"""jaxsparse.generate: KV-cache decoding equals full forward passes; batching, sharding, sampling, CLI."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hf_fixtures import train_tiny_run
from jaxsparse import models
from jaxsparse.generate import generate_ids, main, settings_for
from jaxsparse.inference.restore import load_run
from train_utils import REPO, cli_env


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return train_tiny_run(tmp_path_factory.mktemp("gen"))


@pytest.fixture(scope="module")
def run(workdir):
    return load_run(str(workdir))


def _greedy_by_full_forward(run, prompt_ids, steps):
    """Argmax of a full forward pass over the growing prefix (no cache), padding ids excluded."""
    model = models.Transformer(run.model_cfg)
    apply = jax.jit(lambda p, m, t: model.apply({"params": p, "masks": m}, t))
    seq, out = list(prompt_ids), []
    for _ in range(steps):
        logits = np.asarray(apply(run.params, run.masks, jnp.asarray([seq], jnp.int32)))
        token = int(np.argmax(logits[0, -1, :run.tokenizer.vocab_size]))
        out.append(token)
        seq.append(token)
        if token == run.tokenizer.eos_id:
            break
    return out


def test_greedy_decoding_equals_argmax_of_full_forward_passes(run):
    tok = run.tokenizer
    prompt = [tok.bos_id] + tok.encode("the wind ")
    steps = run.model_cfg.max_seq_len - len(prompt)  # fill the whole context
    got = generate_ids(run, [prompt], settings_for(run, steps, temperature=0.0))[0]
    want = _greedy_by_full_forward(run, prompt, steps)
    assert got == want
    assert len(got) == steps or got[-1] == tok.eos_id


def test_a_left_padded_batch_equals_each_prompt_alone(run):
    tok = run.tokenizer
    prompts = [[tok.bos_id] + tok.encode(t) for t in ("a", "the old man said ", "", "wet ")]
    settings = settings_for(run, 10, temperature=0.0)
    together = generate_ids(run, prompts, settings)
    alone = [generate_ids(run, [p], settings)[0] for p in prompts]
    assert together == alone
    assert len({tuple(x) for x in together}) > 1


def test_generation_is_the_same_on_a_data_fsdp_tensor_mesh(workdir, run):
    sharded = load_run(str(workdir), mesh_shape=(2, 2, 2))
    kernel = sharded.params["layers_0"]["attn"]["q"]["kernel"]
    assert kernel.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor")
    tok = run.tokenizer
    prompts = [[tok.bos_id] + tok.encode(t) for t in ("one ", "two words ")]
    for s in (settings_for(run, 12, 0.0), settings_for(run, 12, 1.0, top_k=5)):
        assert generate_ids(sharded, prompts, s, seed=3) == generate_ids(run, prompts, s, seed=3)


def test_sampling_follows_seed_top_k_and_top_p(run):
    tok = run.tokenizer
    prompt = [[tok.bos_id] + tok.encode("the ")]
    greedy = generate_ids(run, prompt, settings_for(run, 16, 0.0))
    assert generate_ids(run, prompt, settings_for(run, 16, 1.0, top_k=1), seed=5) == greedy
    assert generate_ids(run, prompt, settings_for(run, 16, 1.0, top_p=1e-6), seed=5) == greedy
    hot = settings_for(run, 16, 2.0)
    a, b = (generate_ids(run, prompt, hot, seed=s)[0] for s in (1, 2))
    assert a == generate_ids(run, prompt, hot, seed=1)[0]
    assert a != b
    assert all(t < tok.vocab_size for t in a + b)  # never a padding id of the vocabulary


def _cli(args, env, timeout=300):
    return subprocess.run([sys.executable, "-m", "jaxsparse.generate", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def test_cli_prompts_file_json_and_bad_input(workdir, run, tmp_path, capsys):
    env = cli_env(workdir.parent / "data")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("the \n\nold man \n", encoding="utf-8")
    done = _cli([f"--workdir={workdir}", f"--prompts_file={prompts}", "--max_new_tokens=8",
                 "--temperature=0", "--json"], env)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["prompt"] for r in rows] == ["the ", "old man "]
    tok = run.tokenizer
    want = generate_ids(run, [[tok.bos_id] + tok.encode(r["prompt"]) for r in rows], settings_for(run, 8, 0.0))
    assert [r["ids"] for r in rows] == want

    empty = tmp_path / "empty"
    empty.mkdir()
    tampered = tmp_path / "tampered"
    shutil.copytree(workdir, tampered)
    meta_file = tampered / "checkpoints" / "12" / "meta" / "metadata"
    meta = json.loads(meta_file.read_text())
    meta["config"]["model"]["d_model"] = 32  # a checkpoint whose config is not the one its arrays have
    meta["identity"].update({"model.d_model": 32, "model.head_dim": 8, "model.mlp_dim": 128})
    meta_file.write_text(json.dumps(meta))
    cases = {
        f"--workdir={empty}": "holds no checkpoints",
        f"--workdir={workdir} --step=7": "saved steps: 6, 12",
        f"--workdir={workdir} --max_new_tokens=200": "exceeds the model's context",
        f"--workdir={workdir} --top_p=0": "--top_p=0.0",
        f"--workdir={workdir} --prompt=\udcff": "not valid Unicode",
        f"--workdir={tampered} --step=12": "(step 12) is damaged: checksum mismatch in meta",
    }
    for args, message in cases.items():
        status = main(args.split(" "))
        err = capsys.readouterr().err
        assert status == 2, (args, err)
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert list(empty.iterdir()) == []  # nothing written


def test_default_new_tokens_are_capped_at_the_context_left_and_said(workdir, run, capsys):
    context = run.model_cfg.max_seq_len
    prompt = "the old man "
    prompt_len = 1 + len(run.tokenizer.encode(prompt))
    assert context - prompt_len < 128  # the default would not fit: generate must cap it, not refuse
    assert main([f"--workdir={workdir}", f"--prompt={prompt}", "--temperature=0", "--json"]) == 0
    out, err = capsys.readouterr()
    row = json.loads(out)
    assert 1 <= len(row["ids"]) <= context - prompt_len
    assert f"at most {context - prompt_len} new tokens" in err and "--max_new_tokens" in err
    status = main([f"--workdir={workdir}", "--prompt=" + "the old man " * context])  # no room left
    assert status == 2 and "fills the model's context" in capsys.readouterr().err


def test_completion_text_decodes_new_tokens_in_context(tmp_path):
    from jaxsparse.data.tokenizer import train_sentencepiece
    from jaxsparse.generate import completion_text
    from train_utils import write_corpus

    texts = [p.read_text(encoding="utf-8") for p in sorted(write_corpus(tmp_path, files=2).glob("*.txt"))]
    sp = train_sentencepiece(texts, vocab_size=300)
    prompt, rest = "the wind", " blows over the hills\nand away"
    ids = [sp.bos_id] + sp.encode(prompt)
    new = sp.encode(prompt + rest)[len(ids) - 1:] + [sp.eos_id]
    assert sp.encode(prompt + rest)[:len(ids) - 1] == ids[1:]  # the prompt's pieces are a prefix
    assert completion_text(sp, ids, new) == rest
    assert sp.decode(new[:-1]) != rest  # alone, the leading space would be lost
