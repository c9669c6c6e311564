"""Resolving a run (`jaxsparse.train.resolve.run`): once, with no compile and no file written; the
plan's N̄ derived from the realised densities; a checkpoint's model rebuilt by the same functions."""
from __future__ import annotations

import dataclasses

import pytest
from train_utils import config_in, tiny_config

from jaxsparse import data as data_lib
from jaxsparse.errors import ConfigError
from jaxsparse.pruning import average_param_count
from jaxsparse.train import prepare
from jaxsparse.train.resolve import train_config
from jaxsparse.train.resolve import run as run_lib


def _counting(monkeypatch, module, name):
    """Wrap `module.name` (our own function) so its calls are counted; returns the list of calls."""
    calls, real = [], getattr(module, name)

    def counted(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)
    monkeypatch.setattr(module, name, counted)
    return calls


def test_prepare_validates_once_loads_the_tokenizer_once_and_writes_nothing(
        corpus, tmp_path, monkeypatch):
    validations = _counting(monkeypatch, train_config, "validate")
    tokenizers = _counting(monkeypatch, data_lib, "get_tokenizer")
    config = tiny_config(corpus, **{"train.grad_accum": "auto", "data.data_dir": str(tmp_path / "data")})
    run = prepare(config)
    assert (len(validations), len(tokenizers)) == (1, 1)
    assert run.grad_accum is None  # "auto": decided by compiling, in the trainer
    assert run.plan.to_json()["memory_per_device_bytes"] == run_lib.with_grad_accum(
        run, 1).plan.to_json()["memory_per_device_bytes"]  # planned from one micro-batch
    assert run_lib.with_grad_accum(run, 2).config.train.grad_accum == 2
    assert config.train.grad_accum == "auto"  # the caller's config is left as it was
    assert not (tmp_path / "data").exists()


def test_run_fields_are_the_configs_values(corpus):
    config = tiny_config(corpus, **{"train.grad_accum": 2, "checkpoint.keep": 3, "mesh.data": 2, "mesh.tensor": 4})
    run = prepare(config)
    assert (run.grad_accum, run.batch_size, run.seq_len, run.seed) == (2, 8, 32, config.seed)
    assert (run.log_every, run.eval_every, run.eval_batches) == (4, 8, 2)
    assert (run.checkpoint_every, run.checkpoint_keep, run.tensorboard, run.plots) == (8, 3, False, False)
    stored = {f.name for f in dataclasses.fields(run)}
    assert stored.isdisjoint({"grad_accum", "batch_size", "seq_len", "seed", "data", "log_every"})  # one source
    decided = run_lib.with_grad_accum(run, 4)
    assert (decided.grad_accum, decided.config.train.grad_accum, run.grad_accum) == (4, 4, 2)
    assert decided.config.train.to_dict() == {**run.config.train.to_dict(), "grad_accum": 4}


@pytest.mark.parametrize("structure,sparsity", [("", 0.75), ("2:4", 0.5)])
def test_plan_n_avg_is_derived_from_the_realised_densities(corpus, structure, sparsity):
    run = prepare(tiny_config(corpus, **{"pruning.structure": structure,
                                         "pruning.final_sparsity": sparsity}))
    p = run.plan
    want = average_param_count(run.schedule, run.steps, p.params.prunable, p.params.other,
                               structure or None)
    assert (p.n_avg, p.n_avg_prunable) == (want.total, want.prunable)
    assert "n_avg" not in {f.name for f in dataclasses.fields(p)}  # derived, never stored


def test_a_checkpoints_model_is_rebuilt_by_the_runs_own_resolution(corpus):
    run = prepare(tiny_config(corpus))
    saved = dict(run.identity)
    model_cfg, model, tx = run_lib.resolve_saved(run.config, saved, "ckpt")
    assert model_cfg == run.model_config and type(model) is type(run.model)
    saved["model.d_model"] = run.model_config.d_model * 2
    with pytest.raises(ConfigError, match=r"ckpt: .*disagree: model\.d_model: config gives"):
        run_lib.resolve_saved(run.config, saved, "ckpt")
    with pytest.raises(ConfigError, match="does not describe a model"):
        run_lib.resolve_saved(run.config, {"train.steps": run.steps}, "ckpt")


@pytest.mark.parametrize("overrides, field", [
    ({"train.eps": 0.0}, "train.eps"),
    ({"pruning.structure": "2:4"}, "final_sparsity"),
    ({"pruning.include": "nothing_matches"}, "include"),
    ({"pruning.structure": "abc"}, "structure"),
    ({"model.n_heads": 3}, "n_heads"),
])
def test_dry_run_rejects_what_training_would(corpus, data_dir, overrides, field):
    from jaxsparse.errors import ConfigError
    with pytest.raises(ConfigError, match=field):  # bad input: exit 2 on the command line
        prepare(config_in(corpus, data_dir, **overrides))


def test_size_presets_are_kept_unless_a_config_sets_scan_layers_or_remat(corpus):
    from jaxsparse.train.resolve.parts import model_config
    config = tiny_config(corpus, **{"model.size": "58m"})
    assert config.model.scan_layers is None and config.model.remat is None  # = the size's
    preset = model_config(config, 32000)
    assert preset.scan_layers is True and preset.remat is True
    config.model.remat = False
    assert model_config(config, 32000).remat is False


def test_the_trainer_builds_its_model_through_the_registry(corpus):
    import dataclasses

    from jaxsparse import models
    built = []

    @models.register("test_counting_llama")
    def counting(model_cfg):
        built.append(model_cfg)
        return models.Transformer(model_cfg)

    config = tiny_config(corpus, **{"model.family": "test_counting_llama"})
    run = prepare(config)
    assert built and set(built) == {run.model_config}  # every build goes through the seam
    assert run.plan.params == models.param_counts(run.model_config)
    fields = {f"model.{f.name}" for f in dataclasses.fields(run.model_config)}
    model_keys = {k for k in run.identity if k.startswith("model.")}
    compute_only = {"model.remat", "model.remat_policy", "model.attention", "model.loss_chunk"}
    assert model_keys == fields - compute_only | {"model.size"}
    config.model.family = "lama"
    with pytest.raises(ConfigError, match="config.model.family='lama'"):
        prepare(config)


def test_config_imports_are_imported_before_the_config_is_checked(corpus):
    with pytest.raises(ConfigError, match=r"config.imports='json, no_such_module': cannot import "
                                          r"'no_such_module'"):
        prepare(tiny_config(corpus, imports="json, no_such_module"))
    assert prepare(tiny_config(corpus, imports="json,")).config.imports == "json,"
