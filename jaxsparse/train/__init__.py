"""jaxsparse.train: the trainer (composes jaxsparse.models, jaxsparse.data and the pruning library).

Command line: ``python -m jaxsparse.train --config=configs/default.py --workdir=DIR``
(``--print_config`` lists every key). Python: ``train(config, workdir)``;
``prepare(config)`` resolves a config into a typed `Run` (``prepare(config).plan.to_json()`` is
the dry-run plan); ``base_config()`` has every key with its default. Config files take their
arguments with ``parse_config_args`` (and ``parse_budget`` for a token budget such as ``'10x'``).

Sub-rooms, in the order a run meets them: ``resolve`` (config to `Run`), ``steps`` (the state and
the compiled steps), ``workdir`` (the run directory and its checkpoints), ``loop`` (the training
loop), and ``target`` (compiling for a TPU slice that is not here).
"""
from jaxsparse.train.loop.driver import TrainingFault, train
from jaxsparse.train.resolve.train_config import base_config, validate
from jaxsparse.train.resolve.overrides import parse_budget, parse_config_args
from jaxsparse.train.resolve.plan import Plan
from jaxsparse.train.resolve.run import Run, prepare

__all__ = ["base_config", "parse_budget", "parse_config_args", "prepare", "train", "validate", "Run",
           "Plan", "TrainingFault"]
