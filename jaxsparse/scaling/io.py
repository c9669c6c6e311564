"""Reading runs for the scaling-law fit: trainer summary.json files, CSV tables, the Chinchilla CSV.

Every run gives tokens D (training tokens), a loss (nats per token) and one or more model sizes
(parameters): "avg" = N-bar over all parameters (summary key n_avg), "avg_prunable" = N-bar over the
prunable ones (n_avg_prunable), "final" = active parameters at the end (n_final), "initial" = the dense
initial count (n_total), or "n" = a CSV's plain size column. Values are checked when points are taken
(`Runs.points`): a missing, NaN or non-positive value is an error naming file, row and column, or with
on_bad="skip" the row is skipped and counted in a warning. A file's size and its CSV header (no
duplicate or ambiguous columns) are checked before its rows are read.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import math
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

SIZE_KEYS = {"avg": "n_avg", "avg_prunable": "n_avg_prunable", "final": "n_final", "initial": "n_total"}
SIZE_KINDS = tuple(SIZE_KEYS)
LOSS_KEYS = {"eval": "final_eval_loss", "train": "final_train_loss"}
CHINCHILLA_COLUMNS = ("model size", "training flop", "loss")
MAX_TABLE_BYTES = 64 << 20  # a table of runs: far fewer rows than this holds
MAX_SUMMARY_BYTES = 16 << 20


@dataclasses.dataclass
class Runs:
    """Runs read from one or more inputs. sizes: kind -> (R,) parameters (NaN where a run lacks it);
    tokens: (R,) training tokens; loss: (R,) nats; labels: (R,) where each run came from."""

    sizes: dict[str, np.ndarray]
    tokens: np.ndarray
    loss: np.ndarray
    labels: list[str]
    notes: list[str] = dataclasses.field(default_factory=list)
    drop_highest: int = 0
    on_bad: str = "error"
    columns: dict[str, list[str]] = dataclasses.field(default_factory=dict)  # CSV columns as text ("": none)

    def check_columns(self, names: Sequence[str], what: str) -> None:
        """ValueError `what: no column ...` unless every name is a CSV column (case-insensitive)."""
        for col in names:
            if col.lower() not in self.columns:
                raise ValueError(f"{what}: no column {col!r} in the inputs; CSV columns are {sorted(self.columns)}")

    def select(self, where: dict[str, str]) -> "Runs":
        """The runs whose CSV column equals each value of `where` (as numbers when both parse, else as
        text; column names case-insensitive). ValueError naming a missing column or an empty result."""
        keep = np.ones(len(self.labels), bool)
        for col, want in where.items():
            self.check_columns([col], f"--where {col}={want}")
            keep &= np.array([_same(v, want) for v in self.columns[col.lower()]], bool)
        if not keep.any():
            raise ValueError(f"--where {where}: no run of {len(self.labels)} matches")
        idx = np.flatnonzero(keep)
        return dataclasses.replace(self, sizes={k: v[idx] for k, v in self.sizes.items()}, tokens=self.tokens[idx],
                                   loss=self.loss[idx], labels=[self.labels[i] for i in idx], notes=list(self.notes),
                                   columns={k: [v[i] for i in idx] for k, v in self.columns.items()})

    def default_kind(self) -> str:
        """"avg" when any run has it, else the CSV column "n"."""
        return "avg" if "avg" in self.sizes else "n"

    def points(self, kinds: Sequence[str]) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, list[str]]:
        """Checked (sizes per kind, tokens, loss, labels) over the same runs for every kind in kinds."""
        for kind in kinds:
            if kind not in self.sizes:
                have = sorted(self.sizes)
                raise ValueError(f"model size {kind!r} ({SIZE_KEYS.get(kind, kind)}) is not in the inputs; "
                                 f"available: {have}")
        columns = {SIZE_KEYS.get(k, k): self.sizes[k] for k in kinds}
        columns.update({"tokens (d)": self.tokens, "loss": self.loss})
        bad = np.stack([~(np.isfinite(v) & (v > 0)) for v in columns.values()], axis=1)  # (runs, columns)
        keep = ~bad.any(axis=1)
        skipped = int((~keep).sum())
        if skipped:
            row = int(np.flatnonzero(~keep)[0])
            name = list(columns)[int(np.flatnonzero(bad[row])[0])]
            value = columns[name][row]
            shown = "missing or not a number" if np.isnan(value) else repr(float(value))
            first_bad = f"{self.labels[row]}: column {name!r} is {shown}"
            if self.on_bad != "skip":
                raise ValueError(f"{first_bad}; values must be present, finite and > 0 ({skipped} bad "
                                 f"run(s); pass --skip_bad_rows / on_bad='skip' to skip them)")
            self._note(f"skipped {skipped} run(s) with missing, NaN or non-positive values (first: {first_bad})")
        idx = np.flatnonzero(keep)
        if self.drop_highest:
            if self.drop_highest >= idx.size:
                raise ValueError(f"drop_highest={self.drop_highest} leaves no runs out of {idx.size}")
            order = np.argsort(self.loss[idx], kind="stable")
            idx = np.sort(idx[order[: idx.size - self.drop_highest]])
        sizes = {k: self.sizes[k][idx] for k in kinds}
        return sizes, self.tokens[idx], self.loss[idx], [self.labels[i] for i in idx]

    def _note(self, msg: str) -> None:
        if msg not in self.notes:
            self.notes.append(msg)
            warnings.warn(msg, stacklevel=3)


def _same(value: str, want: str) -> bool:
    a, b = _to_float(value), _to_float(want)
    return a == b if math.isfinite(a) and math.isfinite(b) else value.strip() == want.strip()


def _to_float(value: Any) -> float:
    try:
        return float(value) if value not in (None, "") else math.nan
    except (TypeError, ValueError):
        return math.nan


def read_csv(path: Path, *, chinchilla: bool = False) -> Runs:
    """Columns (case-insensitive): d (or tokens), loss, and n and/or n_avg, n_avg_prunable, n_final,
    n_total. chinchilla=True: the Epoch AI Chinchilla table (Model Size, Training FLOP, loss), D = C/(6N).
    Runs are labelled "<path> row <i>", i counting data rows from 1 (the header is not a row)."""
    check_size(path, MAX_TABLE_BYTES, "CSV table of runs")
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            header = _header(path, reader.fieldnames or [])  # format first: before any row is read
            rows = list(reader)
    except (UnicodeDecodeError, csv.Error) as err:
        raise ValueError(f"{path}: not a readable UTF-8 CSV file ({err})") from None
    if chinchilla:
        missing = [c for c in CHINCHILLA_COLUMNS if c not in header]
        if missing:
            raise ValueError(f"{path}: Chinchilla CSV has no column(s) {missing}; columns are {list(header)}")
        n = np.array([_to_float(r[header["model size"]]) for r in rows])
        flops = np.array([_to_float(r[header["training flop"]]) for r in rows])
        sizes, tokens = {"n": n}, flops / (6.0 * n)
    else:
        tok_col = "d" if "d" in header else "tokens" if "tokens" in header else None
        size_cols = {k: c for k, c in [("n", "n")] + [(k, v) for k, v in SIZE_KEYS.items()] if c in header}
        missing = [c for c, ok in (("d", tok_col), ("loss", "loss" in header), ("n", size_cols)) if not ok]
        if missing:
            raise ValueError(f"{path}: CSV has no column(s) {missing}; columns are {list(header)}; needed "
                             f"(case-insensitive): n (or {', '.join(SIZE_KEYS.values())}), d, loss")
        sizes = {k: np.array([_to_float(r[header[c]]) for r in rows]) for k, c in size_cols.items()}
        tokens = np.array([_to_float(r[header[tok_col]]) for r in rows])
    loss = np.array([_to_float(r[header["loss"]]) for r in rows])
    labels = [f"{path} row {i + 1}" for i in range(len(rows))]
    if not rows:
        raise ValueError(f"{path}: CSV has a header but no rows")
    columns = {key: [r.get(raw) or "" for r in rows] for key, raw in header.items()}
    return Runs(sizes, tokens, loss, labels, columns=columns)


def check_size(path: Path, limit: int, what: str) -> None:
    """ValueError naming `path` when it is larger than `limit` bytes (checked before reading it)."""
    size = path.stat().st_size
    if size > limit:
        raise ValueError(f"{path}: {size / 2**20:,.1f} MiB, more than the {limit / 2**20:.0f} MiB a {what} "
                         "may have; is it the right file?")


def _header(path: Path, names: Sequence[str]) -> dict[str, str]:
    """{lower-case name: name as written}; ValueError on duplicate or ambiguous columns."""
    header: dict[str, str] = {}
    for raw in names:
        key = (raw or "").strip().lower()
        if not key:  # a blank column (a spreadsheet's trailing comma): not data
            continue
        if key in header:
            raise ValueError(f"{path}: column {key!r} appears more than once ({header[key]!r} and {raw!r}, "
                             "compared case-insensitively); keep one")
        header[key] = raw
    if "d" in header and "tokens" in header:
        raise ValueError(f"{path}: columns {header['d']!r} and {header['tokens']!r} both give the training "
                         "tokens; keep one")
    return header


def summary_point(path: Path, *, loss: str = "eval") -> tuple[dict[str, float], float, float, str | None]:
    """One trainer summary.json -> (sizes per kind, tokens, loss, note or None)."""
    check_size(path, MAX_SUMMARY_BYTES, "summary.json")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a summary must be a JSON object")
    if "tokens" not in data:
        raise ValueError(f"{path}: summary has no key 'tokens' (training tokens D)")
    present = [k for k in SIZE_KEYS.values() if k in data]
    if not present:
        raise ValueError(f"{path}: summary has none of the size keys {list(SIZE_KEYS.values())}")
    sizes = {kind: _to_float(data[key]) for kind, key in SIZE_KEYS.items() if key in data}
    key = LOSS_KEYS[loss]
    value, note = _to_float(data.get(key)), None
    if not math.isfinite(value) and loss == "eval":
        value = _to_float(data.get(LOSS_KEYS["train"]))
        note = "fallback"
    return sizes, _to_float(data["tokens"]), value, note


def load_runs(paths: Sequence[str | Path], *, loss: str = "eval", chinchilla: bool = False,
              drop_highest: int = 0, on_bad: str = "error") -> Runs:
    """Read runs from CSV files and/or summary.json files and directories (searched recursively).

    loss: "eval" (final_eval_loss; falls back to final_train_loss where missing, counted in a warning) or
    "train". drop_highest: leave out the K highest-loss runs (the Chinchilla recipe leaves out 5).
    on_bad: "error" or "skip" for runs with missing/NaN/non-positive values.
    """
    if loss not in LOSS_KEYS:
        raise ValueError(f"loss must be one of {list(LOSS_KEYS)}, got {loss!r}")
    if on_bad not in ("error", "skip"):
        raise ValueError(f"on_bad must be 'error' or 'skip', got {on_bad!r}")
    if drop_highest < 0:
        raise ValueError(f"drop_highest must be >= 0, got {drop_highest}")
    if not paths:
        raise ValueError("no inputs given: pass run directories, summary.json files or CSV files")
    parts: list[Runs] = []
    fallbacks = 0
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files = sorted(path.rglob("summary.json"))
            if not files:
                raise ValueError(f"{path}: directory holds no summary.json (searched recursively)")
        elif path.is_file():
            files = [path]
        else:
            raise ValueError(f"{path}: no such file or directory")
        for file in files:
            if file.suffix.lower() == ".csv" or chinchilla:
                parts.append(read_csv(file, chinchilla=chinchilla))
                continue
            sizes, tokens, value, note = summary_point(file, loss=loss)
            fallbacks += note == "fallback"
            parts.append(Runs({k: np.array([v]) for k, v in sizes.items()}, np.array([tokens]),
                              np.array([value]), [str(file)]))
    kinds = sorted({k for p in parts for k in p.sizes})
    sizes = {k: np.concatenate([p.sizes.get(k, np.full(len(p.labels), np.nan)) for p in parts]) for k in kinds}
    runs = Runs(sizes, np.concatenate([p.tokens for p in parts]), np.concatenate([p.loss for p in parts]),
                [lab for p in parts for lab in p.labels], drop_highest=drop_highest, on_bad=on_bad,
                columns={c: [v for p in parts for v in p.columns.get(c, [""] * len(p.labels))]
                         for c in dict.fromkeys(c for p in parts for c in p.columns)})
    if fallbacks:
        runs._note(f"{fallbacks} run(s) have no final_eval_loss; used final_train_loss for them")
    return runs
