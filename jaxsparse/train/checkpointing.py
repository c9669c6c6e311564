"""Orbax checkpoints of a training run: state, data-iterator position and run identity.

Layout: WORKDIR/checkpoints/<step>/{state, data, meta}. `state` is the TrainState (params,
optimizer state with the masks, step, rng), `data` the data iterator's JSON state, `meta` the
resolved config plus the fields that must match to resume (`identity`). Saves are asynchronous;
orbax writes each one to a temporary directory and renames it when complete, so only complete
checkpoints are ever restored. Nothing here deletes a checkpoint except orbax's keep-N policy.
"""
from __future__ import annotations

import json
import os

import orbax.checkpoint as ocp

from jaxsparse.train.state import TrainState

ITEMS = ("state", "data", "meta")


class Checkpointer:
    """A keep-N, asynchronous orbax CheckpointManager for one workdir."""

    def __init__(self, workdir: str, keep: int, async_save: bool = True):
        self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
        options = ocp.CheckpointManagerOptions(max_to_keep=keep,
                                               enable_async_checkpointing=async_save,
                                               create=True)
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=ITEMS)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def read_meta(self, step: int) -> dict:
        restored = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        return restored.meta

    def check_compatible(self, step: int, ident: dict) -> None:
        """Raise ValueError if checkpoint `step` belongs to a different model or pruning config."""
        saved = self.read_meta(step).get("identity", {})
        diffs = [f"config.{key}: checkpoint has {saved.get(key)!r}, this run has {value!r}"
                 for key, value in ident.items() if saved.get(key) != value]
        if diffs:
            raise ValueError(
                f"the workdir's checkpoint {self.directory}/{step} is from a different run and "
                "was left untouched; use a new --workdir, or the same config:\n  "
                + "\n  ".join(diffs))

    def save(self, step: int, state: TrainState, data_state: dict, meta: dict,
             force: bool = False) -> None:
        self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state),
            meta=ocp.args.JsonSave(json.loads(json.dumps(meta, default=str)))), force=force)

    def restore(self, step: int, abstract: TrainState) -> tuple[TrainState, dict]:
        """(state placed by `abstract`'s shardings, data-iterator state)."""
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), data=ocp.args.JsonRestore()))
        return restored.state, restored.data

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
