"""Loss, perplexity and bits per byte of a trained run over a whole split.

    python -m jaxsparse.evaluate --workdir=runs/default [--dataset=text:/corpus] [--split=validation]
        [--step=N] [--batch_size=B] [--out=FILE.json]

Every document of the split is tokenized with the run's tokenizer as in training (`data.packing`),
the documents are concatenated in stored order, and the stream is cut into windows of train.seq_len
targets with a stride of seq_len: every token but the stream's first is predicted exactly once, with
the context of its window. Reported (JSON on stdout): loss = nats per predicted token, perplexity =
exp(loss), bits_per_byte = total nats / (ln 2 x UTF-8 bytes of the documents' text), which compares
across tokenizers. A progress line with ETA goes to stderr on long runs. Exit 2 on bad input.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Optional

import jax
import numpy as np
from jax.sharding import NamedSharding

from jaxsparse import models
from jaxsparse.models.accounting import count_params
from jaxsparse.models.sharding import activation_sharding
from jaxsparse.errors import ArgumentParser, ConfigError, Fault, as_bad_input, entry_point
from jaxsparse.inference.restore import RestoredRun, load_run
from jaxsparse.train.workdir import layout


def token_windows(documents: Iterable[np.ndarray], seq_len: int, batch: int) -> Iterator[dict[str, np.ndarray]]:
    """Batches {"inputs", "targets": int32[batch, seq_len], "weights": float32[batch, seq_len]} over the
    concatenated token stream of `documents` (int32[n] each, as `data.packing.TokenizeDocument` makes
    them), cut with a stride of seq_len (the last batch padded with weight 0)."""
    stream: list[int] = []
    rows: list[list[int]] = []

    def flush_rows(final: bool):
        while len(rows) >= batch or (final and rows):
            chunk, rows[:] = rows[:batch], rows[batch:]
            arr = np.zeros((batch, seq_len + 1), np.int32)
            weights = np.zeros((batch, seq_len), np.float32)
            for i, row in enumerate(chunk):
                arr[i, :len(row)] = row
                weights[i, :len(row) - 1] = 1.0
            yield {"inputs": arr[:, :-1], "targets": arr[:, 1:], "weights": weights}

    for tokens in documents:
        stream.extend(tokens.tolist())
        while len(stream) >= seq_len + 1:
            rows.append(stream[:seq_len + 1])
            del stream[:seq_len]  # the window's last token starts the next one
        yield from flush_rows(final=False)
    if len(stream) > 1:
        rows.append(stream)
    yield from flush_rows(final=True)


def tokenized_documents(source: Sequence[Any], tokenizer: Any, counts: dict[str, int]) -> Iterator[np.ndarray]:
    """The documents of `source` in stored order, each int32[n + 2] = [BOS] + tokens + [EOS] by the data
    pipeline's own definition (`jaxsparse.data.TokenizeDocument`). Adds to counts["documents"] and
    counts["bytes"] (UTF-8 bytes of the text) as documents are read."""
    from jaxsparse.data import TOKENS, TokenizeDocument

    tokenize = TokenizeDocument(tokenizer)
    for i in range(len(source)):
        element = source[i]
        counts["documents"] += 1
        counts["bytes"] += len(TokenizeDocument.text_of(element).encode("utf-8"))
        yield tokenize.map(element)[TOKENS]


def make_loss_sums(run: RestoredRun, batch_sharding: NamedSharding):
    """Jitted (params, masks, batch) -> (sum of nats over weighted targets, sum of weights), sharded:
    the model's own loss path (`model.loss_chunk` included) with activations sharded as in training."""
    model = models.build(run.model_cfg)

    def sums(params, masks, batch):
        with activation_sharding(run.mesh):
            return model.apply({"params": params, "masks": masks}, batch["inputs"], batch["targets"],
                               batch["weights"])

    return jax.jit(sums, in_shardings=(run.param_shardings, None, batch_sharding))


def open_split(run: RestoredRun, dataset: Optional[str], split: str) -> tuple[str, Sequence[Any]]:
    """(data.dataset, its `split` as a random-access source of {"text": ...} elements) for `dataset`
    (default: the run's own). ConfigError naming the splits there are when `split` is not one."""
    from jaxsparse.data import open_splits

    data_cfg = run.config.data.copy_and_resolve_references()
    if dataset:
        data_cfg.dataset = dataset
    _, sources = open_splits(data_cfg)
    if split not in sources:
        raise ConfigError(f"--split={split!r}: data.dataset={data_cfg.dataset!r} has splits {sorted(sources)}")
    return data_cfg.dataset, sources[split]


def evaluate(run: RestoredRun, dataset: Optional[str] = None, split: str = "validation",
             batch_size: Optional[int] = None, progress_every_s: float = 10.0) -> dict[str, Any]:
    """The figures of the module docstring for checkpoint `run` over `split` of `dataset` (default: the
    run's own dataset). batch_size: windows per step (default train.batch_size, rounded up to the
    data-parallel shards)."""
    name, source = open_split(run, dataset, split)
    return evaluate_split(run, name, split, source, batch_size, progress_every_s)


def evaluate_split(run: RestoredRun, name: str, split: str, source: Sequence[Any],
                   batch_size: Optional[int] = None, progress_every_s: float = 10.0) -> dict[str, Any]:
    """`evaluate` over a split already opened by `open_split` (`name` = its data.dataset)."""
    batch = check_batch_memory(run, batch_size)
    seq_len = run.model_cfg.max_seq_len
    sharding = models.batch_sharding(run.mesh)
    loss_sums = make_loss_sums(run, sharding)
    counts = {"documents": 0, "bytes": 0}
    nats, weight = 0.0, 0.0
    start = last = time.time()
    documents = tokenized_documents(source, run.tokenizer, counts)
    for batch_np in token_windows(documents, seq_len, batch):
        # One step in flight at a time: hundreds of queued steps, each with all-reduces over the
        # devices, can exhaust XLA:CPU's thread pool and deadlock its collectives.
        n, w = jax.device_get(loss_sums(run.params, run.masks, jax.device_put(batch_np, sharding)))
        nats, weight = nats + float(n), weight + float(w)
        if time.time() - last >= progress_every_s:
            last = time.time()
            _progress(counts["documents"], len(source), weight, nats, last - start)
    if weight == 0:
        raise ConfigError(f"--split={split!r} of data.dataset={name!r} holds no tokens to predict")
    loss = nats / weight
    return {"workdir": run.workdir, "step": run.step, "dataset": name, "split": split,
            "documents": counts["documents"], "tokens": int(weight), "bytes": counts["bytes"],
            "loss": loss, "perplexity": math.exp(loss), "bits_per_token": loss / math.log(2),
            "bits_per_byte": nats / (math.log(2) * counts["bytes"]), "seq_len": seq_len,
            "seconds": time.time() - start}


def check_batch_memory(run: RestoredRun, batch_size: Optional[int]) -> int:
    """The windows per step for `batch_size` (default train.batch_size), rounded up to the
    data-parallel shards; ConfigError, before anything is allocated, when the forward pass of
    that many windows needs more memory per device than a device has (the trainer's estimate and
    check, `memory_estimate(..., backward=False)` and `check_memory`; the host's own batch arrays,
    12 bytes a token, are far smaller than a device's share of the logits)."""
    from jaxsparse.train.resolve.environment import check_memory
    from jaxsparse.train.resolve.plan import memory_estimate

    shards = run.mesh.shape["data"] * run.mesh.shape["fsdp"]
    batch = -(-int(batch_size or run.config.train.batch_size) // shards) * shards
    counts = count_params(run.params, masks=run.masks)
    estimate = memory_estimate(run.model_cfg, counts, dict(run.mesh.shape), batch,
                               run.model_cfg.max_seq_len, backward=False)
    check_memory(estimate.total, advice=f"lower --batch_size (windows per step: {batch})")
    return batch


def _progress(done: int, total: int, weight: float, nats: float, elapsed: float) -> None:
    eta = elapsed * (total - done) / max(done, 1)
    loss = nats / weight if weight else float("nan")
    print(f"evaluate: {done:,}/{total:,} documents ({100.0 * done / max(total, 1):5.1f}%)  {int(weight):,} tokens  "
          f"loss {loss:.4f}  elapsed {elapsed:.0f}s  ETA {eta:.0f}s", file=sys.stderr, flush=True)


@entry_point
def main(argv: Optional[Sequence[str]] = None) -> int:
    p = ArgumentParser(prog="python -m jaxsparse.evaluate", description=__doc__.split("\n")[0])
    p.add_argument("--workdir", required=True, help="training workdir (with checkpoints/)")
    p.add_argument("--dataset", default=None, help="data.dataset to evaluate on (default: the run's)")
    p.add_argument("--split", default="validation", help="train or validation")
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default: the latest)")
    p.add_argument("--batch_size", type=int, default=None, help="windows per step (default: train.batch_size)")
    p.add_argument("--out", default=None, help="also write the JSON to this file")
    args = p.parse_args(argv)
    if args.batch_size is not None and args.batch_size < 1:
        raise ConfigError(f"--batch_size={args.batch_size}: must be an integer >= 1")
    with as_bad_input(ValueError, FileNotFoundError):
        if args.out:
            check_out_file(args.out, args.workdir)
        run = load_run(args.workdir, args.step)
        check_batch_memory(run, args.batch_size)  # before the data is opened or a batch allocated
        name, source = open_split(run, args.dataset, args.split)  # bad dataset or split: before any compute
    result = evaluate_split(run, name, args.split, source, args.batch_size)
    text = json.dumps(result, indent=2)
    print(text, flush=True)  # first: a failed write below loses nothing
    if args.out:
        try:
            write_atomically(args.out, text + "\n")
        except OSError as err:
            raise Fault(f"--out={args.out}: could not write the result ({err.strerror or err}); it is "
                        "printed above and no partial file was left") from None
    return 0


def check_out_file(out: str, workdir: str) -> None:
    """ConfigError unless `out` can be written: not a directory, in an existing folder this
    user may write (probed with a temporary file, removed), and in no run directory (`workdir`'s
    or another's: `layout.check_reader_output`)."""
    parent = os.path.dirname(os.path.abspath(out))
    if os.path.isdir(out):
        raise ConfigError(f"--out={out}: is a directory; give a file name")
    layout.check_reader_output(out, workdir)
    if not os.path.isdir(parent):
        raise ConfigError(f"--out={out}: the folder {parent} does not exist")
    try:
        with tempfile.NamedTemporaryFile(dir=parent, prefix=".probe-"):
            pass
    except OSError as err:
        raise ConfigError(f"--out={out}: cannot write in {parent} ({err.strerror or err})") from None


def write_atomically(path: str, text: str) -> None:
    """`path` holds `text` completely or is left as it was (temporary sibling, fsync, rename)."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".tmp-")
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.fchmod(fd, 0o666 & ~umask)  # as open() would create it
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


if __name__ == "__main__":
    sys.exit(main())
