"""Replication round 2 (configs/sweeps/replication2.py, results/replication/round2.py): the design
as the trainer reads it, and the way it is carried across sessions: finished runs' summaries saved,
then restored on a fresh root with the corpus elsewhere, where the runner counts them as done."""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys

import pytest

from jaxsparse.sweep.check import load_config, plan_runs
from jaxsparse.sweep.collect import finished
from jaxsparse.sweep.spec import load_module, load_sweep
from jaxsparse.train import train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SWEEP = "configs/sweeps/replication2.py"
SCRIPT = os.path.join(REPO, "results", "replication", "round2.py")


def _corpus(folder, kib: int = 4) -> str:
    """A small text corpus (`kib` KiB of paragraphs) in `folder`; returns its path."""
    os.makedirs(folder, exist_ok=True)
    words = "the quick brown fox jumps over the lazy dog while a dictionary defines each word".split()
    paras = [" ".join(words[(i + j) % len(words)] for j in range(40)) for i in range(kib * 4)]
    with open(os.path.join(folder, "text.txt"), "w", encoding="utf-8") as f:
        f.write("\n\n".join(paras))
    return str(folder)


@pytest.fixture(scope="module")
def design(tmp_path_factory):
    corpus = tmp_path_factory.mktemp("corpus")
    _corpus(corpus / "gcide")
    _corpus(corpus / "gcide_quarter")
    runs = load_sweep(f"{SWEEP}:corpus={corpus / 'gcide'}")
    return runs, {name: p.to_json() for name, p in plan_runs(runs).items()}


def test_pairs_have_three_seeds_exact_nbar_and_a_dense_run_at_the_final_size(design):
    runs, plans = design
    by_name = {r.name: r for r in runs}
    base = [r for r in runs if r.tags["kind"] == "matched" and r.tags["variant"] == "base"]
    seeds = {}
    for run in base:
        seeds.setdefault(run.tags["pair"], set()).add(load_config(run).seed)
        mine, partner = plans[run.name], plans[run.tags["match"]]
        assert mine["tokens"] == partner["tokens"]                                    # same D
        assert mine["n_avg"] == pytest.approx(partner["params"]["total"], rel=2e-4)   # N̄ = N
        assert 0.77 < mine["schedule"]["final_sparsity"] < 0.81
        assert mine["tokens"] == pytest.approx(100 * partner["params"]["total"], rel=0.01)
        final = [r for r in runs if r.tags["kind"] == "final_size" and r.tags["pair"] == run.tags["pair"]
                 and load_config(r).seed == load_config(run).seed]
        assert len(final) == 1 and plans[final[0].name]["tokens"] == mine["tokens"]
        n_final = plans[final[0].name]["params"]["total"]
        assert abs(n_final - mine["n_final"]) < 0.35 * mine["n_final"]                # the nearest width
        assert by_name[run.tags["match"]].tags["layers"] == run.tags["layers"]
    assert seeds == {p: {0, 1, 2} for p in ("2L_small", "2L_large", "4L_small", "4L_large")}
    assert {(r.tags["layers"], r.tags["width"]) for r in base} == {(2, 64), (2, 96), (4, 32), (4, 64)}


def test_learning_rate_check_covers_both_sides_and_only_the_repetition_check_repeats_data(design):
    runs, plans = design
    lrs = {}
    for r in (r for r in runs if "pair" in r.tags and r.tags["kind"] != "final_size"):
        if r.tags["variant"].startswith("lrx") or (r.tags["variant"] == "base" and load_config(r).seed == 0):
            lrs.setdefault((r.tags["pair"], r.tags["kind"]), set()).add(load_config(r).train.learning_rate)
    assert len(lrs) == 8 and all(v == {0.005, 0.01, 0.02} for v in lrs.values())
    for r in runs:
        epochs, quarter = r.tags["epochs"], r.tags["variant"] == "4ep"
        assert (3.9 < epochs < 4.1) if quarter else (epochs < 0.6), r.name
        assert load_config(r).data.dataset.endswith("gcide_quarter" if quarter else "gcide")
    assert [r.tags["variant"] for r in runs[:2]] == ["4ep", "4ep"]   # the repetition check first
    assert {r.tags["kind"] for r in runs if r.tags["fit"]} == {"dense", "matched", "final_size"}


def _train_smoke(root, corpus, data_dir) -> list:
    runs = load_sweep(f"{SWEEP}:part=smoke,corpus={corpus}")
    for run in runs:
        config = load_config(run)
        config.data.data_dir = str(data_dir)  # not part of what is trained
        train(config, str(root / run.workdir))
    return runs


def test_finished_runs_saved_then_restored_elsewhere_count_as_done(tmp_path):
    """A session trains and saves; the next one, on a fresh root with the corpus in another folder,
    restores, and the runner's own check finds every run done (so it starts none)."""
    round2 = load_module(SCRIPT)
    store = str(tmp_path / "store")
    corpus = _corpus(tmp_path / "one" / "gcide", kib=400)
    runs = _train_smoke(tmp_path / "root", corpus, tmp_path / "tfds")
    with open(tmp_path / "root" / "runner.jsonl", "w", encoding="utf-8") as f:
        for i, run in enumerate(runs):
            f.write(json.dumps({"name": run.name, "exit": 0, "wall_s": 10.0 + i, "finished": "now"}) + "\n")
    said = round2.save(str(tmp_path / "root"), corpus, part="smoke", store=store)
    assert said[0].startswith("4 of 4 runs finished")
    stored = (tmp_path / "store" / "runs" / runs[1].workdir / "summary.json").read_text()
    assert str(tmp_path / "one") not in stored and round2.CORPUS_MARK in stored
    status = (tmp_path / "store" / "STATUS.md").read_text()
    assert "4 of 4 runs" in status and f"| {runs[3].name} | 13 |" in status and "Missing: none." in status
    walls = [json.loads(line) for line in (tmp_path / "store" / "walltimes.jsonl").read_text().splitlines()]
    assert sorted(w["wall_s"] for w in walls) == [10.0, 11.0, 12.0, 13.0]
    with open(tmp_path / "store" / "all_runs.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert "| smoke | base | 0 |" in (tmp_path / "store" / "pairs.md").read_text()
    assert [(r["name"], r["seed"], r["workdir"]) for r in rows] == [(r.name, str(load_config(r).seed), r.workdir)
                                                                     for r in runs]

    moved = tmp_path / "two" / "gcide"
    shutil.copytree(corpus, moved)
    again = load_sweep(f"{SWEEP}:part=smoke,corpus={moved}")
    assert finished(again, str(tmp_path / "fresh")) == {}
    assert round2.restore(str(tmp_path / "fresh"), str(moved), store) == 4
    assert set(finished(again, str(tmp_path / "fresh"))) == {r.name for r in again}
    assert round2.restore(str(tmp_path / "fresh"), str(moved), store) == 0   # nothing overwritten
    out = subprocess.run([sys.executable, SCRIPT, "run", "--part=smoke", f"--corpus={moved}", "--parallel=1",
                          f"--root={tmp_path / 'third'}", f"--store={store}"], cwd=REPO, capture_output=True,
                         text=True, timeout=600)   # the command a new session runs: nothing left to train
    assert out.returncode == 0, out.stderr
    assert "restored 4 committed summaries" in out.stdout and "4 of 4 runs already have summary.json" in out.stdout
    assert not (tmp_path / "third" / runs[0].workdir / "checkpoints").exists()


def test_corpus_of_another_package_version_is_refused_naming_the_sizes(tmp_path):
    """A dict-gcide .deb whose dictionary is not the sweep's (here a small one) stops `corpus` with
    one line naming both sizes, and writes no corpus."""
    pkg = tmp_path / "pkg"
    (pkg / "DEBIAN").mkdir(parents=True)
    (pkg / "DEBIAN" / "control").write_text("Package: dict-gcide\nVersion: 0.0\nArchitecture: all\n"
                                           "Maintainer: test <t@example.org>\nDescription: test\n")
    (pkg / "usr/share/dictd").mkdir(parents=True)
    subprocess.run(f"printf 'Ab n. a month\\n' | gzip > {pkg}/usr/share/dictd/gcide.dict.dz", shell=True, check=True)
    subprocess.run(["dpkg-deb", "--build", str(pkg), str(tmp_path / "g.deb")], check=True, capture_output=True)
    out = subprocess.run([sys.executable, SCRIPT, "corpus", "--dest", str(tmp_path / "c"),
                          "--deb", str(tmp_path / "g.deb")], cwd=REPO, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 1 and "holds 14 bytes, expected 39952321" in out.stderr, out.stderr
    assert not (tmp_path / "c" / "gcide" / "gcide.txt").exists()


def test_the_default_store_is_committed_not_ignored_by_git():
    """`save` writes under round2.STORE for git to carry across sessions: the repository's ignore
    rules (its `runs/` line ignores every run folder) must let a saved summary through."""
    round2 = load_module(SCRIPT)
    saved = os.path.join(round2.STORE, "runs", "dense_d48_2L_small", "summary.json")
    out = subprocess.run(["git", "check-ignore", "-v", saved], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 1, f"git ignores {saved}: {out.stdout.strip()}"
