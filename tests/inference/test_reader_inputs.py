"""What a reader (generate, evaluate, export) and the trainer make of a run directory that is not
what it says: a checkpoint whose directory names another step, a file or a symlink in place of a
step or of checkpoints/, an --out inside the run, non-finite sampling settings, a batch that
cannot fit. Met as a user meets them: the command lines as subprocesses on copies of one shared
run (`killed_run`: checkpoints 8 and 16, finished), real files and symlinks."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from fault_utils import RUN_ARGS, reader, unfinished_copy
from train_utils import run_cli, train_cmd


def _copy(killed_run, dst: Path) -> Path:
    shutil.copytree(killed_run["workdir"], dst)
    return dst


def _refused(out, *words: str) -> str:
    """The one `error:` line of a command that exited 2 before computing: nothing on stdout, no
    traceback; it holds each of `words`."""
    assert out.returncode == 2 and out.stdout == "", (out.returncode, out.stdout[-500:], out.stderr[-3000:])
    errors = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in out.stderr, out.stderr[-3000:]
    assert all(w in errors[0] for w in words), errors[0]
    return errors[0]


def _mislabel(work: Path, step: int, copy_of: int) -> None:
    """checkpoints/<step> replaced by a copy of checkpoints/<copy_of>, as a careless `cp -r` does."""
    shutil.rmtree(work / "checkpoints" / str(step))
    shutil.copytree(work / "checkpoints" / str(copy_of), work / "checkpoints" / str(step))


def test_a_checkpoint_holding_another_step_is_damage_to_the_readers(killed_run, tmp_path):
    work = _copy(killed_run, tmp_path / "w")
    _mislabel(work, 16, copy_of=8)
    out = run_cli(reader("evaluate", f"--workdir={work}"), killed_run["env"])
    assert out.returncode == 0, out.stderr[-3000:]
    assert (f"checkpoint {work / 'checkpoints' / '16'} (step 16) is damaged: its metadata holds step 8, "
            "not 16") in out.stderr
    assert json.loads(out.stdout)["step"] == 8  # the loss it reports is step 8's, and says so
    assert sorted(os.listdir(work / "checkpoints")) == ["16", "8"]  # a reader changes nothing
    out = run_cli(reader("export", f"--workdir={work}", "--step=16", f"--out={tmp_path / 'hf'}"),
                  killed_run["env"])
    _refused(out, "(step 16) is damaged: its metadata holds step 8, not 16", "Nothing was read")
    assert not (tmp_path / "hf").exists()


def test_an_older_checkpoint_without_its_step_in_the_metadata_is_judged_by_its_state(killed_run, tmp_path):
    """Checkpoints written before the metadata recorded the step: the train state's own step."""
    from jaxsparse.train.workdir import checksum

    work = _copy(killed_run, tmp_path / "w")
    _mislabel(work, 16, copy_of=8)
    meta_file = work / "checkpoints" / "16" / "meta" / "metadata"
    meta = json.loads(meta_file.read_text())
    del meta["step"]
    meta["checksums"]["meta"] = checksum.json_checksum({k: v for k, v in meta.items() if k != "checksums"})
    meta_file.write_text(json.dumps(meta))
    out = run_cli(reader("evaluate", f"--workdir={work}", "--step=16"), killed_run["env"])
    _refused(out, "(step 16) is damaged: its train state holds step 8, not 16")


def test_the_trainer_sets_a_mislabelled_checkpoint_aside_and_redoes_its_steps(killed_run, tmp_path):
    work = unfinished_copy(killed_run["workdir"], tmp_path / "w")
    _mislabel(work, 16, copy_of=8)
    out = run_cli(train_cmd(killed_run["corpus"], work, *RUN_ARGS), killed_run["env"], timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "(step 16) is damaged: its metadata holds step 8, not 16" in out.stderr
    aside = [p for p in (work / "checkpoints").iterdir() if p.name.startswith("16.corrupt-")]
    assert len(aside) == 1 and "resumed from" in out.stdout
    assert json.loads((work / "summary.json").read_text())["steps"] == 16


@pytest.mark.parametrize("flag", ["--temperature=inf", "--temperature=nan", "--top_p=nan"])
def test_generate_refuses_non_finite_sampling_settings(killed_run, flag):
    out = run_cli(reader("generate", f"--workdir={killed_run['workdir']}", flag), killed_run["env"])
    _refused(out, flag, "must be a")


@pytest.mark.parametrize("kind", ["file", "self-symlink"])
def test_generate_warns_of_a_file_or_a_symlink_in_place_of_the_newest_step(killed_run, tmp_path, kind):
    work = _copy(killed_run, tmp_path / "w")
    newest = work / "checkpoints" / "16"
    shutil.rmtree(newest)
    if kind == "file":
        newest.write_text("mine")
    else:
        newest.symlink_to("16")
    what = "a file" if kind == "file" else "a symlink loop (it points to 16)"
    args = reader("generate", f"--workdir={work}", "--max_new_tokens=2", "--json")
    out = run_cli(args, killed_run["env"])
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"checkpoint {newest} (step 16) is damaged: it is {what}, not a checkpoint directory" in out.stderr
    assert json.loads(out.stdout)["step"] == 8
    assert os.path.lexists(newest) and os.path.islink(newest) == (kind != "file")  # left in place
    _refused(run_cli([*args, "--step=16"], killed_run["env"]), f"(step 16) is damaged: it is {what}")


def test_evaluate_never_writes_into_a_run_directory(killed_run, tmp_path):
    work = _copy(killed_run, tmp_path / "w")
    other = _copy(killed_run, tmp_path / "other")
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in (work / "summary.json", other / "summary.json")}
    for out_file, run_dir in ((work / "summary.json", work), (work / "checkpoints" / "e.json", work),
                              (other / "metrics.jsonl", other)):
        out = run_cli(reader("evaluate", f"--workdir={work}", f"--out={out_file}"), killed_run["env"])
        _refused(out, f"--out={out_file}: it is in the run directory {run_dir}")
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in before} == before
    assert not (work / "checkpoints" / "e.json").exists()


@pytest.mark.parametrize("module", ["export", "evaluate"])
def test_a_symlink_loop_at_checkpoints_is_one_line(killed_run, tmp_path, module):
    work = tmp_path / "w"
    work.mkdir()
    (work / "checkpoints").symlink_to("checkpoints")
    args = reader(module, f"--workdir={work}", *([f"--out={tmp_path / 'hf'}"] if module == "export" else []))
    _refused(run_cli(args, killed_run["env"]), f"{work / 'checkpoints'} is a symlink loop")


def test_evaluate_refuses_a_batch_over_the_memory_with_the_estimate(killed_run):
    out = run_cli(reader("evaluate", f"--workdir={killed_run['workdir']}", "--batch_size=1000000000"),
                  killed_run["env"])
    _refused(out, "the memory plan needs about", "GiB per device", "lower --batch_size")


@pytest.mark.parametrize("kind", ["file", "dangling symlink"])
def test_the_trainer_refuses_a_checkpoints_that_is_not_a_directory_before_computing(killed_run, tmp_path, kind):
    work = tmp_path / "w"
    work.mkdir()
    if kind == "file":
        (work / "checkpoints").write_text("mine")
    else:
        (work / "checkpoints").symlink_to(tmp_path / "gone")
    out = run_cli(train_cmd(killed_run["corpus"], work, *RUN_ARGS), killed_run["env"])
    what = "a file" if kind == "file" else f"a symlink to nothing (it points to {tmp_path / 'gone'})"
    _refused(out, f"{work / 'checkpoints'} is {what}, not the directory of the run's checkpoints")
    assert os.listdir(work) == ["checkpoints"]  # nothing computed, nothing written
    assert kind != "file" or (work / "checkpoints").read_text() == "mine"
