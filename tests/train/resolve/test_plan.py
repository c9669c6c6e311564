"""The dry-run `Plan` of a run: parameter counts of masked weights only, N̄, the paper's budgets."""
from __future__ import annotations

import json

import numpy as np
import pytest
from train_utils import (
    cli_env,
    config_in,
    run_cli,
    train_cmd,
)

from jaxsparse.pruning import Schedule
from jaxsparse.train import prepare


def test_dry_run_prints_plan_without_training(corpus, data_dir, tmp_path):
    out = run_cli(train_cmd(corpus, tmp_path / "w", "--dry_run"), cli_env(data_dir))
    assert out.returncode == 0, out.stderr[-2000:]
    plan = json.loads(out.stdout)
    assert plan["steps"] == 24 and plan["schedule"]["event_steps"][0] == 6
    assert plan["params"]["total"] > plan["params"]["prunable"] > 0
    assert plan["n_avg"] < plan["params"]["total"]
    assert plan["memory_per_device_bytes"]["total"] > 0
    assert not (tmp_path / "w").exists()


def test_paper_config_dry_run_matches_budget():
    import sys

    from train_utils import REPO
    sys.path.insert(0, str(REPO / "configs"))
    import paper  # noqa: PLC0415
    sys.path.pop(0)
    config = paper.get_config("size=58m,sparsity=0.6,budget=20x,batch=8")
    config.mesh.fsdp = 1
    config.mesh.data = -1
    plan = prepare(config).plan.to_json()
    assert abs(plan["params"]["total"] - 57.94e6) < 1e4  # the paper, section 4: 57.94M
    assert plan["tokens"] >= 400 * plan["params"]["total"]
    assert plan["tokens"] - 400 * plan["params"]["total"] < 8 * 2048


def test_plan_counts_only_masked_weights_and_realised_n_of_m_densities(corpus, data_dir):
    base = prepare(config_in(corpus, data_dir)).plan.to_json()
    no_head = prepare(config_in(corpus, data_dir, **{"pruning.exclude": "lm_head"})).plan.to_json()
    head = 64 * no_head["model"]["vocab_size"]
    assert no_head["params"]["prunable"] == base["params"]["prunable"] - head
    assert no_head["n_avg"] > base["n_avg"] and no_head["flops"] > base["flops"]
    nm = prepare(config_in(corpus, data_dir, **{"pruning.structure": "2:4",
                                              "pruning.final_sparsity": 0.5})).plan.to_json()
    from jaxsparse.pruning.structure import realised_densities
    sched = Schedule("geometric", 0.5, 0.25, 0.75, 2)
    realised = realised_densities(sched, 24, "2:4")
    assert set(np.round(realised * 4, 9)) <= {2.0, 3.0, 4.0} and realised[-1] == 0.5
    want = nm["params"]["other"] + sched.average_density(24, realised) * nm["params"]["prunable"]
    assert nm["n_avg"] == pytest.approx(want, rel=1e-12)
    assert nm["n_avg"] > base["n_avg"]  # rounding up to whole weights per group keeps more
