"""A tiny trainer-shaped config for the data tests: config.data, config.train.{seq_len,batch_size} and
config.eval.batches (the keys `python -m jaxsparse.data inspect` reads).

The tests point it at a generated corpus with --config.data.dataset=text:/... and
--config.data.data_dir=/tmp/... overrides.
"""

import ml_collections

from jaxsparse.data import default_config


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.data = default_config()
    config.data.tokenizer = "bytes"
    config.data.shards = 4
    config.train = ml_collections.ConfigDict()
    config.train.seq_len = 32
    config.train.batch_size = 4
    config.eval = ml_collections.ConfigDict()
    config.eval.batches = 2
    return config
