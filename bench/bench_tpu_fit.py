"""Compile the paper's runs for TPU slices (no TPU needed) and print the fit table.

    PYTHONPATH=. python bench/bench_tpu_fit.py [SIZE:BATCH:SLICE[:key=value...] ...]

Default: every size of configs/paper.py at batch 256 x 2048 on v4-128, the 1b at batch 1024 and
at batch 4096 with train.grad_accum=auto. Each row is one `compile_for` (minutes on a small CPU);
rows print as they finish (markdown), then all reports as JSON lines to stdout's end.
"""
import importlib.util
import json
import os
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

from jaxsparse.train.tpu_target.compile_for import compile_for  # noqa: E402
from jaxsparse.train.tpu_target.slices import GIB  # noqa: E402

DEFAULT = ["58m:256:v4-128", "162m:256:v4-128", "468m:256:v4-128", "1b:256:v4-128", "1b:1024:v4-128",
           "1b:4096:v4-128:train.grad_accum=auto"]


def paper_config(size: str, batch: int):
    path = os.path.join(os.path.dirname(__file__), "..", "configs", "paper.py")
    spec = importlib.util.spec_from_file_location("paper_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(f"size={size},batch={batch}")


def override(config, assignment: str) -> None:
    key, value = assignment.split("=", 1)
    *parents, leaf = key.split(".")
    node = config
    for p in parents:
        node = node[p]
    old = node[leaf]
    node[leaf] = value if value == "auto" or isinstance(old, str) else type(old)(json.loads(value))


def main(rows):
    print("| size | slice | batch x 2048 | seq/device | grad_accum | GiB/device (train) | fits | "
          "model FLOPs/step | est. step s | compile s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    reports = []
    for row in rows:
        size, batch, slc, *sets = row.split(":")
        config = paper_config(size, int(batch))
        for s in sets:
            override(config, s)
        start = time.time()
        r = compile_for(config, slc, progress=lambda m: print(m, file=sys.stderr, flush=True))
        b = r["bytes_per_device"]
        gib = (b.get("total") or b.get("temporaries") or 0) / GIB
        print(f"| {size} | {slc} | {batch} | {r['sequences_per_device']:g} | {r['grad_accum']} | {gib:.2f} | "
              f"{'yes' if r['fits'] else 'no'} | {r['flops_per_step']['model_total']:.3g} | "
              f"{r['estimated_step_s']:.3f} | {time.time() - start:.0f} |", flush=True)
        reports.append({"row": row, **r})
    for r in reports:
        print(json.dumps(r))


if __name__ == "__main__":
    main(sys.argv[1:] or DEFAULT)
