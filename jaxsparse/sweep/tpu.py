"""Hand a sweep's runs to a TPU VM, one after the other, through launch/run.sh and launch/pull.sh.

Each run trains on all workers (`launch/run.sh`, jax.distributed initialised) with its workdir
under `remote_root` (on the bucket mounted at /mnt/gcs by launch/setup.sh, so every worker sees
it), then `launch/pull.sh` copies summary.json and metrics.jsonl into the local sweep root, so
`--collect` and the skip-if-done rule work here exactly as for local runs. The TPU VM must exist
and be set up (launch/create.sh, copy.sh, setup.sh). With dry_run the scripts print the exact
gcloud commands and nothing runs.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
from typing import Callable

from jaxsparse.sweep.local import is_done
from jaxsparse.sweep.spec import PROJECT_ROOT, RunSpec, SweepError
from jaxsparse.train.workdir import layout

LAUNCH_DIR = os.path.join(PROJECT_ROOT, "launch")
DEFAULT_ENV = ("JAXSPARSE_DATA_DIR=/mnt/gcs/tfds",
               "JAXSPARSE_TOKENIZER=/mnt/gcs/tokenizers/llama2.model")


@dataclasses.dataclass(frozen=True)
class TpuTarget:
    """Where runs go. remote_root: the run directories' parent on the workers (absolute)."""

    tpu_name: str
    zone: str
    project: str
    remote_root: str = "/mnt/gcs/runs"
    env: tuple[str, ...] = DEFAULT_ENV

    def check(self, dry_run: bool) -> None:
        """Clear errors for missing arguments or a missing gcloud, before anything launches."""
        missing = [f"--{f}" for f in ("tpu_name", "zone", "project") if not getattr(self, f)]
        if missing:
            raise SweepError(f"--run tpu needs {', '.join(missing)} (the TPU VM made by "
                             "launch/create.sh, its zone and its GCP project)")
        if not self.remote_root.startswith("/"):
            raise SweepError(f"--remote_root={self.remote_root!r} is not allowed: expected an "
                             "absolute path on the TPU workers, e.g. /mnt/gcs/runs")
        for kv in self.env:
            if "=" not in kv or not kv.split("=", 1)[0]:
                raise SweepError(f"--remote_env={kv!r} is not allowed: expected KEY=VALUE")
        if not dry_run and shutil.which("gcloud") is None:
            raise SweepError("--run tpu needs the gcloud CLI on PATH (https://cloud.google.com/"
                             "sdk/docs/install); use --dry_run to print the commands instead")


def run_commands(run: RunSpec, sweep: str, root: str, target: TpuTarget) -> list[list[str]]:
    """The launch/run.sh and launch/pull.sh command lines of one run."""
    remote_workdir = f"{target.remote_root.rstrip('/')}/{sweep}/{run.workdir}"
    local_workdir = os.path.join(root, run.workdir)
    common = [f"--tpu_name={target.tpu_name}", f"--zone={target.zone}",
              f"--project={target.project}"]
    train = ["python3", "-m", "jaxsparse.train", *run.train_args(remote_workdir),
             "--distributed=on"]
    launch = [os.path.join(LAUNCH_DIR, "run.sh"), *common, f"--run_name={sweep}/{run.workdir}",
              f"--log_dir={layout.tpu_logs_dir(local_workdir)}"]
    for kv in target.env:
        launch += ["--env", kv]
    pull = [os.path.join(LAUNCH_DIR, "pull.sh"), *common, f"--remote_dir={remote_workdir}",
            f"--local_dir={local_workdir}"]
    return [[*launch, "--", *train], pull]


def run_on_tpu(runs: list[RunSpec], sweep: str, root: str, target: TpuTarget, dry_run: bool = False,
               say: Callable[[str], None] = lambda m: print(m, flush=True)) -> int:
    """Run every run without a local summary.json, one after the other; 0 if all succeeded."""
    target.check(dry_run)
    env = dict(os.environ, DRY_RUN="1" if dry_run else "0")
    pending = [r for r in runs if not is_done(root, r)]
    if len(pending) < len(runs):
        say(f"{len(runs) - len(pending)} of {len(runs)} runs already have {layout.SUMMARY}: skipped")
    failed = []
    for i, run in enumerate(pending, 1):
        say(f"[{i}/{len(pending)}] {run.name} on {target.tpu_name}")
        for cmd in run_commands(run, sweep, root, target):
            code = subprocess.call(cmd, env=env)
            if code != 0:
                failed.append(run.name)
                say(f"[{run.name}] FAILED: {os.path.basename(cmd[0])} exited with {code}")
                break
    if failed:
        say(f"{len(failed)} run(s) failed: {', '.join(failed)}; rerun to retry them")
        return 1
    return 0
