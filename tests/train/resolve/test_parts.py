"""The parts a validated config describes (`jaxsparse.train.resolve.parts`): vocabulary, mesh,
model, parameter counts and the step count, each named in the error when the config is wrong."""
from __future__ import annotations

import math

import jax
import pytest
from train_utils import tiny_config

from jaxsparse import models
from jaxsparse.data import ByteTokenizer
from jaxsparse.errors import ConfigError
from jaxsparse.models import accounting
from jaxsparse.train.resolve import train_config
from jaxsparse.train.resolve import parts


def _described(config, local_devices=True):
    train_config.validate(config)
    return parts.build_parts(config, train_config.grad_accum_of(config), local_devices)


def test_describe_counts_the_models_params_and_derives_steps_from_the_budget(corpus):
    config = tiny_config(corpus, **{"train.steps": 0, "train.budget": 20.0})
    p = _described(config)
    assert p.params == models.param_counts(p.model_config)  # the default patterns prune every kernel
    assert p.params.embedding == p.model_config.vocab_size * p.model_config.d_model
    assert p.params.other == p.params.total - p.params.prunable > 0
    assert p.steps == math.ceil(20.0 * p.params.total / (8 * 32))
    assert p.vocab == ByteTokenizer.vocab_size and p.model_config.vocab_size % config.model.vocab_multiple == 0
    assert dict(p.mesh.shape) == {"data": jax.device_count(), "fsdp": 1, "tensor": 1}


def test_describe_for_another_machine_builds_no_mesh(corpus):
    config = tiny_config(corpus, **{"mesh.data": 64})  # more devices than this machine has
    with pytest.raises(ConfigError, match="config.mesh="):
        _described(config)
    assert _described(config, local_devices=False).mesh is None


def test_prunable_follows_the_include_and_exclude_patterns(corpus):
    p = _described(tiny_config(corpus))
    flags = parts.prunable(tiny_config(corpus, **{"pruning.exclude": "mlp"}), p.abstract_params)
    fewer = accounting.count_params(p.abstract_params, flags)
    assert 0 < fewer.prunable < p.params.prunable and fewer.total == p.params.total
    with pytest.raises(ConfigError, match="config.pruning"):
        parts.prunable(tiny_config(corpus, **{"pruning.include": "("}), p.abstract_params)


def test_an_init_from_folder_is_checked_before_the_params_are_shaped(corpus, tmp_path):
    config = tiny_config(corpus, **{"model.init_from": f"hf:{tmp_path}"})
    with pytest.raises(ConfigError, match="config.model.init_from=.*config.json does not exist"):
        _described(config)


def test_mesh_axes_and_batch_are_checked_naming_the_field(corpus):
    n = jax.device_count()
    assert dict(parts.build_mesh(tiny_config(corpus, **{"mesh.data": -1, "mesh.tensor": 2})).shape) \
        == {"data": n // 2, "fsdp": 1, "tensor": 2}
    with pytest.raises(ConfigError, match="only one axis may be -1"):
        parts.build_mesh(tiny_config(corpus, **{"mesh.data": -1, "mesh.fsdp": -1}))
    with pytest.raises(ConfigError, match=r"config.train.batch_size=8 \(per micro-batch 4 with "
                                          r"train.grad_accum=2\) is not divisible"):
        parts.build_mesh(tiny_config(corpus, **{"train.grad_accum": 2}))


def test_a_configured_vocabulary_must_hold_the_tokenizers_ids(corpus):
    assert parts.resolve_vocab(tiny_config(corpus, **{"model.vocab_size": 300})) == 300
    with pytest.raises(ConfigError, match="config.model.vocab_size=100 is smaller than the tokenizer's"):
        parts.resolve_vocab(tiny_config(corpus, **{"model.vocab_size": 100}))
    remote = tiny_config(corpus, **{"model.vocab_size": 100, "data.tokenizer": "gs://bucket/spm.model"})
    assert parts.resolve_vocab(remote) == 100  # not readable here: the configured size is trusted
