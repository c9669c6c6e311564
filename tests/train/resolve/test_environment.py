"""The environment a run resolves against: the device memory check and --force."""
from __future__ import annotations

import pytest
from train_utils import tiny_config

from jaxsparse.errors import ConfigError
from jaxsparse.train import prepare, train
from jaxsparse.train.resolve.environment import device_memory_limit


def test_memory_plan_is_checked_against_the_device_unless_forced(corpus, tmp_path):
    config = tiny_config(corpus, **{"train.batch_size": 1 << 20})
    estimate = prepare(config).plan.memory.total
    limit, _ = device_memory_limit()
    assert estimate > limit
    with pytest.raises(ConfigError, match="memory plan needs"):
        train(config, str(tmp_path / "refused"))
    assert not (tmp_path / "refused").exists()
    with pytest.warns(DeprecationWarning, match="workdir"):  # the deprecated spelling checks it too
        with pytest.raises(ConfigError, match="memory plan needs"):
            prepare(config, str(tmp_path / "refused"))
    with pytest.warns(DeprecationWarning, match="workdir"):
        assert prepare(config, str(tmp_path / "forced"), force=True).plan.memory.total == estimate
    assert not (tmp_path / "refused").exists() and not (tmp_path / "forced").exists()
