"""Orbax checkpoints of a training run: state, data-iterator position and run identity.

Layout: WORKDIR/checkpoints/<step>/{state, data, meta}. `state` is the TrainState (params,
optimizer state with the masks, step, rng), `data` the data iterator's JSON state, `meta` the
resolved config, the fields that must match to resume (`identity`) and the checksums of every
state array and of the data state (`checksums`, see `jaxsparse.train.checksum`).

Saves are asynchronous; orbax writes each one to a temporary directory and renames it when
complete. A restore verifies the checksums; a checkpoint that fails (unreadable metadata,
unreadable or missing data, a checksum mismatch) is reported by path and step and set aside as
``<step>.corrupt-<UTC time>`` (renamed, never deleted; orbax no longer sees it as a step), and
the next older one is tried. Nothing here deletes a checkpoint except orbax's keep-N policy.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import time

import jax
import orbax.checkpoint as ocp
from absl import logging

from jaxsparse.errors import ConfigError
from jaxsparse.train import checksum
from jaxsparse.train.state import TrainState

ITEMS = ("state", "data", "meta")
CORRUPT_TAG = ".corrupt-"


@dataclasses.dataclass
class Restored:
    """A verified checkpoint: its step, the state (placed by the abstract state's shardings),
    the data iterator's state and the meta (identity, config, progress, checksums)."""

    step: int
    state: TrainState
    data: dict
    meta: dict


class DamagedCheckpoint(Exception):
    """A checkpoint that cannot be trusted (the message says why)."""


def _warn(message: str) -> None:
    logging.warning(message)
    if jax.process_index() == 0:
        print(f"warning: {message}", file=sys.stderr, flush=True)


def _all_agree(ok: bool) -> bool:
    """True when `ok` holds on every process (one process: `ok`)."""
    if jax.process_count() == 1:
        return ok
    import numpy as np
    from jax.experimental import multihost_utils
    return bool(np.all(multihost_utils.process_allgather(np.asarray(ok))))


class Checkpointer:
    """A keep-N, asynchronous orbax CheckpointManager for one workdir, with verified restores."""

    def __init__(self, workdir: str, keep: int, async_save: bool = True):
        self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
        options = ocp.CheckpointManagerOptions(max_to_keep=keep,
                                               enable_async_checkpointing=async_save,
                                               create=True)
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=ITEMS)
        self.verified: set[int] = set()  # steps restored and verified by this process

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def path(self, step: int) -> str:
        return os.path.join(self.directory, str(step))

    def read_meta(self, step: int) -> dict:
        restored = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        return restored.meta

    def check_compatible(self, step: int, ident: dict, meta: dict | None = None) -> None:
        """Raise ConfigError if checkpoint `step` belongs to a different model or pruning config."""
        saved = (meta if meta is not None else self.read_meta(step)).get("identity", {})
        diffs = [f"config.{key}: checkpoint has {saved.get(key)!r}, this run has {value!r}"
                 for key, value in ident.items() if saved.get(key) != value]
        if diffs:
            raise ConfigError(
                f"the workdir's checkpoint {self.path(step)} is from a different run and "
                "was left untouched; use a new --workdir, or the same config:\n  "
                + "\n  ".join(diffs))

    def holds_final(self, steps: int, ident: dict) -> bool:
        """Whether the newest checkpoint is the final one (step `steps`) of this run, with
        readable metadata; ConfigError if it belongs to another run. Damage is not judged here:
        a damaged final checkpoint gives False and `restore_newest_intact` deals with it."""
        if self.latest_step() != steps:
            return False
        try:
            meta = self.read_meta(steps)
        except Exception:  # noqa: BLE001 - unreadable: not a finished run we can vouch for
            return False
        if not isinstance(meta, dict):
            return False
        self.check_compatible(steps, ident, meta)
        return True

    def save(self, step: int, state: TrainState, data_state: dict, meta: dict,
             force: bool = False) -> None:
        """Save `state`, `data_state` and `meta` (+ the checksums of both) as step `step`.
        Collective: every process calls it."""
        sums = {"state": checksum.state_checksums(state), "data": checksum.json_checksum(data_state)}
        meta = json.loads(json.dumps(dict(meta, checksums=sums), default=str))
        self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state),
            meta=ocp.args.JsonSave(meta)), force=force)

    def restore(self, step: int, abstract: TrainState) -> tuple[TrainState, dict]:
        """(state placed by `abstract`'s shardings, data-iterator state), not verified."""
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), data=ocp.args.JsonRestore()))
        return restored.state, restored.data

    def restore_verified(self, step: int, abstract: TrainState, ident: dict) -> Restored:
        """Restore checkpoint `step` and verify it against its checksums.

        Raises ConfigError if it belongs to another run (identity differs), DamagedCheckpoint
        if its metadata or data cannot be read or does not match its checksums."""
        try:
            meta = self.read_meta(step)
            if not isinstance(meta, dict):
                raise ValueError(f"meta is a {type(meta).__name__}, not a JSON object")
        except Exception as err:  # noqa: BLE001 - any unreadable metadata is damage
            raise DamagedCheckpoint(f"its metadata cannot be read ({type(err).__name__}: "
                                    f"{_short(err)})") from err
        self.check_compatible(step, ident, meta)
        try:
            state, data = self.restore(step, abstract)
        except Exception as err:  # noqa: BLE001 - missing, truncated or garbled files
            raise DamagedCheckpoint(f"its arrays cannot be read ({type(err).__name__}: "
                                    f"{_short(err)})") from err
        expected = meta.get("checksums")
        if expected is None:
            _warn(f"checkpoint {self.path(step)} (step {step}) has no checksums (written by an "
                  "older jaxsparse): restored without verification")
            return Restored(step, state, data, meta)
        bad = checksum.mismatches(expected.get("state", {}), checksum.state_checksums(state))
        if expected.get("data") != checksum.json_checksum(data):
            bad.append("data (the data iterator state)")
        if bad:
            raise DamagedCheckpoint(f"checksum mismatch in {len(bad)} item(s): "
                                    f"{', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}")
        self.verified.add(step)
        return Restored(step, state, data, meta)

    def restore_newest_intact(self, abstract: TrainState, ident: dict) -> Restored | None:
        """The newest checkpoint that verifies, or None if the workdir has none.

        Every newer damaged checkpoint is reported by path and step and set aside. If there
        were checkpoints but every one is damaged, raise ConfigError naming them (set aside
        too): resuming from scratch would silently redo the run. Collective."""
        set_aside: list[str] = []
        for step in sorted(self.manager.all_steps(), reverse=True):
            reason = None
            try:
                restored = self.restore_verified(step, abstract, ident)
            except DamagedCheckpoint as err:
                reason = str(err)
            if _all_agree(reason is None):
                if set_aside:
                    _warn(f"resuming from the newest intact checkpoint {self.path(step)} "
                          f"(step {step}, verified)")
                return restored
            set_aside.append(self.set_aside(step, reason or "damaged on another process"))
        if set_aside:
            raise ConfigError(
                f"every checkpoint in {self.directory} is damaged; each was set aside (renamed, "
                f"not deleted): {', '.join(set_aside)}. Nothing was trained. To start the run "
                "over from step 0, rerun with --restart (or use a new --workdir)")
        return None

    def set_aside(self, step: int, reason: str) -> str:
        """Report checkpoint `step` as damaged and rename it to <step>.corrupt-<UTC time> so
        that orbax no longer lists it; return the new path. Collective (process 0 renames)."""
        if jax.process_index() == 0:
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            os.rename(self.path(step), f"{self.path(step)}{CORRUPT_TAG}{stamp}")
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils
            multihost_utils.sync_global_devices(f"jaxsparse set aside checkpoint {step}")
        prefix = f"{step}{CORRUPT_TAG}"
        target = os.path.join(self.directory, max(
            (n for n in os.listdir(self.directory) if n.startswith(prefix)), default=prefix + "?"))
        _warn(f"checkpoint {self.path(step)} (step {step}) is damaged: {reason}. "
              f"Set aside as {target}; trying the previous checkpoint")
        self.manager.reload()
        return target

    def describe(self, step: int | None) -> str:
        """How far checkpoint `step` can be trusted, for messages ("none" if None)."""
        if step is None:
            return "none"
        if step in self.verified:
            return f"{self.path(step)} (verified against its checksums when this run resumed)"
        return (f"{self.path(step)} (saved by this run with checksums; a resume verifies it and "
                "falls back to an older one if it is damaged)")

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def _short(err: BaseException, limit: int = 300) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= limit else text[:limit] + " ..."
