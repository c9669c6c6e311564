"""A seconds-long run of the test-size model, for tests and smoke checks.

    python -m jaxsparse.train --config=configs/tiny.py:corpus=/path/to/txt_folder --workdir=DIR
Arguments: corpus (folder of .txt/.jsonl; default: the embedded Shakespeare), steps (default 24).
"""
from jaxsparse.train import base_config, parse_config_args


def get_config(arg=None):
    a = parse_config_args(arg, corpus="", steps=24, tokenizer="bytes")
    c = base_config()
    c.model.size = "test"
    c.data.dataset = f"text:{a.corpus}" if a.corpus else "shakespeare"
    c.data.tokenizer = a.tokenizer
    c.train.steps = a.steps
    c.train.batch_size = 8
    c.train.seq_len = 32
    c.train.learning_rate = 1e-2
    c.train.warmup_steps = 2
    c.train.log_every_steps = 4
    c.pruning.final_sparsity = 0.75
    c.pruning.interval = 2
    c.checkpoint.every_steps = 8
    c.eval.every_steps = 8
    c.eval.batches = 2
    c.metrics.tensorboard = False
    c.metrics.plots = False
    return c
