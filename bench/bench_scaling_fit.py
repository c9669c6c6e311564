"""Benchmark: batched grid fit (jaxsparse.scaling.fit) vs the looped scipy recipe, side by side.

Both fit L(N, D) = E + A/N^alpha + B/D^beta to the Chinchilla runs (Epoch AI extraction, D = C/(6N),
5 highest-loss runs left out) from all 4,500 grid starts (Hoffmann et al. 2022, approach 3). The reference loops scipy's
L-BFGS-B over the starts (analytic gradient, and/or scipy's finite differences as a plain script would);
it is slow, so it runs --ref_repeats times (default once), the batched fit --repeats times before and after.

    python bench/bench_scaling_fit.py [--reference analytic|numeric|both] [--repeats 5] [--json out.json]

BLAS threads are pinned (default 1, set before numpy loads) because OpenBLAS threading on tiny
matrices slows scipy's L-BFGS-B by an order of magnitude on a busy 2-core machine; 1 is the reference's
fastest setting, so the ratio is conservative.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

PUBLISHED = {"E": 1.82, "A": 482.01, "B": 2085.43, "alpha": 0.3478, "beta": 0.3658}  # Besiroglu et al. 2024


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    data = Path(__file__).resolve().parents[1] / "tests" / "data" / "chinchilla"
    p.add_argument("--csv", default=str(data / "svg_extracted_data.csv"), help="Epoch AI's Chinchilla CSV")
    p.add_argument("--repeats", type=int, default=5, help="batched-fit timings before and after the reference")
    p.add_argument("--ref_repeats", type=int, default=1, help="timings of each looped reference")
    p.add_argument("--reference", choices=("analytic", "numeric", "both"), default="both")
    p.add_argument("--blas_threads", type=int, default=1)
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()
    if args.repeats < 1 or args.ref_repeats < 1 or args.blas_threads < 1:
        p.error("--repeats, --ref_repeats and --blas_threads must be >= 1")
    if not Path(args.csv).is_file():
        p.error(f"--csv {args.csv} does not exist (pass --csv)")
    return args


def main() -> None:
    args = parse()
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.blas_threads)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import numpy as np

    from jaxsparse.scaling import fit, fit_reference, load_runs
    from jaxsparse.scaling.law import PARAM_NAMES

    sizes, tokens, loss, _ = load_runs([args.csv], chinchilla=True, drop_highest=5).points(["n"])
    data = (sizes["n"], tokens, loss)
    print(f"{data[0].size} runs; 4500 starts; BLAS threads {args.blas_threads}; "
          f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs", flush=True)

    def timed(fn, **kw):
        t0 = time.perf_counter()
        res = fn(*data, **kw)
        return time.perf_counter() - t0, res

    batched_times, batched = [], None
    for _ in range(args.repeats):
        dt, batched = timed(fit)
        batched_times.append(dt)
    refs = {}
    kinds = ("analytic", "numeric") if args.reference == "both" else (args.reference,)
    for kind in kinds:
        times = []
        for _ in range(args.ref_repeats):
            dt, res = timed(fit_reference, gradient=kind)
            times.append(dt)
            print(f"  reference ({kind} gradient): {dt:.2f} s", flush=True)
        refs[kind] = (times, res)
    for _ in range(args.repeats):
        batched_times.append(timed(fit)[0])

    t_batched = float(np.median(batched_times))
    report = {"n_runs": int(data[0].size), "blas_threads": args.blas_threads,
              "batched": {"times_s": batched_times, "median_s": t_batched, "params": batched.params(),
                          "objective": batched.objective},
              "published": PUBLISHED}
    rows = [("batched (numpy L-BFGS, all starts at once)", batched)]
    print(f"\nbatched fit: median {t_batched:.3f} s over {len(batched_times)} runs "
          f"(min {min(batched_times):.3f}, max {max(batched_times):.3f})")
    for kind, (times, res) in refs.items():
        t_ref = float(np.median(times))
        agree = {k: abs(getattr(batched, k) / getattr(res, k) - 1) for k in PARAM_NAMES}
        report[f"reference_{kind}"] = {"times_s": times, "median_s": t_ref, "ratio": t_ref / t_batched,
                                       "params": res.params(), "objective": res.objective,
                                       "relative_param_difference": agree,
                                       "objective_relative_difference": batched.objective / res.objective - 1}
        rows.append((f"scipy L-BFGS-B loop, {kind} gradient", res))
        print(f"reference, {kind} gradient: median {t_ref:.2f} s over {len(times)} run(s); "
              f"speed-up {t_ref / t_batched:.1f}x; max relative parameter difference "
              f"{max(agree.values()):.2e}; objective {batched.objective:.12g} vs {res.objective:.12g}")
    print(f"\n{'':44s}" + "".join(f"{k:>11s}" for k in PARAM_NAMES))
    for name, res in rows:
        print(f"{name:44s}" + "".join(f"{getattr(res, k):11.5g}" for k in PARAM_NAMES))
    print(f"{'published (Besiroglu et al. 2024)':44s}" + "".join(f"{PUBLISHED[k]:11.5g}" for k in PARAM_NAMES))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
