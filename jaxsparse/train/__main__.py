"""Command line of the trainer.

    python -m jaxsparse.train --config=configs/default.py --workdir=runs/default
    python -m jaxsparse.train --config=configs/paper.py:size=162m,sparsity=0.8 --workdir=DIR \\
        --config.train.batch_size=256
    python -m jaxsparse.train --config=configs/default.py --dry_run      # the plan, as JSON

Multi-host: on TPU VMs `jax.distributed.initialize()` is called with no arguments; elsewhere
pass --coordinator_address, --num_processes and --process_id (CPU processes use gloo).
"""
from __future__ import annotations

import json
import os
import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

EXIT_BAD_INPUT, EXIT_DIVERGED, EXIT_PREEMPTED = 2, 3, 75  # 75: EX_TEMPFAIL, "try again"

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file (configs/*.py[:args]).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and summary.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Print the plan as JSON and exit (no allocation).")
_COMPILE_FOR = flags.DEFINE_string(  # tpu (issue 10): train/compile_target.py
    "compile_for", None, "Compile the train and eval steps for a TPU slice (e.g. v4-128, v5e-256, 2xv5e-256) "
    "on this machine and print their memory and FLOPs as JSON; exit 4 if they do not fit. Writes nothing.")
_COORD = flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-host).")
_NPROC = flags.DEFINE_integer("num_processes", None, "Number of processes (multi-host).")
_PID = flags.DEFINE_integer("process_id", None, "This process's index (multi-host).")
_DIST = flags.DEFINE_enum("distributed", "auto", ["auto", "on", "off"],
                          "Initialise jax.distributed: auto = on a TPU VM or when the flags above "
                          "are given.")


def _on_tpu_vm() -> bool:
    return any(k in os.environ for k in ("TPU_WORKER_HOSTNAMES", "CLOUD_TPU_TASK_ID",
                                         "TPU_WORKER_ID"))


def init_distributed() -> None:
    explicit = [v is not None for v in (_COORD.value, _NPROC.value, _PID.value)]
    if any(explicit) and not all(explicit):
        raise app.UsageError("--coordinator_address, --num_processes and --process_id go together")
    if _DIST.value == "off":
        return
    if all(explicit):
        if jax.config.jax_platforms in (None, "", "cpu") or os.environ.get("JAX_PLATFORMS") == "cpu":
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator_address=_COORD.value,
                                   num_processes=_NPROC.value, process_id=_PID.value)
    elif _DIST.value == "on" or _on_tpu_vm():
        jax.distributed.initialize()


def main(argv) -> None:
    if not flags.FLAGS["verbosity"].present:  # libraries' INFO chatter off; progress is printed
        logging.set_verbosity(logging.WARNING)
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if _CONFIG.value is None:
        raise app.UsageError("--config is required, e.g. --config=configs/default.py")
    from jaxsparse.train import loop  # after flag parsing: keeps --help fast

    config = _CONFIG.value
    try:
        if _COMPILE_FOR.value:  # tpu: nothing is written; exit 0 fits, 4 does not fit
            from jaxsparse.train import compile_target
            sys.exit(compile_target.main(config, _COMPILE_FOR.value, dry_run=_DRY_RUN.value))
        if _DRY_RUN.value:
            plan = loop.prepare(config, None)["plan"]
            print(json.dumps(plan, indent=2))
            return
        if not _WORKDIR.value:
            raise ValueError("--workdir is required (or use --dry_run)")
        init_distributed()
        result = loop.train(config, _WORKDIR.value)
        if "preempted_at" in result:  # checkpoint saved; rerun the command to resume
            sys.exit(EXIT_PREEMPTED)
    except ValueError as err:  # bad input: nothing was computed
        print(f"error: {err}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    except FloatingPointError as err:  # divergence: the last good checkpoint is kept
        print(f"error: {err}", file=sys.stderr)
        sys.exit(EXIT_DIVERGED)


def parse_flags(argv: list[str]) -> list[str]:
    """absl flag parsing, with config errors (unknown keys, bad values) as clean usage errors."""
    try:
        return flags.FLAGS(argv)
    except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as err:
        print(f"error: bad command line (--config, --config.* override or flag): {err}\n"
              "See --helpfull; config keys and defaults: jaxsparse/train/config.py",
              file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
