"""Orbax checkpoints of a training run (layout: `jaxsparse.train.workdir.layout`): <step>/{state,
data, meta}: the TrainState (params, optimizer state with the masks, step, rng), the data
iterator's JSON state, and the config, `identity` (must match to resume), `progress` and the
checksums of every state array, of the data state and of the rest of the meta (`checksum`).

Saves are asynchronous (orbax renames a temporary directory when complete). A checkpoint whose
metadata or data cannot be read or does not match its checksums is damaged. `restore_newest_intact`
(`fallback.newest_intact`) is the one fallback of every reader: the trainer sets a damaged checkpoint aside as
``<step>.corrupt-<UTC time>`` (renamed, never deleted); generate, evaluate and export read the next
older one, changing nothing. A file this user may not read is
not damage (ConfigError, nothing set aside). Only orbax's keep-N policy deletes checkpoints.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Callable, Union

import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxsparse.errors import ConfigError
from jaxsparse.train.workdir import checksum
from jaxsparse.train.workdir import fallback
from jaxsparse.train.workdir import layout
from jaxsparse.train.workdir.fallback import DamagedCheckpoint, short, warn
from jaxsparse.train.steps.state import TrainState

ITEMS = ("state", "data", "meta")
Abstract = Union[TrainState, Callable[[dict], TrainState]]


@dataclasses.dataclass
class Restored:
    """A verified checkpoint: its step, the state (placed by the abstract state's shardings),
    the data iterator's state, the meta (identity, config, progress, checksums) and its path."""

    step: int
    state: TrainState
    data: dict
    meta: dict
    path: str = ""


def _label_error(step: int, recorded: object, where: str) -> DamagedCheckpoint | None:
    """The DamagedCheckpoint to raise unless `recorded` (the step a checkpoint records in `where`)
    is `step`, the step its directory is named by: a copy or a rename of another step's checkpoint."""
    if isinstance(recorded, bool) or not isinstance(recorded, (int, np.integer)) or recorded != step:
        return DamagedCheckpoint(f"{where} holds step {recorded!r}, not {step} (its directory's "
                                 "name): it is a copy or a rename of another checkpoint")
    return None


def _open_manager(directory: str, options: ocp.CheckpointManagerOptions,
                  attempts: int = 50) -> ocp.CheckpointManager:
    """orbax's CheckpointManager of `directory`. Opening one lists the step directories and then
    reads each one's metadata; a live trainer's keep-N can remove a listed step in between
    (FileNotFoundError, or NotADirectoryError while it is being removed). Then list again, up to
    `attempts` times: a removed step is not an error of the reader."""
    for _ in range(attempts - 1):
        try:
            return ocp.CheckpointManager(directory, options=options, item_names=ITEMS)
        except (FileNotFoundError, NotADirectoryError):
            time.sleep(0.02)
    return ocp.CheckpointManager(directory, options=options, item_names=ITEMS)  # its error is raised


class Checkpointer:
    """A keep-N, asynchronous orbax CheckpointManager for one workdir, with verified restores."""

    def __init__(self, workdir: str, keep: int, async_save: bool = True):
        self.workdir = workdir
        self.directory = layout.checkpoint_dir(workdir)  # created by the first save
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=False,
                                               enable_async_checkpointing=async_save)
        self.manager = _open_manager(self.directory, options)
        self.verified: set[int] = set()  # steps restored and verified by this process

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def path(self, step: int) -> str:
        return layout.step_dir(self.workdir, step)

    def read_meta(self, step: int) -> dict:
        return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta

    def _identity_error(self, step: int, ident: dict | None, meta: dict) -> ConfigError | None:
        """The ConfigError to raise if checkpoint `step` (its `meta`) belongs to a different model
        or pruning config than `ident` (None: not checked)."""
        saved = meta.get("identity", {})
        diffs = [f"config.{key}: checkpoint has {saved.get(key)!r}, this run has {value!r}"
                 for key, value in (ident or {}).items() if saved.get(key) != value]
        if not diffs:
            return None
        return ConfigError(
            f"the workdir's checkpoint {self.path(step)} is from a different run and "
            "was left untouched; use a new --workdir, or the same config:\n  " + "\n  ".join(diffs))

    def holds_final(self, steps: int, ident: dict) -> bool:
        """Whether the newest checkpoint is the final one (step `steps`) of this run, with
        readable metadata; ConfigError if it belongs to another run. Damage is not judged here:
        a damaged final checkpoint gives False and the verified restore deals with it
        (`resume_point`, `restore_newest_intact`)."""
        if self.latest_step() != steps:
            return False
        try:
            self._verified_meta(steps, ident)
        except DamagedCheckpoint:  # not a finished run we can vouch for
            return False
        return True

    def resume_point(self, abstract: Abstract, ident: dict, final_step: int,
                     finished_summary: Callable[[], dict | None]) -> tuple[dict | None, Restored | None]:
        """Where the trainer starts: (summary.json, None) when the newest checkpoint is
        `final_step`'s, of this run, with readable metadata, and `finished_summary()` (called only
        then) gives the run's summary.json; else (None, the newest intact checkpoint restored and
        verified, or None: step 0). Damaged checkpoints are set aside; ConfigError when the
        workdir holds another run's checkpoint (nothing is changed) or every checkpoint is
        damaged. Collective."""
        if self.holds_final(final_step, ident):
            summary_json = finished_summary()
            if summary_json is not None:
                return summary_json, None
        try:
            return None, fallback.newest_intact(self, abstract, ident, set_aside=True)
        except ConfigError:
            raise
        except ValueError as err:  # arrays of another shape: another run's checkpoint
            raise ConfigError(str(err)) from err

    def save_step(self, step: int, state: TrainState, data_state: dict, meta: dict,
                  force: bool = False, wait: bool = False) -> None:
        """Save `state`, `data_state` and `meta` (+ the checksums of all three) as step `step`;
        with `wait`, return once it is complete. Collective: every process calls it."""
        meta = dict(json.loads(json.dumps(meta, default=str)), step=int(step))
        sums = {"state": checksum.state_checksums(state), "data": checksum.json_checksum(data_state),
                "meta": checksum.json_checksum(meta)}
        meta = dict(meta, checksums=sums)
        os.makedirs(self.directory, exist_ok=True)
        self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state),
            meta=ocp.args.JsonSave(meta)), force=force)
        if wait:
            self.manager.wait_until_finished()

    def restore(self, step: int, abstract: TrainState) -> tuple[TrainState, dict]:
        """(state placed by `abstract`'s shardings, data-iterator state), not verified."""
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), data=ocp.args.JsonRestore()))
        return restored.state, restored.data

    def restore_verified(self, step: int, abstract: Abstract, ident: dict | None) -> Restored:
        """Restore checkpoint `step` and verify it against its checksums. `abstract`: the
        abstract TrainState, or a function of the (verified) meta that builds it (a reader).

        Raises ConfigError if it belongs to another run (identity differs from `ident`; None:
        not checked) or a file cannot be read for lack of permission, DamagedCheckpoint if its
        metadata or data cannot be read or does not match its checksums."""
        denied = layout.unreadable(self.path(step))
        if denied is not None:
            raise ConfigError(f"checkpoint {self.path(step)} (step {step}): permission denied "
                              f"reading {denied}; it was not set aside. Give this user read "
                              f"access (e.g. chmod -R u+rX {self.path(step)}) and rerun")
        meta = self._verified_meta(step, ident)
        target = abstract(meta) if callable(abstract) else abstract  # its errors are not damage
        differs = checksum.other_layout((meta.get("checksums") or {}).get("state"), target)
        if differs:  # e.g. the pruning state's layout before the masks became a flat tuple
            raise ConfigError(f"checkpoint {self.path(step)} (step {step}) holds a train state of another layout, "
                              f"written by another version of jaxsparse: {differs}; it was left untouched. "
                              "Use a new --workdir, or rerun with --restart to start over from step 0")
        try:
            state, data = self.restore(step, target)
        except ConfigError:
            raise
        except Exception as err:  # noqa: BLE001 - missing, truncated or garbled files
            unreadable = f"its arrays cannot be read ({type(err).__name__}: {short(err)})"
        else:
            unreadable = None
        if unreadable:
            fallback.drop_failed_read_noise()
            raise DamagedCheckpoint(unreadable)
        expected = meta.get("checksums")
        bad = []
        if isinstance(expected, dict):  # None: written before checksums existed (warned above)
            bad = checksum.mismatches(expected.get("state", {}), checksum.state_checksums(state))
            if expected.get("data") != checksum.json_checksum(data):
                bad.append("data (the data iterator state)")
        if bad:
            raise DamagedCheckpoint(f"checksum mismatch in {len(bad)} item(s): "
                                    f"{', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}")
        mislabelled = _label_error(step, np.asarray(state.step.addressable_shards[0].data).item(),
                                   "its train state")
        if mislabelled is not None:
            raise mislabelled
        self.verified.add(step)
        return Restored(step, state, data, meta, self.path(step))

    def _verified_meta(self, step: int, ident: dict | None) -> dict:
        """The meta of `step`, its own checksum verified (everything a resume or a read uses:
        identity, config, progress); DamagedCheckpoint if unreadable or changed, then ConfigError
        if it belongs to another run than `ident` (None: not checked)."""
        try:
            meta = self.read_meta(step)
            if not isinstance(meta, dict):
                raise ValueError(f"meta is a {type(meta).__name__}, not a JSON object")
        except Exception as err:  # noqa: BLE001 - any unreadable metadata is damage
            raise DamagedCheckpoint(f"its metadata cannot be read ({type(err).__name__}: "
                                    f"{short(err)})") from err
        other_run = self._identity_error(step, ident, meta)  # raised once the meta is verified
        mislabelled = (_label_error(step, meta["step"], "its metadata") if "step" in meta
                       else None)  # older checkpoints lack "step"; raised once the meta is verified
        sums = meta.get("checksums")
        if not isinstance(sums, dict):
            warn(f"checkpoint {self.path(step)} (step {step}) has no checksums (written by an "
                  "older jaxsparse): restored without verification")
        elif "meta" not in sums:
            warn(f"checkpoint {self.path(step)} (step {step}) has no checksum of its metadata: its "
                 "config, identity and progress are used unverified")
        elif sums["meta"] != checksum.json_checksum({k: v for k, v in meta.items() if k != "checksums"}):
            raise DamagedCheckpoint("checksum mismatch in meta (its config, identity or progress "
                                    "was changed)")
        if mislabelled is not None:
            raise mislabelled
        if other_run is not None:
            raise other_run
        return meta

    def restore_step(self, step: int, abstract: Abstract, ident: dict | None = None) -> Restored:
        """Checkpoint `step` verified, asked for by name (e.g. --step): a damaged one is
        refused (ConfigError naming it and why), never replaced by another step."""
        try:
            return self.restore_verified(step, abstract, ident)
        except DamagedCheckpoint as err:
            raise fallback.named_step_damaged(self.path(step), step, str(err)) from err

    def restore_newest_intact(self, abstract: Abstract, ident: dict | None,
                              set_aside: bool = True) -> Restored | None:
        """The newest checkpoint that verifies, or None if the workdir has none (fallback:
        the trainer, `set_aside`, renames damaged ones aside; a reader leaves them). Collective."""
        return fallback.newest_intact(self, abstract, ident, set_aside)

    def set_aside(self, step: int, reason: str | None, tag: str = layout.CORRUPT_TAG,
                  what: str = "is damaged") -> str:
        """Report checkpoint `step` (`what`: why) and rename it to <step><tag><UTC time> so
        that orbax no longer lists it; return the new path. Collective (process 0 renames).
        ConfigError if it cannot be renamed (nothing is trained past a damaged checkpoint)."""
        reason = reason or "damaged on another process"
        if jax.process_index() == 0:
            try:
                os.rename(self.path(step), layout.set_aside_path(self.workdir, step, tag))
            except OSError as err:
                raise ConfigError(
                    f"checkpoint {self.path(step)} (step {step}) {what} ({reason}) and could "
                    f"not be set aside ({err.strerror}); move it out of {self.directory} and "
                    "rerun the same command") from err
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils
            multihost_utils.sync_global_devices(f"jaxsparse set aside checkpoint {step}")
        target = layout.newest_set_aside(self.workdir, step, tag)
        warn(f"checkpoint {self.path(step)} (step {step}) {what}: {reason}. Set aside as "
              f"{target}" + ("; trying the previous checkpoint" if tag == layout.CORRUPT_TAG else ""))
        self.manager.reload()
        return target

    def describe(self, step: int | None) -> str:
        """How far checkpoint `step` can be trusted, for messages ("none" if None)."""
        if step is None:
            return "none (a rerun starts from step 0)"
        if step in self.verified:
            return f"{self.path(step)} (verified against its checksums when this run resumed)"
        return (f"{self.path(step)} (saved by this run with checksums; a resume verifies it and "
                "falls back to an older one if it is damaged)")

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.wait()
        self.manager.close()
