"""Command line of the trainer.

    python -m jaxsparse.train --config=configs/default.py --workdir=runs/default
    python -m jaxsparse.train --config=configs/paper.py:size=162m,sparsity=0.8 --workdir=DIR \\
        --config.train.batch_size=256
    python -m jaxsparse.train --config=configs/default.py --print_config  # every key, value, doc
    python -m jaxsparse.train --config=configs/default.py --dry_run       # the plan, as JSON

Flags: --restart (start over in a workdir whose outputs cannot be resumed: moves checkpoints/,
metrics.jsonl, summary.json, training.png and tensorboard/ to WORKDIR/previous/<UTC time>/,
deletes nothing), --force (skip the check of the memory plan against the device memory).
Exit status (jaxsparse.errors): 0 done; 1 fault after compute started (the message says what was
saved; rerun to resume); 2 bad input (one line naming the file or field; nothing computed);
3 diverged; 75 preempted by SIGTERM (checkpoint saved; rerun to resume).

Multi-host: on TPU VMs (and GKE TPU pods) and in a SLURM step of several tasks (`srun`),
`jax.distributed.initialize()` is called with no arguments and finds the coordinator, the process
count and this process's index in the environment; elsewhere pass --coordinator_address,
--num_processes and --process_id. CPU processes use gloo.
"""
from __future__ import annotations

import json
import os

import jax
import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from jaxsparse import noise
from jaxsparse.errors import EXIT_DIVERGED, EXIT_OK, EXIT_PREEMPTED, ConfigError, entry_point
from jaxsparse.train.resolve.flags import parse_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file (configs/*.py[:args]).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and summary.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Print the plan as JSON and exit (no allocation).")
_PRINT_CONFIG = flags.DEFINE_bool("print_config", False,
                                  "Print every resolved config key with its value, default and doc.")
_RESTART = flags.DEFINE_bool("restart", False, "Start over: move the workdir's previous outputs "
                             "to WORKDIR/previous/<time>/ (nothing is deleted).")
_COMPILE_FOR = flags.DEFINE_string(
    "compile_for", None, "Compile the train and eval steps for a TPU slice (e.g. v4-128, v5e-256, 2xv5e-256) "
    "on this machine and print their memory and FLOPs as JSON; exit 4 if they do not fit. Writes nothing.")
_FORCE = flags.DEFINE_bool("force", False, "Start even if the memory plan exceeds device memory.")
_COORD = flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-host).")
_NPROC = flags.DEFINE_integer("num_processes", None, "Number of processes (multi-host).")
_PID = flags.DEFINE_integer("process_id", None, "This process's index (multi-host).")
_DIST = flags.DEFINE_enum("distributed", "auto", ["auto", "on", "off"],
                          "Initialise jax.distributed: auto = on a TPU VM, in a SLURM step of "
                          "several tasks, or when the flags above are given.")

# What jax.distributed.initialize() reads in a SLURM step (jax._src.clusters.slurm_cluster).
_SLURM_STEP = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")


def _on_tpu_vm() -> bool:
    """TPU chips here and the TPU runtime's environment (not noise.quiet_libtpu's placeholders,
    which it sets only where there is no TPU chip)."""
    return noise.tpu_chips_present() and any(k in os.environ for k in ("TPU_WORKER_HOSTNAMES", "CLOUD_TPU_TASK_ID",
                                         "TPU_WORKER_ID"))


def _in_slurm_step() -> bool:
    """True in an `srun` step of more than one task (one task alone needs no coordinator)."""
    if not all(k in os.environ for k in _SLURM_STEP):
        return False
    tasks = os.environ["SLURM_NTASKS"]
    if not tasks.isdigit():
        raise ConfigError(f"SLURM_NTASKS={tasks!r}: expected a number of tasks")
    return int(tasks) > 1


def init_distributed() -> None:
    explicit = [v is not None for v in (_COORD.value, _NPROC.value, _PID.value)]
    if any(explicit) and not all(explicit):
        raise ConfigError("--coordinator_address, --num_processes and --process_id go together")
    if _DIST.value == "off":
        return
    if all(explicit) or _in_slurm_step():
        if jax.config.jax_platforms in (None, "", "cpu") or os.environ.get("JAX_PLATFORMS") == "cpu":
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if all(explicit):
        jax.distributed.initialize(coordinator_address=_COORD.value,
                                   num_processes=_NPROC.value, process_id=_PID.value)
    elif _DIST.value == "on" or _on_tpu_vm() or _in_slurm_step():
        jax.distributed.initialize()  # JAX's cluster detection: TPU VM, GKE, SLURM


def _config() -> ml_collections.ConfigDict:
    config = _CONFIG.value
    if config is None:
        raise ConfigError("--config is required, e.g. --config=configs/default.py "
                          "(see --help)")
    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigError(f"--config={flags.FLAGS['config'].config_filename}: get_config() "
                          f"returned a {type(config).__name__}, expected an "
                          "ml_collections.ConfigDict (start from base_config())")
    return config


def run(argv: list[str]) -> int:
    """The trainer's command; returns the exit status (errors become exceptions, see main)."""
    if len(argv) > 1:
        raise ConfigError(f"unexpected arguments: {' '.join(argv[1:])} (flags look like --name=value)")
    config = _config()
    from jaxsparse.train.resolve import train_config  # after flag parsing: keeps --help fast
    from jaxsparse.train.loop import driver
    if _PRINT_CONFIG.value:
        print(train_config.describe_keys(config))
        return EXIT_OK
    if _COMPILE_FOR.value:  # nothing is written; exit 0 fits, 4 does not fit
        from jaxsparse.train.tpu_target import compile_for
        return compile_for.main(config, _COMPILE_FOR.value, dry_run=_DRY_RUN.value)
    if _DRY_RUN.value:
        print(json.dumps(driver.prepare(config).plan.to_json(), indent=2))
        return EXIT_OK
    if not _WORKDIR.value:
        raise ConfigError("--workdir is required (or use --dry_run / --print_config)")
    init_distributed()
    result = driver.train(config, _WORKDIR.value, restart=_RESTART.value, force=_FORCE.value)
    return EXIT_PREEMPTED if "preempted_at" in result else EXIT_OK


@entry_point(exits=((FloatingPointError, EXIT_DIVERGED),))  # divergence: the last good checkpoint is kept
def main(argv: list[str]) -> int:
    """The exit status: bad input (ConfigError) 2; a TrainingFault (an errors.Fault) 1, at once,
    since an orbax thread stuck on the fault must not hang us; `--print_config | head` 0."""
    if not flags.FLAGS["verbosity"].present:  # libraries' INFO chatter off; progress is printed
        logging.set_verbosity(logging.WARNING)
    return run(argv)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
