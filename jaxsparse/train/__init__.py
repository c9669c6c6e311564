"""jaxsparse.train: the trainer (composes jaxsparse.models, jaxsparse.data and the pruning library).

Command line: ``python -m jaxsparse.train --config=configs/default.py --workdir=DIR``
(``--print_config`` lists every key). Python: ``train(config, workdir)``;
``prepare(config)`` resolves a config into a typed `Run` (``prepare(config).plan.to_json()`` is
the dry-run plan); ``base_config()`` has every key with its default.
"""
from jaxsparse.train.config import base_config, validate
from jaxsparse.train.loop import TrainingFault, train
from jaxsparse.train.plan import Plan
from jaxsparse.train.run import Run, prepare

__all__ = ["base_config", "prepare", "train", "validate", "Run", "Plan", "TrainingFault"]
