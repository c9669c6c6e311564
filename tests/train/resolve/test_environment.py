"""The environment a run resolves against: the device memory check and --force."""
from __future__ import annotations

import pytest
from train_utils import tiny_config

from jaxsparse.errors import ConfigError
from jaxsparse.train import prepare, train
from jaxsparse.train.resolve.environment import device_memory_limit


def test_memory_plan_is_checked_against_the_device_before_anything_is_written(corpus, tmp_path):
    config = tiny_config(corpus, **{"train.batch_size": 1 << 20})
    estimate = prepare(config).plan.memory.total
    limit, _ = device_memory_limit()
    assert estimate > limit
    with pytest.raises(ConfigError, match="memory plan needs"):
        train(config, str(tmp_path / "refused"))
    assert not (tmp_path / "refused").exists()
