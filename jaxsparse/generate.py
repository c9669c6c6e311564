"""Sample text from a trained run: prefill and KV-cache decoding in one jitted loop, sharded like training.

    python -m jaxsparse.generate --workdir=runs/default --prompt="ROMEO:" [--max_new_tokens=N]
        [--temperature=0.8] [--top_k=0] [--top_p=1.0] [--seed=0] [--step=N] [--prompts_file=FILE] [--json]

The model, its masks and its tokenizer come from the checkpoint (the latest, or --step). Each prompt
is encoded as in training ([BOS] + tokens) and continued until EOS or --max_new_tokens tokens
(default: 128, or fewer when the model's context has less room after the longest prompt, with a note
on stderr; an explicit value that does not fit is refused); --temperature=0 is greedy decoding.
--prompts_file holds one prompt a line (blank lines skipped), generated together as one left-padded
batch. Exit 2 on bad input, before any compute.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Optional

import jax

from jaxsparse import models
from jaxsparse.errors import ArgumentParser, ConfigError, as_bad_input, entry_point
from jaxsparse.inference.prompts import encode_strict, left_padded
from jaxsparse.inference.restore import RestoredRun, load_run
from jaxsparse.inference.sampling import SamplingSettings, make_generate_fn

DEFAULT_MAX_NEW_TOKENS = 128


def settings_for(run: RestoredRun, max_new_tokens: int, temperature: float = 0.0, top_k: int = 0,
                 top_p: float = 1.0) -> SamplingSettings:
    """SamplingSettings of `run`'s tokenizer (EOS, pad, and its unpadded vocabulary)."""
    tok = run.tokenizer
    try:
        return SamplingSettings(max_new_tokens, float(temperature), top_k, float(top_p),
                                allowed_vocab=tok.vocab_size, eos_id=tok.eos_id, pad_id=tok.pad_id)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def generate_ids(run: RestoredRun, prompt_ids: Sequence[Sequence[int]], settings: SamplingSettings,
                 seed: int = 0) -> list[list[int]]:
    """New token ids for each prompt (each row: up to and including its EOS, at most max_new_tokens)."""
    shards = run.mesh.shape["data"] * run.mesh.shape["fsdp"]
    tokens, lengths = left_padded(prompt_ids, run.tokenizer.pad_id, multiple=shards)
    mask_shardings = jax.tree.map(lambda m: m.sharding, run.masks)  # each mask is sharded like its kernel
    try:
        fn = make_generate_fn(run.model_cfg, settings, tokens.shape[1],
                              (run.param_shardings, mask_shardings, models.batch_sharding(run.mesh)))
    except ValueError as err:
        raise ConfigError(str(err)) from None
    out, out_lengths = fn(run.params, run.masks, tokens, lengths, jax.random.key(seed))
    out, out_lengths = jax.device_get((out, out_lengths))
    return [out[i, :out_lengths[i]].tolist() for i in range(len(prompt_ids))]


def completion_text(tokenizer, prompt_ids: Sequence[int], new_ids: Sequence[int]) -> str:
    """The text the new tokens add to the prompt (decoded in context: SentencePiece drops a leading
    space when a piece is decoded alone); BOS/EOS are not text."""
    special = {tokenizer.bos_id, tokenizer.eos_id}
    before = tokenizer.decode([i for i in prompt_ids if i not in special])
    whole = tokenizer.decode([i for i in list(prompt_ids) + list(new_ids) if i not in special])
    return whole[len(before):] if whole.startswith(before) else tokenizer.decode(
        [i for i in new_ids if i not in special])


def new_token_count(requested: Optional[int], context: int, longest_prompt: int) -> tuple[int, Optional[str]]:
    """(tokens to generate per prompt, a note for stderr or None). `requested` None means the default:
    DEFAULT_MAX_NEW_TOKENS, capped at the room the context (tokens) leaves after the longest prompt
    (tokens, BOS included). An explicit request is returned as it is (too long: refused later)."""
    if requested is not None:
        return requested, None
    room = context - longest_prompt
    if room < 1:
        raise ConfigError(f"the prompt of {longest_prompt} tokens (BOS included) fills the model's context of "
                          f"{context} tokens (the training train.seq_len); shorten the prompt")
    if room >= DEFAULT_MAX_NEW_TOKENS:
        return DEFAULT_MAX_NEW_TOKENS, None
    return room, (f"note: generating at most {room} new tokens, the room the model's context of {context} "
                  f"tokens leaves after the prompt of {longest_prompt} (set --max_new_tokens to choose)")


def _read_prompts(args: argparse.Namespace) -> list[str]:
    if args.prompts_file is None:
        return [args.prompt]
    try:
        with open(args.prompts_file, encoding="utf-8") as f:
            prompts = [line.rstrip("\n") for line in f if line.strip()]
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"--prompts_file={args.prompts_file!r}: cannot read it ({err})") from None
    if not prompts:
        raise ConfigError(f"--prompts_file={args.prompts_file!r} holds no prompts (one prompt a line)")
    return prompts


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = ArgumentParser(prog="python -m jaxsparse.generate", description=__doc__.split("\n")[0])
    p.add_argument("--workdir", required=True, help="training workdir (with checkpoints/)")
    p.add_argument("--prompt", default="", help="text to continue (default: empty, BOS only)")
    p.add_argument("--prompts_file", default=None, help="one prompt a line, generated as one batch")
    p.add_argument("--max_new_tokens", type=int, default=None,
                   help=f"tokens to generate per prompt (default: {DEFAULT_MAX_NEW_TOKENS}, capped at the room "
                        "the model's context leaves after the prompt)")
    p.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    p.add_argument("--top_k", type=int, default=0, help="0 = no top-k cut")
    p.add_argument("--top_p", type=float, default=1.0, help="1.0 = no nucleus cut")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default: the latest)")
    p.add_argument("--json", action="store_true", help="one JSON object a prompt: prompt, ids, text")
    return p.parse_args(argv)


@entry_point
def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    with as_bad_input(ValueError, FileNotFoundError):  # bad input: before any compute
        prompts = _read_prompts(args)
        SamplingSettings(args.max_new_tokens or DEFAULT_MAX_NEW_TOKENS, args.temperature, args.top_k, args.top_p)
        run = load_run(args.workdir, args.step)
        what = [f"prompt {i + 1}" + (f" of {args.prompts_file}" if args.prompts_file else "")
                for i in range(len(prompts))]
        ids = [[run.tokenizer.bos_id] + encode_strict(run.tokenizer, p, w) for p, w in zip(prompts, what)]
        count, note = new_token_count(args.max_new_tokens, run.model_cfg.max_seq_len, max(map(len, ids)))
        settings = settings_for(run, count, args.temperature, args.top_k, args.top_p)
    if note:
        print(note, file=sys.stderr)
    new = generate_ids(run, ids, settings, args.seed)  # a ConfigError: found before compiling
    for prompt, prompt_ids, new_ids in zip(prompts, ids, new):
        text = completion_text(run.tokenizer, prompt_ids, new_ids)
        if args.json:
            print(json.dumps({"prompt": prompt, "prompt_ids": prompt_ids, "ids": new_ids, "text": text,
                              "step": run.step}))
        else:
            print(prompt + text)
            print("-" * 40)
    return 0


if __name__ == "__main__":
    sys.exit(main())
