"""The paper's runs (Jin et al., "The Journey Matters", ICLR 2025, sections 2, 3, 5): LLaMA-style
models on C4 with gradual pruning.

Arguments (all optional), e.g.
    --config=configs/paper.py:size=162m,sparsity=0.8,schedule=geometric,start=0.25,end=0.75,budget=10x
  size      58m | 162m | 468m | 1b                          (default 162m)
  sparsity  final sparsity in [0, 1)                         (default 0.8; 0 = dense)
  schedule  geometric | cubic | linear | one_shot | dense    (default geometric)
  start,end fractions of training                            (default 0.25, 0.75)
  interval  steps between pruning events                     (default 100)
  budget    tokens per parameter: '10x' = 10 x Chinchilla = 200 tokens/param (default 10x)
  batch     global batch in sequences of 2048 tokens         (default 256)
  lr        peak learning rate                               (default 3e-4)
  accum     micro-batches per step, or auto: the fewest whose step fits the devices'
            memory, found by compiling (default auto; see --compile_for)
The number of steps is budget x total parameters / (batch x 2048).
"""
import os

from jaxsparse.train import base_config, parse_budget, parse_config_args


def get_config(arg=None):
    a = parse_config_args(arg, size="162m", sparsity=0.8, schedule="geometric", start=0.25,
                          end=0.75, interval=100, budget="10x", batch=256, lr=3e-4, accum="auto")
    c = base_config()
    c.model.size = a.size
    c.model.vocab_size = 32000
    c.data.dataset = "c4/en"
    c.data.data_dir = os.environ.get("JAXSPARSE_DATA_DIR", "gs://YOUR_BUCKET/tensorflow_datasets")
    c.data.tokenizer = os.environ.get("JAXSPARSE_TOKENIZER", "tokenizers/llama2.model")
    c.train.steps = 0
    c.train.budget = parse_budget(a.budget)
    c.train.batch_size = a.batch
    c.train.grad_accum = int(a.accum) if str(a.accum).isdigit() else a.accum  # else validated: 'auto'
    c.train.seq_len = 2048
    c.train.learning_rate = a.lr
    c.train.warmup_steps = -1
    c.train.log_every_steps = 50
    c.pruning.schedule = "dense" if a.schedule == "dense" or a.sparsity == 0 else a.schedule
    c.pruning.final_sparsity = 0.0 if c.pruning.schedule == "dense" else a.sparsity
    c.pruning.start = a.start
    c.pruning.end = a.end
    c.pruning.interval = a.interval
    c.checkpoint.every_steps = 1000
    c.eval.every_steps = 2000
    c.eval.batches = 50
    c.mesh.data = 1
    c.mesh.fsdp = -1
    c.metrics.peak_tflops_per_device = 197.0  # TPU v4 bf16; override for your chip
    return c
