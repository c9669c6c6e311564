"""Print a model size's parameter and FLOP accounting as JSON, from the config alone (nothing allocated).

Usage: python -m jaxsparse.models SIZE [--seq-len TOKENS] [--density FRACTION] [--vocab-size V]

Keys: name, config (all ModelConfig fields), total, prunable, embedding, other (parameter counts,
measured from the model's init), seq_len (tokens), flops_per_token (dense training FLOPs per token at
seq_len), attention_flops_per_token, and, with --density, density and flops_per_token_at_density.
"""
from __future__ import annotations

import dataclasses
import json
import sys
from typing import Optional, Sequence

from jaxsparse.errors import ArgumentParser, as_bad_input, entry_point

from .accounting import attention_flops_per_token, flops_per_token, param_counts
from .model_config import SIZES, get_config


@entry_point
def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = ArgumentParser(prog="python -m jaxsparse.models", description=__doc__.splitlines()[0])
    parser.add_argument("size", help=f"model size, one of {', '.join(SIZES)}")
    parser.add_argument("--seq-len", type=int, default=None, help="sequence length in tokens (default: max_seq_len)")
    parser.add_argument("--density", type=float, default=None, help="fraction of prunable weights kept, in [0, 1]")
    parser.add_argument("--vocab-size", type=int, default=None, help="override the vocabulary size")
    args = parser.parse_args(argv)
    with as_bad_input(ValueError):  # an unknown size, a bad vocabulary size
        overrides = {} if args.vocab_size is None else {"vocab_size": args.vocab_size}
        config = get_config(args.size, **overrides)
        seq_len = config.max_seq_len if args.seq_len is None else args.seq_len
        report = {"name": args.size.lower(), "config": dataclasses.asdict(config), **_counts(config),
                  "seq_len": seq_len, "flops_per_token": flops_per_token(config, seq_len),
                  "attention_flops_per_token": attention_flops_per_token(config, seq_len)}
        if args.density is not None:
            report["density"] = args.density
            report["flops_per_token_at_density"] = flops_per_token(config, seq_len, args.density)
    print(json.dumps(report, indent=2))
    return 0


def _counts(config) -> dict[str, int]:
    counts = param_counts(config)
    return {**dataclasses.asdict(counts), "other": counts.other}


if __name__ == "__main__":
    sys.exit(main())
