"""jaxsparse.sweep: sweep definitions, the sweep runner (local or TPU) and result collection.

Command line: ``python -m jaxsparse.sweep SWEEP_FILE --list | --run local|tpu | --collect |
--report`` (see ``__main__``). Python:
  load_sweep("configs/sweeps/scaling.py") -> list[RunSpec]  checked run list (not yet resolved)
  plan_runs(runs) -> {name: Plan}                           every config validated, typed plans
  LocalRunner(runs, root, parallel).run() -> exit status    skip done, resume unfinished
  collect(runs, root) -> (rows, missing); write_csv(rows, path)
Only this package's own CLI imports it; it imports jaxsparse.train and jaxsparse.scaling.
"""
from jaxsparse.sweep.collect import collect, write_csv
from jaxsparse.sweep.spec import RunSpec, SweepError, check_runs, load_sweep

__all__ = ["RunSpec", "SweepError", "check_runs", "collect", "load_sweep", "write_csv"]
