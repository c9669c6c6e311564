"""Logical data shards: the global batch of a step depends on the config and the step only.

Processes are simulated here (process_index / process_count given, one Python process); the real
two-process run through the trainer is tests/train/loop/test_multihost.py.
"""

from __future__ import annotations

import collections
import json

import numpy as np
import pytest

from jaxsparse import data
from jaxsparse.data import shards, tfds_builder
from jaxsparse.errors import ConfigError

from data_utils import synthetic_config

SEQ, BATCH, SHARDS = 40, 8, 4
BYTES = data.ByteTokenizer()


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    return synthetic_config(tmp_path_factory, shards=SHARDS, read_threads=2)


def _iterators(cfg, process_count: int, seed: int = 5) -> list[data.TrainIterator]:
    return [data.make_train_iterator(cfg, seq_len=SEQ, global_batch_size=BATCH, process_index=p,
                                     process_count=process_count, seed=seed) for p in range(process_count)]


def _global_batches(iters, steps: int) -> list[np.ndarray]:
    """The global `inputs` of `steps` steps: process 0's rows, then process 1's, ..."""
    return [np.concatenate([next(it)["inputs"] for it in iters]) for _ in range(steps)]


def _state(iters) -> dict:
    """The full state, as a multi-process run gathers it: the shards of every process merged."""
    states = [json.loads(json.dumps(it.get_state())) for it in iters]
    return {**states[0], "shards": {k: v for s in states for k, v in s["shards"].items()}}


def _close(iters) -> None:
    for it in iters:
        it.close()


def test_global_batches_are_the_same_for_1_2_and_4_processes(cfg):
    one = _iterators(cfg, 1)
    want = _global_batches(one, 12)
    for count in (2, 4):
        iters = _iterators(cfg, count)
        for step, (got, ref) in enumerate(zip(_global_batches(iters, 12), want)):
            np.testing.assert_array_equal(got, ref, err_msg=f"{count} processes, step {step}")
        assert _state(iters) == _state(one)  # same positions of every logical shard
        _close(iters)
    _close(one)
    assert len({tuple(b.reshape(-1)[:64]) for b in want}) == 12  # the batches differ from step to step


def test_state_written_by_2_processes_resumes_on_1_and_on_4(cfg):
    ref = _iterators(cfg, 1)
    want = _global_batches(ref, 10)
    two = _iterators(cfg, 2)
    _global_batches(two, 4)
    state = _state(two)
    assert sorted(state["shards"], key=int) == [str(s) for s in range(SHARDS)]
    for count in (1, 4):
        resumed = _iterators(cfg, count)
        for it in resumed:
            it.set_state(state)
        for step, got in enumerate(_global_batches(resumed, 6), start=4):
            np.testing.assert_array_equal(got, want[step], err_msg=f"resumed on {count}, step {step}")
        _close(resumed)
    # and the reverse: one process's state resumes two
    single_state = _state(ref)
    more = _global_batches(ref, 3)
    resumed = _iterators(cfg, 2)
    for it in resumed:
        it.set_state(single_state)
    for got, ref_batch in zip(_global_batches(resumed, 3), more):
        np.testing.assert_array_equal(got, ref_batch)
    _close(resumed + two + ref)


def test_a_state_lacking_a_process_shards_is_refused(cfg):
    two = _iterators(cfg, 2)
    part = json.loads(json.dumps(two[0].get_state()))  # only shards 0, 1: not a gathered state
    single = _iterators(cfg, 1)
    with pytest.raises(ConfigError, match=r"no position for logical shards \[2, 3\]"):
        single[0].set_state(part)
    other = _iterators(cfg, 1, seed=6)
    with pytest.raises(ConfigError, match="shuffle_seed"):
        other[0].set_state(_state(two))
    _close(two + single + other)


def test_shard_rows_come_from_disjoint_document_slices_covering_the_epoch(cfg):
    """Shard s fills rows [2s, 2s+2) from its own documents; over all shards each train document of the
    first epoch is read exactly once."""
    train = tfds_builder.open_splits(cfg)[1]["train"]
    texts = collections.Counter(train[i]["text"].decode("utf-8") for i in range(len(train)))
    it = _iterators(cfg, 1)[0]
    rows_per_shard = BATCH // SHARDS
    streams: list[list[np.ndarray]] = [[] for _ in range(SHARDS)]
    share = [len(range(s, len(train), SHARDS)) for s in range(SHARDS)]
    docs: list[list[str]] = [[] for _ in range(SHARDS)]
    while any(len(d) < n for d, n in zip(docs, share)):
        batch = next(it)
        window = np.concatenate([batch["inputs"], batch["targets"][:, -1:]], axis=1)
        for s in range(SHARDS):
            streams[s].append(window[s * rows_per_shard : (s + 1) * rows_per_shard].reshape(-1))
            docs[s] = _documents(np.concatenate(streams[s]))
    it.close()
    first_epoch = [d for s in range(SHARDS) for d in docs[s][: share[s]]]
    assert collections.Counter(first_epoch) == texts


def _documents(stream: np.ndarray) -> list[str]:
    assert stream[0] == BYTES.bos_id
    ends = np.flatnonzero(stream == BYTES.eos_id)
    starts = np.concatenate([[0], ends[:-1] + 1])
    return [BYTES.decode(stream[a + 1 : b]) for a, b in zip(starts, ends)]


def test_positions_survive_a_collective_without_64_bit_integers():
    positions = np.array([[0, 0], [2**40 + 7, 3], [2**30 - 1, 2**31 - 1]], dtype=np.int64)
    encoded = shards.encode_positions(positions)
    assert encoded.dtype == np.int32
    np.testing.assert_array_equal(shards.decode_positions(encoded), positions)
    assert list(shards.owned_shards(8, 1, 4)) == [2, 3]
