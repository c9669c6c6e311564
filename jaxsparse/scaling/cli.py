"""Command line: python -m jaxsparse.scaling {fit,predict,compare,plan} ... (see --help of each).

Sizes in parameters, tokens in tokens, compute in FLOPs, loss in nats per token.
Exit codes (jaxsparse.errors): 0 done; 2 bad input (arguments, files, data), reported as one plain
`error: ...` line on stderr with no traceback, before any fit starts. Data warnings (skipped rows,
duplicate runs) are printed as `warning: ...` lines.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from jaxsparse.errors import ArgumentParser, ConfigError, entry_point
from jaxsparse.scaling import uncertainty
from jaxsparse.scaling.compare import compare_command
from jaxsparse.scaling.fitting import DuplicateRunsWarning, fit_points, validate_points
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


def _where(text: str) -> tuple[str, str]:
    col, eq, value = text.partition("=")
    if not eq or not col.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not COLUMN=VALUE")
    return col.strip(), value.strip()


def _columns(text: str) -> list[str]:
    return [c.strip() for c in text.split(",") if c.strip()]


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
    parser = ArgumentParser(prog="python -m jaxsparse.scaling",
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
    p.add_argument("--plots", help="directory for the three PNG plots (default: fit_plots/ beside --out, "
                   "else beside the first input: inside it for a run directory)")
    p.add_argument("--no-plots", "--no_plots", dest="no_plots", action="store_true", help="write no plots")
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
    p.add_argument("--where", action="append", type=_where, default=[], metavar="COLUMN=VALUE",
                   help="keep only the CSV rows whose COLUMN equals VALUE (repeatable: all must hold)")
    p.add_argument("--by", type=_columns, default=[],
                   metavar="COLUMN[,COLUMN]",
                   help="with --loo: the leave-one-out errors of the first two --kinds (default: the first two "
                   "present of avg, avg_prunable, final, initial) paired per run (mean |error| difference ± "
                   "standard error), overall and per value of these CSV columns (comma-separated)")
    p.add_argument("--late_weighted", metavar="TRAJECTORIES.json",
                   help="also the late-weighted size N_k (jaxsparse.scaling.lateweight), k chosen by nested "
                   "leave-one-configuration-out; the file holds each run's parameter count per step, by name")
    p.add_argument("--configuration", type=_columns, default=[], metavar="COLUMN[,COLUMN]",
                   help="with --late_weighted: the CSV columns whose values make a configuration")
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


def plots_dir(args: argparse.Namespace) -> Path | None:
    """Where `fit` writes its plots: --plots, else fit_plots/ beside --out, else beside the first input
    (inside it when it is a directory); None with --no-plots."""
    if args.no_plots:
        if args.plots:
            raise ValueError("give --plots DIR or --no-plots, not both")
        return None
    if args.plots:
        return Path(args.plots)
    first = Path(args.out) if args.out else Path(args.inputs[0])
    return (first if first.is_dir() and not args.out else first.parent) / "fit_plots"


def _check_outputs(args: argparse.Namespace, plots: Path | None) -> None:
    """Refuse unwritable --out / plot locations before any fit starts (bad input, exit 2)."""
    if args.out:
        out = Path(args.out)
        if out.is_dir() or not out.parent.is_dir():
            raise ValueError(f"--out {out}: " + ("is a directory" if out.is_dir() else
                                                 f"directory {out.parent} does not exist"))
    if plots is not None:
        if plots.exists() and not plots.is_dir():
            raise ValueError(f"plot directory {plots} exists and is not a directory; pass --plots DIR or --no-plots")
        try:
            plots.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ValueError(f"cannot create plot directory {plots} ({err.strerror}); pass --plots DIR or "
                             "--no-plots") from None


def _cmd_fit(args: argparse.Namespace) -> dict[str, Any]:
    if args.bootstrap == 1 or not 0 < args.confidence < 1:
        raise ValueError(f"--bootstrap must be 0 or >= 2 (got {args.bootstrap}) and --confidence in (0, 1) "
                         f"(got {args.confidence})")
    runs = _runs(args)
    kind = args.kind or runs.default_kind()
    sizes, tokens, loss, _ = runs.points([kind])
    n = sizes[kind]
    source = ", ".join(str(p) for p in args.inputs[:3]) + (" ..." if len(args.inputs) > 3 else "")
    # Data errors first (nothing is created before they pass); the one check of these points per fit.
    points = validate_points(n, tokens, loss, source=source)
    plots = plots_dir(args)
    _check_outputs(args, plots)
    res = fit_points(points, delta=args.delta, n_kind=kind)
    out: dict[str, Any] = {"fit": res.to_dict(), "inputs": [str(p) for p in args.inputs], "notes": runs.notes}
    if args.bootstrap:
        out["bootstrap"] = uncertainty.bootstrap_points(points, fit=res, n_boot=args.bootstrap, seed=args.seed,
                                                 confidence=args.confidence, delta=args.delta,
                                                 progress=_progress("bootstrap resamples")).to_dict()
    if not args.no_loo and n.size > len(PARAM_NAMES):
        out["loo"] = uncertainty.leave_one_out_points(points, fit=res, delta=args.delta,
                                               progress=_progress("leave-one-out fits")).to_dict()
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            json.dump(out, fh, indent=2)
    if plots is not None:
        from jaxsparse.scaling.plots import write_plots

        out["plots"] = [str(p) for p in write_plots(res, *points, plots)]
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


def _run(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    if args.command == "fit":
        out = _cmd_fit(args)
        return out, _text_fit(out)
    if args.command == "compare":
        runs = _runs(args)
        return compare_command(runs.select(dict(args.where)) if args.where else runs, args.kinds,
                               delta=args.delta, loo=args.loo, by=args.by, late_weighted=args.late_weighted,
                               configuration=args.configuration)
    if args.command == "predict":
        out = _cmd_predict(args)
        return out, "\n".join(f"N={r['n']:.4g}  D={r['d']:.4g}  loss={r['loss']:.4f}" for r in out["predictions"])
    out = _cmd_plan(args)
    return out, _text_plan(out)


@entry_point
def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (2 = bad input, reported as one `error:` line on stderr)."""
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out, text = _run(args)
    except (ValueError, csv.Error) as err:
        raise ConfigError(str(err)) from None
    except OSError as err:  # an input that cannot be read (permissions, a directory given as a file, ...)
        raise ConfigError(f"{err.filename or 'input'}: {err.strerror or err}") from None
    duplicates = [str(w.message) for w in caught if issubclass(w.category, DuplicateRunsWarning)]
    notes = list(out.get("notes", [])) + duplicates
    for note in dict.fromkeys(notes):
        print(f"warning: {note}", file=sys.stderr)
    print(json.dumps(out, indent=2) if args.json else text)
    return 0
