"""jaxsparse.train: the trainer (composes jaxsparse.models, jaxsparse.data and the pruning library).

Command line: ``python -m jaxsparse.train --config=configs/default.py --workdir=DIR``.
Python: ``train(config, workdir)``, ``prepare(config, None)["plan"]`` (the dry-run plan) and
``base_config()`` (every key with its default).
"""
from jaxsparse.train.config import base_config, validate
from jaxsparse.train.loop import prepare, train

__all__ = ["base_config", "prepare", "train", "validate"]
