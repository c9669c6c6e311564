"""The run directory's layout has one owner (jaxsparse/train/workdir/layout.py): its names are
spelled nowhere else in the package, steps are listed once, summary.json is read by one function
with one contract, and a `--restart` sets every output aside under previous/."""
from __future__ import annotations

import ast
import json
import os
import re
from pathlib import Path

import pytest

from jaxsparse.errors import ConfigError
from jaxsparse.hf import card
from jaxsparse.train.workdir import layout
from jaxsparse.train.workdir.check import make_writable, move_previous_outputs, outputs_to_set_aside

PACKAGE = Path(__file__).resolve().parents[3] / "jaxsparse"
OWNER = PACKAGE / "train" / "workdir" / "layout.py"
# (file, name): spellings outside the owner that cannot go through it, each with its reason.
ALLOWED = {
    # scaling/ needs only numpy/scipy/jax (never the trainer): it reads the summary.json files a
    # user points it at.
    ("scaling/io.py", layout.SUMMARY), ("scaling/cli.py", layout.SUMMARY),
    # hf/ sits below the trainer (it imports nothing from it): the card names where N̄ came from.
    ("hf/card.py", layout.SUMMARY),
    # the config key metrics.tensorboard (whether to write the directory), not a path.
    ("train/resolve/train_config.py", layout.TENSORBOARD),
    # parses --shard K/N, lists no directory.
    ("sweep/__main__.py", "isdigit"),
    # parses SLURM_NTASKS, lists no directory.
    ("train/__main__.py", "isdigit"),
}


def _names() -> list[str]:
    """Every name of the layout: its upper-case string constants."""
    return [v for k, v in vars(layout).items() if k.isupper() and isinstance(v, str)]


def _docstrings(tree: ast.AST) -> set[int]:
    nodes = [n for n in ast.walk(tree)
             if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))]
    return {id(n.body[0].value) for n in nodes if n.body and isinstance(n.body[0], ast.Expr)
            and isinstance(n.body[0].value, ast.Constant) and isinstance(n.body[0].value.value, str)}


def _spellings(path: Path, names: list[str]) -> set[str]:
    """The layout names a module spells outside its docstrings: in a string literal (f-string
    parts included; a name without a dot, e.g. a directory, only as the whole literal), and
    `isdigit` (listing steps)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docs, found = _docstrings(tree), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr == "isdigit":
            found.add("isdigit")
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            found |= {n for n in names if (n in node.value if "." in n else n == node.value)}
    return found


def test_the_layouts_names_are_spelled_only_by_its_owner():
    names = _names()
    assert {"checkpoints", "summary.json", "metrics.jsonl", "trainer.lock", ".corrupt-"} <= set(names)
    assert _spellings(OWNER, names) >= {"isdigit", *names}  # the check sees them where they are
    found = {(str(p.relative_to(PACKAGE)), name) for p in sorted(PACKAGE.rglob("*.py")) if p != OWNER
             for name in _spellings(p, names)}
    assert found - ALLOWED == set(), "spell these through jaxsparse.train.workdir.layout"
    assert ALLOWED - found == set(), "the allow-list names spellings that are gone: shorten it"


def test_steps_stray_files_and_set_aside_checkpoints_are_told_apart(tmp_path):
    ckpts = Path(layout.checkpoint_dir(str(tmp_path)))
    assert layout.saved_steps(str(tmp_path)) == [] and layout.stray_files(str(tmp_path)) == []
    for name in ("12", "3", "5.corrupt-20260101T000000Z", "8.diverged-20260101T000000Z", "tmp"):
        (ckpts / name).mkdir(parents=True)
    (ckpts / "7").write_text("not a checkpoint")
    assert layout.saved_steps(str(tmp_path)) == [3, 12]
    assert layout.stray_files(str(tmp_path)) == [7]
    assert layout.set_aside_entries(str(tmp_path)) == ["5.corrupt-20260101T000000Z"]
    assert layout.set_aside_entries(str(tmp_path), layout.DIVERGED_TAG) == ["8.diverged-20260101T000000Z"]
    assert layout.step_dir(str(tmp_path), 12) == str(ckpts / "12")
    aside = layout.set_aside_path(str(tmp_path), 12, layout.CORRUPT_TAG)
    assert os.path.dirname(aside) == str(ckpts) and os.path.basename(aside).startswith("12.corrupt-2")
    os.rename(layout.step_dir(str(tmp_path), 12), aside)
    (ckpts / "12.corrupt-20250101T000000Z").mkdir()  # set aside before, by an earlier run
    assert layout.newest_set_aside(str(tmp_path), 12, layout.CORRUPT_TAG) == aside
    assert layout.saved_steps(str(tmp_path)) == [3]


def test_read_summary_gives_none_the_object_or_an_error_naming_the_file(tmp_path):
    assert layout.read_summary(str(tmp_path)) is None
    path = Path(layout.summary_path(str(tmp_path)))
    path.write_text(json.dumps({"steps": 12, "n_avg": 5.0}))
    assert layout.read_summary(str(tmp_path)) == {"steps": 12, "n_avg": 5.0}
    for text, why in (('{"steps": 1', "JSONDecodeError"), ("[1, 2]", "a JSON list, not an object")):
        path.write_text(text)
        with pytest.raises(ConfigError, match=f"{path} is not a summary written by jaxsparse.train .*{why}"):
            layout.read_summary(str(tmp_path))


def test_restart_moves_every_output_under_previous_and_deletes_nothing(tmp_path, capsys):
    work = tmp_path / "run"
    for name in layout.RUN_OUTPUTS:
        target = work / name
        if "." in name:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(name)
        else:
            (target / "events").mkdir(parents=True)  # no step: nothing to resume from
    make_writable(str(work))
    with pytest.raises(ConfigError, match=f"holds {layout.SUMMARY} but no checkpoint to resume from"):
        outputs_to_set_aside(str(work))
    assert outputs_to_set_aside(str(work), restart=True) is True
    move_previous_outputs(str(work))
    moved = list(Path(layout.previous_dir(str(work))).iterdir())
    assert len(moved) == 1 and sorted(p.name for p in moved[0].iterdir()) == sorted(layout.RUN_OUTPUTS)
    assert (moved[0] / layout.SUMMARY).read_text() == layout.SUMMARY
    assert sorted(p.name for p in work.iterdir()) == [layout.PREVIOUS]
    assert f"--restart: moved {', '.join(layout.RUN_OUTPUTS)} to {moved[0]}" in capsys.readouterr().out
    assert outputs_to_set_aside(str(work)) is False  # nothing left to set aside: a fresh start


class _Config:
    class train:  # noqa: N801 - the attribute path of a ConfigDict
        batch_size, seq_len = 4, 8


def test_model_card_figures_come_from_the_records_passed_in():
    records = [{"kind": "eval", "step": 6, "eval_loss": 3.0}, {"kind": "train", "step": 6, "loss": 2.0},
               {"kind": "eval", "step": 6, "eval_loss": 2.5}, {"kind": "eval", "step": 12, "eval_loss": 2.0}]
    meta = {"progress": {"active_sum": 600.0}}
    mid = card.run_figures(6, meta, _Config, 1000, {"steps": 12}, records)
    assert mid == {"n_avg": 100.0, "n_avg_source": "checkpoint progress (steps so far)", "tokens": 6 * 4 * 8,
                   "eval_loss": 2.5}  # the last eval record of that step
    assert card.run_figures(7, {}, _Config, 1000, None, records)["eval_loss"] is None
    final = card.run_figures(12, meta, _Config, 1000, {"steps": 12, "n_avg_realised": 90.0, "tokens": 384,
                                                       "final_eval_loss": 2.0}, records)
    assert final == {"n_avg": 90.0, "n_avg_source": layout.SUMMARY, "tokens": 384, "eval_loss": 2.0}


def test_hf_imports_nothing_from_the_trainer_or_inference():
    """hf/ sits below the trainer (train imports hf.load for init_from): the export's caller reads
    the run directory and passes its contents in."""
    above = ("jaxsparse.train", "jaxsparse.inference")
    found = []
    for path in sorted((PACKAGE / "hf").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            found += [f"{path.name}: {n}" for n in names if n.startswith(above)]
    assert found == []


def test_what_stands_in_place_of_checkpoints_is_named(tmp_path):
    ckpts = Path(layout.checkpoint_dir(str(tmp_path)))
    assert layout.not_a_directory(str(ckpts)) is None  # nothing there yet
    layout.check_checkpoints(str(tmp_path))
    for make, what in ((lambda: ckpts.write_text("x"), "a file"),
                       (lambda: ckpts.symlink_to("checkpoints"), "a symlink loop (it points to checkpoints)"),
                       (lambda: ckpts.symlink_to(tmp_path / "gone"), "a symlink to nothing"),
                       (lambda: ckpts.symlink_to(tmp_path / "f"), "a symlink to a file")):
        (tmp_path / "f").write_text("x")
        make()
        assert layout.not_a_directory(str(ckpts)).startswith(what)
        with pytest.raises(ConfigError, match=re.escape(f"{ckpts} is {what}")):
            layout.check_checkpoints(str(tmp_path))
        ckpts.unlink()
    ckpts.mkdir()
    (ckpts / "8").symlink_to("8")
    assert layout.stray_files(str(tmp_path)) == [8]
    assert layout.stray_reason(str(tmp_path), 8) == ("it is a symlink loop (it points to 8), not a "
                                                     "checkpoint directory")


def test_a_file_to_write_is_placed_in_the_run_directory_it_lands_in(tmp_path):
    run, other, plain = tmp_path / "run", tmp_path / "other", tmp_path / "plain"
    for d in (run / "checkpoints", other / "tensorboard", plain / "checkpoints"):
        d.mkdir(parents=True)
    (other / layout.METRICS).write_text("")
    (tmp_path / "link").symlink_to(run)
    assert layout.run_dir_holding(str(run / "summary.json"), str(run)) == str(run)
    assert layout.run_dir_holding(str(tmp_path / "link" / "x.json"), str(run)) == str(run)
    assert layout.run_dir_holding(str(other / "tensorboard" / "x.json"), str(run)) == str(other)
    assert layout.run_dir_holding(str(plain / "x.json"), str(run)) is None  # checkpoints/ alone: anything
    assert layout.run_dir_holding(str(tmp_path / "x.json"), str(run)) is None
    results = tmp_path / "results"  # where an earlier `evaluate --out` wrote a summary.json
    results.mkdir()
    (results / layout.SUMMARY).write_text("{}")
    assert layout.run_dir_holding(str(results / layout.SUMMARY), str(run)) is None
