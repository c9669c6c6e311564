"""Command line: python -m jaxsparse.scaling {fit,predict,compare,plan} ... (see --help of each).

Sizes in parameters, tokens in tokens, compute in FLOPs, loss in nats per token.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from typing import Any, Sequence

import numpy as np

from jaxsparse.scaling import uncertainty as boot
from jaxsparse.scaling.compare import compare_sizes, format_table
from jaxsparse.scaling.fitting import fit
from jaxsparse.scaling.io import LOSS_KEYS, SIZE_KINDS, Runs, load_runs
from jaxsparse.scaling.law import PARAM_NAMES, ScalingLawFit
from jaxsparse.scaling.planning import SCHEDULES, plan


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (np.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r} must be finite and > 0")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 0")
    return value


def _add_inputs(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", help="run directories (summary.json searched recursively), "
                   "summary.json files or CSV files (columns n or n_avg/..., d, loss)")
    p.add_argument("--loss", choices=sorted(LOSS_KEYS), default="eval",
                   help="summary loss: final_eval_loss (falls back to train where missing) or final_train_loss")
    p.add_argument("--chinchilla", action="store_true",
                   help="inputs are the Epoch AI Chinchilla CSV (Model Size, Training FLOP, loss; D = C/(6N))")
    p.add_argument("--drop_highest", type=_count, default=None,
                   help="leave out the K highest-loss runs (default 5 with --chinchilla, else 0)")
    p.add_argument("--skip_bad_rows", action="store_true",
                   help="skip (and count) runs with missing, NaN or non-positive values instead of failing")
    p.add_argument("--delta", type=_positive, default=1e-3, help="Huber threshold on log-loss residuals")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")


def _add_law(p: argparse.ArgumentParser) -> None:
    p.add_argument("--fit", dest="fit_file", help="fit JSON written by `fit --out` (or with keys E, A, ...)")
    for name in PARAM_NAMES:
        p.add_argument(f"--{name}", type=float, default=None, help=f"law parameter {name}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m jaxsparse.scaling",
                                     description="Fit and use L(N, D) = E + A/N^alpha + B/D^beta.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("fit", help="fit the law to runs")
    _add_inputs(p)
    p.add_argument("--n", dest="kind", choices=list(SIZE_KINDS) + ["n"], default=None,
                   help="model size: avg = N-bar (default), avg_prunable, final, initial; n = CSV column n")
    p.add_argument("--bootstrap", type=_count, default=100, help="bootstrap resamples (0: none)")
    p.add_argument("--confidence", type=float, default=0.95, help="bootstrap interval level")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--no_loo", action="store_true", help="skip the leave-one-out error")
    p.add_argument("--out", help="write the fit JSON here (readable by predict/plan --fit)")
    p.add_argument("--plots", help="write PNG plots into this directory")
    p = sub.add_parser("predict", help="predicted loss at sizes and token counts")
    _add_law(p)
    p.add_argument("--n", dest="sizes", type=_positive, nargs="+", required=True, help="model sizes (parameters)")
    p.add_argument("--d", dest="tokens", type=_positive, nargs="+", required=True, help="training tokens")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("compare", help="fit each model-size choice on the same runs, errors side by side")
    _add_inputs(p)
    p.add_argument("--kinds", nargs="+", choices=list(SIZE_KINDS) + ["n"], default=None,
                   help="size kinds to compare (default: all the inputs have)")
    p.add_argument("--loo", action="store_true", help="also leave-one-out errors")
    p = sub.add_parser("plan", help="compute-optimal sparse run for a FLOP budget")
    _add_law(p)
    p.add_argument("--flops", type=_positive, required=True, help="training compute budget C = 6 N-bar D")
    p.add_argument("--sparsity", type=float, required=True, help="final sparsity S in [0, 1)")
    p.add_argument("--schedule", choices=SCHEDULES, default="geometric")
    p.add_argument("--start", type=float, default=0.25, help="pruning start, fraction of training")
    p.add_argument("--end", type=float, default=0.75, help="pruning end, fraction of training")
    p.add_argument("--prunable_fraction", type=float, default=1.0,
                   help="share of all parameters that is prunable (1.0 for a law fitted on avg_prunable)")
    p.add_argument("--json", action="store_true")
    return parser


def _runs(args: argparse.Namespace) -> Runs:
    drop = args.drop_highest if args.drop_highest is not None else (5 if args.chinchilla else 0)
    return load_runs(args.inputs, loss=args.loss, chinchilla=args.chinchilla, drop_highest=drop,
                     on_bad="skip" if args.skip_bad_rows else "error")


def _law(args: argparse.Namespace) -> ScalingLawFit:
    explicit = {k: getattr(args, k) for k in PARAM_NAMES}
    if args.fit_file:
        if any(v is not None for v in explicit.values()):
            raise ValueError("give either --fit FILE or the parameters --E --A --B --alpha --beta, not both")
        return ScalingLawFit.load(args.fit_file)
    missing = [f"--{k}" for k, v in explicit.items() if v is None]
    if missing:
        raise ValueError(f"give --fit FILE or all of --E --A --B --alpha --beta (missing: {' '.join(missing)})")
    return ScalingLawFit.from_dict(explicit)


def _progress(what: str):
    def report(done: int, total: int) -> None:
        print(f"\r{what}: {done}/{total}", end="\n" if done == total else "", file=sys.stderr, flush=True)
    return report


def _cmd_fit(args: argparse.Namespace) -> dict[str, Any]:
    if args.bootstrap == 1 or not 0 < args.confidence < 1:
        raise ValueError(f"--bootstrap must be 0 or >= 2 (got {args.bootstrap}) and --confidence in (0, 1) "
                         f"(got {args.confidence})")
    runs = _runs(args)
    kind = args.kind or runs.default_kind()
    sizes, tokens, loss, _ = runs.points([kind])
    n = sizes[kind]
    res = fit(n, tokens, loss, delta=args.delta, n_kind=kind)
    out: dict[str, Any] = {"fit": res.to_dict(), "inputs": [str(p) for p in args.inputs], "notes": runs.notes}
    if args.bootstrap:
        out["bootstrap"] = boot.bootstrap(n, tokens, loss, fit=res, n_boot=args.bootstrap, seed=args.seed,
                                          confidence=args.confidence, delta=args.delta,
                                          progress=_progress("bootstrap resamples")).to_dict()
    if not args.no_loo and n.size > len(PARAM_NAMES):
        out["loo"] = boot.leave_one_out(n, tokens, loss, fit=res, delta=args.delta,
                                        progress=_progress("leave-one-out fits")).to_dict()
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            json.dump(out, fh, indent=2)
    if args.plots:
        from jaxsparse.scaling.plots import write_plots

        out["plots"] = [str(p) for p in write_plots(res, n, tokens, loss, args.plots)]
    return out


def _text_fit(out: dict[str, Any]) -> str:
    f = out["fit"]
    lines = [f"fit of {f['n_points']} runs, model size {f['n_kind']}: L = E + A/N^alpha + B/D^beta"]
    ci = out.get("bootstrap", {}).get("intervals", {})
    for k in PARAM_NAMES:
        extra = f"   {out['bootstrap']['confidence']:.0%} CI [{ci[k][0]:.5g}, {ci[k][1]:.5g}]" if k in ci else ""
        lines.append(f"  {k:<5} = {f[k]:.5g}{extra}")
    lines.append(f"  in-sample error (nats): MAE {f['mae']:.4f}  RMSE {f['rmse']:.4f}  max {f['max_error']:.4f}")
    if "loo" in out:
        lo = out["loo"]
        lines.append(f"  leave-one-out error (nats): MAE {lo['mae']:.4f}  RMSE {lo['rmse']:.4f}  "
                     f"max {lo['max_error']:.4f}")
    lines += [f"  plot: {p}" for p in out.get("plots", [])]
    return "\n".join(lines)


def _cmd_predict(args: argparse.Namespace) -> dict[str, Any]:
    law = _law(args)
    n, d = np.asarray(args.sizes), np.asarray(args.tokens)
    if n.size != d.size and 1 not in (n.size, d.size):
        raise ValueError(f"--n has {n.size} values and --d has {d.size}; give equal counts or one of either")
    n, d = np.broadcast_arrays(n, d)
    loss = law.predict(n, d)
    return {"predictions": [{"n": float(a), "d": float(b), "loss": float(c)} for a, b, c in zip(n, d, loss)]}


def _cmd_plan(args: argparse.Namespace) -> dict[str, Any]:
    law = _law(args)
    return plan(law, args.flops, final_sparsity=args.sparsity, start=args.start, end=args.end,
                schedule=args.schedule, prunable_fraction=args.prunable_fraction).to_dict()


def _text_plan(p: dict[str, Any]) -> str:
    return "\n".join([
        f"budget {p['flops']:.3g} FLOPs, {p['schedule']} schedule {p['start']:.2f}->{p['end']:.2f}, "
        f"final sparsity {p['final_sparsity']:.2f} (average density {p['average_density']:.4f})",
        f"  initial (dense) size N0 = {p['n_initial']:.4g} parameters",
        f"  average size N-bar     = {p['n_avg']:.4g}    tokens D = {p['tokens']:.4g}",
        f"  final (inference) size = {p['n_final']:.4g}    predicted loss = {p['predicted_loss']:.4f} nats",
        f"  dense model of equal predicted loss (same D and compute): {p['dense_equal_loss_size']:.4g} parameters",
        f"  inference-size saving vs that dense model: {p['inference_saving']:.1%}"])


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # data notes are reported below instead
            if args.command == "fit":
                out = _cmd_fit(args)
                text = _text_fit(out)
            elif args.command == "compare":
                runs = _runs(args)
                rows = compare_sizes(runs, args.kinds, delta=args.delta, loo=args.loo)
                out, text = {"rows": rows, "notes": runs.notes}, format_table(rows)
            elif args.command == "predict":
                out = _cmd_predict(args)
                text = "\n".join(f"N={r['n']:.4g}  D={r['d']:.4g}  loss={r['loss']:.4f}"
                                 for r in out["predictions"])
            else:
                out = _cmd_plan(args)
                text = _text_plan(out)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for note in out.get("notes", []) if isinstance(out, dict) else []:
        print(f"warning: {note}", file=sys.stderr)
    print(json.dumps(out, indent=2) if args.json else text)
    return 0
