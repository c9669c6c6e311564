"""The README's main job: sparse pre-training of the demo model on the embedded corpus, on CPU.

Geometric schedule, 25% dense / 50% pruning / 25% recovery, final sparsity 0.8, on Shakespeare
with a SentencePiece tokenizer trained at first use. Measured 2026-11-29 on a 2-core CPU shared
with other jobs (tokenizer and data already cached): 5 min 03 s wall at load average 2-5, and
20 min 53 s at load average 12-18.

    python -m jaxsparse.train --config=configs/default.py --workdir=runs/default
"""
from jaxsparse.train import base_config


def get_config():
    c = base_config()
    c.model.size = "demo"
    c.data.dataset = "shakespeare"
    c.data.tokenizer = "embedded"
    c.data.vocab_size = 2048
    c.train.steps = 300
    c.train.batch_size = 16
    c.train.seq_len = 128
    c.train.learning_rate = 3e-3
    c.train.warmup_steps = 30
    c.train.log_every_steps = 10
    c.pruning.schedule = "geometric"
    c.pruning.final_sparsity = 0.8
    c.pruning.start = 0.25
    c.pruning.end = 0.75
    c.pruning.interval = 15
    c.checkpoint.every_steps = 100
    c.eval.every_steps = 100
    c.eval.batches = 4
    return c
