"""Export to and import from Hugging Face LLaMA, verified against the installed transformers/torch."""
from __future__ import annotations

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from hf_fixtures import train_tiny_run  # noqa: E402
from jaxsparse import models  # noqa: E402
from jaxsparse.errors import ConfigError  # noqa: E402
from jaxsparse.generate import generate_ids, settings_for  # noqa: E402
from jaxsparse.hf.load import load_params  # noqa: E402
from jaxsparse.hf.convert import LAYER_TENSORS, TOP_TENSORS, block_leaf, get_path  # noqa: E402
from jaxsparse.hf.export import write_export  # noqa: E402
from jaxsparse.inference.restore import load_run  # noqa: E402
from jaxsparse.train.workdir.layout import read_summary  # noqa: E402
from jaxsparse.train.workdir.records import read_records  # noqa: E402
from train_utils import restore_raw_state  # noqa: E402


@pytest.fixture(scope="module", params=["layers", "scanned"])
def exported(request, tmp_path_factory):
    """(run, export dir) of a trained tiny run, non-scanned and nn.scan-stacked."""
    root = tmp_path_factory.mktemp(f"hf_{request.param}")
    workdir = train_tiny_run(root, "run", **{"model.scan_layers": request.param == "scanned"})
    run = load_run(str(workdir))
    out = root / "export"
    write_export(run, str(out), summary=read_summary(str(workdir)), records=read_records(str(workdir)))
    return run, out


def _hf_model(out):
    model = transformers.AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32)
    return model.eval()


def _corpus_text(exported) -> str:
    run, out = exported
    files = sorted((out.parent / "corpus").glob("*.txt"))
    return files[0].read_text(encoding="utf-8")


def test_exported_logits_equal_ours_on_random_and_real_tokens(exported):
    run, out = exported
    model = _hf_model(out)
    assert type(model).__name__ == "LlamaForCausalLM"
    tok = run.tokenizer
    rng = np.random.default_rng(0)
    random_batch = rng.integers(0, run.model_cfg.vocab_size, size=(4, run.model_cfg.max_seq_len))
    ids = [tok.bos_id] + tok.encode(_corpus_text(exported))
    width = run.model_cfg.max_seq_len
    real_batch = np.asarray([ids[i * width:(i + 1) * width] for i in range(4)])
    ours_fn = jax.jit(lambda t: models.Transformer(run.model_cfg).apply(
        {"params": run.params, "masks": run.masks}, t))
    for batch in (random_batch, real_batch):
        ours = np.asarray(ours_fn(jnp.asarray(batch, jnp.int32)))
        with torch.no_grad():
            theirs = model(torch.tensor(batch, dtype=torch.long)).logits.numpy()
        assert theirs.shape == ours.shape
        np.testing.assert_allclose(theirs, ours, atol=1e-4, rtol=0)


def test_every_exported_linear_weight_has_its_masks_sparsity(exported):
    from safetensors.numpy import load_file

    run, out = exported
    tensors = load_file(str(out / "model.safetensors"))
    masks = jax.device_get(run.masks)
    checked = 0
    for path, name, linear in TOP_TENSORS:
        mask = get_path(masks, path)
        if linear:
            assert np.sum(tensors[name] == 0.0) == np.sum(~np.asarray(mask))  # zero fraction = sparsity
            assert np.all((tensors[name] == 0.0) == ~np.asarray(mask).T)
            checked += 1
    for i in range(run.model_cfg.n_layers):
        for path, name, linear in LAYER_TENSORS:
            mask = block_leaf(run.model_cfg, masks, i, path)
            if linear:
                w = tensors[f"model.layers.{i}.{name}"]
                assert np.sum(w == 0.0) == np.sum(~mask)
                assert np.all((w == 0.0) == ~mask.T)  # pruned exactly where the mask says
                checked += 1
    assert checked == 1 + 7 * run.model_cfg.n_layers
    overall = np.mean([np.mean(~np.asarray(m)) for m in jax.tree.leaves(masks)])
    assert overall > 0.5  # the run was pruned (final sparsity 0.75, global scope)
    config = json.loads((out / "config.json").read_text())
    assert config["vocab_size"] == run.model_cfg.vocab_size and config["tie_word_embeddings"] is False
    card = (out / "README.md").read_text()
    assert "N̄" in card and "model.layers.0.self_attn.q_proj.weight" in card and "0.7500" in card


def test_autotokenizer_gives_our_ids_on_real_text(exported):
    run, out = exported
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(out))
    text = _corpus_text(exported)[:3000] + "\n  café ∑ 漢字 😀\n"
    ours = [run.tokenizer.bos_id] + run.tokenizer.encode(text)
    assert hf_tok(text)["input_ids"] == ours
    assert hf_tok.decode(ours, skip_special_tokens=True) == text


def test_sentencepiece_tokenizer_export_matches_on_real_text(exported, tmp_path):
    from jaxsparse.data.tokenizer import train_sentencepiece
    from jaxsparse.hf.tokenizer import write_tokenizer

    text = _corpus_text(exported)
    sp = train_sentencepiece([text + "\n\nCafé ünïcode ∑ x"], vocab_size=320, max_chars=200_000)
    write_tokenizer(sp, str(tmp_path))
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    samples = [text[i:i + 400] for i in range(0, 8000, 400)]
    samples += ["  two leading spaces", " one", "\nnewline first", "a\n\n b  ", "é∑ 漢字 😀 end ", ""]
    for sample in samples:
        assert hf_tok(sample)["input_ids"] == [sp.bos_id] + sp.encode(sample), repr(sample)
        assert hf_tok.decode(hf_tok(sample)["input_ids"], skip_special_tokens=True) == sample


def test_hf_greedy_generate_equals_jaxsparse_generate(exported):
    run, out = exported
    model = _hf_model(out)
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(out))
    for prompt in ("the ", "wet old "):
        ids = hf_tok(prompt, return_tensors="pt")["input_ids"]
        new = run.model_cfg.max_seq_len - ids.shape[1]
        with torch.no_grad():
            theirs = model.generate(ids, max_new_tokens=new, do_sample=False)[0, ids.shape[1]:].tolist()
        ours = generate_ids(run, [ids[0].tolist()], settings_for(run, new, temperature=0.0))[0]
        assert theirs[:len(ours)] == ours
        assert len(ours) == new or ours[-1] == run.tokenizer.eos_id


def test_import_gives_bitwise_equal_params(exported):
    run, out = exported
    imported = load_params(f"hf:{out}", run.model_cfg)
    params = jax.device_get(run.params)
    flat_ours = jax.tree_util.tree_flatten_with_path(params)[0]
    flat_imported = dict(jax.tree_util.tree_flatten_with_path(imported)[0])
    assert len(flat_ours) == len(flat_imported)
    for path, value in flat_ours:
        got = flat_imported[path]
        assert got.dtype == value.dtype and np.array_equal(got.view(np.uint32), np.asarray(value).view(np.uint32)), path


def test_import_refuses_another_architecture_and_mismatched_shapes(exported, tmp_path):
    run, out = exported
    other = tmp_path / "other"
    shutil.copytree(out, other)
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "model_type": "gpt2",
                                                   "architectures": ["GPT2LMHeadModel"]}))
    with pytest.raises(ConfigError, match="only LLaMA checkpoints"):
        load_params(f"hf:{other}", run.model_cfg)
    (other / "config.json").write_text(json.dumps(config))
    from safetensors.numpy import load_file, save_file
    tensors = load_file(str(other / "model.safetensors"))
    tensors["model.layers.1.mlp.up_proj.weight"] = tensors["model.layers.1.mlp.up_proj.weight"][:-1]
    save_file(tensors, str(other / "model.safetensors"), metadata={"format": "pt"})
    mlp = run.model_cfg.mlp_dim
    with pytest.raises(ConfigError, match=rf"model.layers.1.mlp.up_proj.weight has shape \[{mlp - 1}, 64\].*"
                                          rf"needs \[{mlp}, 64\]"):
        load_params(f"hf:{other}", run.model_cfg)
    with pytest.raises(ConfigError, match="hidden_size=64, but the trainer config's model has 32"):
        load_params(f"hf:{out}", models.get_config("test", d_model=32, vocab_size=384))


def test_a_training_run_starts_from_imported_params(exported, tmp_path):
    from jaxsparse.train import train
    from train_utils import tiny_config

    run, out = exported
    corpus = out.parent / "corpus"
    overrides = {"data.data_dir": str(out.parent / "data"), "train.steps": 1, "model.init_from": f"hf:{out}",
                 "model.scan_layers": run.model_cfg.scan_layers, "pruning.schedule": "dense",
                 "pruning.final_sparsity": 0.0, "train.learning_rate": 1e-30, "train.weight_decay": 0.0,
                 "eval.every_steps": 0, "checkpoint.every_steps": 1}
    train(tiny_config(corpus, **overrides), str(tmp_path / "run"))
    saved = restore_raw_state(tmp_path / "run", 1)["params"]
    want = jax.device_get(run.params)
    for (path, value), got in zip(jax.tree_util.tree_flatten_with_path(want)[0], jax.tree.leaves(saved)):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(value), err_msg=str(path))


def test_export_cli_is_atomic_and_refuses_bad_input(exported, tmp_path, capsys):
    from jaxsparse.export import main
    from jaxsparse.train import train
    from train_utils import tiny_config

    run, out = exported
    target = tmp_path / "model"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    empty = tmp_path / "no_run"
    empty.mkdir()
    for args, message in ((["--workdir", run.workdir, "--out", str(target)], "already exists; pass --overwrite"),
                          (["--workdir", str(empty), "--out", str(tmp_path / "new")], "holds no checkpoints"),
                          (["--workdir", run.workdir, "--out", str(tmp_path / "new"), "--step", "5"],
                           "saved steps: 6, 12")):
        status = main(args)
        err = capsys.readouterr().err
        assert status == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert (target / "keep.txt").read_text() == "mine" and not (tmp_path / "new").exists()
    status = main(["--workdir", run.workdir, "--out", str(target), "--overwrite"])  # only an export
    assert status == 2 and "holds no jaxsparse-export.json" in capsys.readouterr().err
    assert (target / "keep.txt").read_text() == "mine"
    shutil.rmtree(target)
    assert main(["--workdir", run.workdir, "--out", str(target)]) == 0
    capsys.readouterr()
    assert main(["--workdir", run.workdir, "--out", str(target), "--overwrite", "--step", "6"]) == 0
    assert json.loads(capsys.readouterr().out)["step"] == 6
    assert (target / "model.safetensors").exists() and (target / "jaxsparse-export.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "no_run"]  # no temporary folder left

    bad = tiny_config(out.parent / "corpus", **{"data.data_dir": str(out.parent / "data"),
                                                "model.d_model": 32, "model.init_from": f"hf:{out}"})
    with pytest.raises(ConfigError, match="hidden_size=64, but the trainer config's model has 32"):
        train(bad, str(tmp_path / "bad_run"))
    assert not (tmp_path / "bad_run" / "checkpoints").exists()


def test_export_refuses_a_garbled_metrics_line_as_the_trainer_does(exported, tmp_path, capsys):
    from jaxsparse.export import main

    run, _ = exported
    work = tmp_path / "run"
    shutil.copytree(run.workdir, work)
    metrics = work / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    metrics.write_text("\n".join([lines[0], "{garbled", *lines[1:]]) + "\n")
    code = main(["--workdir", str(work), "--out", str(tmp_path / "model"), "--step", "6"])
    err = capsys.readouterr().err
    assert code == 2 and f"{metrics}: line 2 is not a JSON record" in err, err
    assert not (tmp_path / "model").exists()
