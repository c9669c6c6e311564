"""The trainer's fault paths, met as a user meets them (the command line as a subprocess, SIGKILL,
full tmpfs disks, file modes honoured): each ends with the documented exit code and message, and
nothing already written is lost. The runs damage copies of one shared run (`killed_run`)."""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from fault_utils import AS_USER, bind_mounted, fill, kill_when, records, tmpfs, unfinished_copy
from train_utils import data_files, flip_bit, garbage_meta, run_cli, train_cmd


def _summary(workdir: Path) -> dict:
    return json.loads((workdir / "summary.json").read_text())


def _error_lines(stderr: str) -> list[str]:
    return [line.lstrip() for line in stderr.splitlines() if line.lstrip().startswith("error: ")]


def _train(killed_run, workdir, *extra, prefix=()):
    args = [*prefix, *killed_run["args"][:4], f"--workdir={workdir}", *killed_run["args"][5:], *extra]
    return run_cli(args, killed_run["env"], timeout=180)


def test_a_kill_right_after_a_checkpoint_finds_its_records_written_and_resumes(killed_run):
    assert killed_run["killed"], "the run ended before its checkpoint 8 committed"
    # every record of step 8 is written before its checkpoint starts
    assert ("train", 8) in killed_run["at_kill"] and ("eval", 8) in killed_run["at_kill"]
    rerun = killed_run["rerun"]
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "resumed from" in rerun.stdout and "redoing the eval" not in rerun.stdout
    keys = records(killed_run["workdir"])
    assert len(keys) == len(set(keys)) and ("eval", 8) in keys and ("eval", 16) in keys


def test_a_resume_whose_eval_record_is_missing_redoes_that_eval(killed_run, tmp_path):
    """A workdir stopped between checkpoint 8 and its eval record (as a trainer that recorded
    the eval after the checkpoint could leave it): the rerun evaluates step 8 first."""
    work = unfinished_copy(killed_run["workdir"], tmp_path / "w")
    shutil.rmtree(work / "checkpoints" / "16")
    lines = (work / "metrics.jsonl").read_text().splitlines()
    kept = [line for line in lines if json.loads(line)["step"] < 8
            or (json.loads(line)["step"] == 8 and json.loads(line)["kind"] != "eval")]
    (work / "metrics.jsonl").write_text("\n".join(kept) + "\n")
    out = _train(killed_run, work)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "redoing the eval of step 8" in out.stdout
    assert out.stdout.index("redoing the eval of step 8") < out.stdout.index("eval at step 8:")
    keys = records(work)
    assert len(keys) == len(set(keys)) and ("eval", 8) in keys and ("eval", 16) in keys
    assert _summary(work)["final_eval_loss"] == _summary(killed_run["workdir"])["final_eval_loss"]


def test_a_checkpoint_without_checksums_resumes_with_a_warning(killed_run, tmp_path):
    work = unfinished_copy(killed_run["workdir"], tmp_path / "w")
    meta = work / "checkpoints" / "16" / "meta" / "metadata"
    meta.write_text(json.dumps({k: v for k, v in json.loads(meta.read_text()).items() if k != "checksums"}))
    out = _train(killed_run, work)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "(step 16) has no checksums" in out.stderr and "damaged" not in out.stderr
    assert f"resumed from {work / 'checkpoints'}/16" in out.stdout


def test_a_rerun_after_every_checkpoint_was_set_aside_refuses_until_restart(killed_run, tmp_path):
    work = unfinished_copy(killed_run["workdir"], tmp_path / "w")
    for step in (8, 16):
        flip_bit(work / "checkpoints" / str(step))
    out = _train(killed_run, work)
    assert out.returncode == 2 and "every checkpoint in" in out.stderr, out.stderr[-3000:]
    metrics = (work / "metrics.jsonl").read_bytes()
    again = _train(killed_run, work)  # the same command again: nothing to resume, nothing lost
    assert again.returncode == 2, again.stderr[-3000:]
    assert "every checkpoint was set aside as damaged" in again.stderr and "--restart" in again.stderr
    assert (work / "metrics.jsonl").read_bytes() == metrics
    restarted = _train(killed_run, work, "--restart")
    assert restarted.returncode == 0, restarted.stderr[-3000:]
    assert _summary(work)["steps"] == 16


def test_a_changed_digit_in_the_metadata_is_damage_and_the_resume_is_right(killed_run, tmp_path):
    work = unfinished_copy(killed_run["workdir"], tmp_path / "w")
    meta = work / "checkpoints" / "16" / "meta" / "metadata"
    text = meta.read_text()
    value = re.search(r'"active_sum": (\d)', text)
    meta.write_text(text[:value.start(1)] + str((int(value.group(1)) + 1) % 10) + text[value.end(1):])
    out = _train(killed_run, work)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "(step 16) is damaged: checksum mismatch in meta" in out.stderr
    assert f"resumed from {work / 'checkpoints'}/8" in out.stdout
    assert _summary(work)["n_avg_realised"] == _summary(killed_run["workdir"])["n_avg_realised"]


def test_an_unwritable_checkpoints_dir_exits_2_before_compute(killed_run, tmp_path):
    work = tmp_path / "w"
    (work / "checkpoints").mkdir(parents=True)
    (work / "checkpoints").chmod(0o555)
    out = _train(killed_run, work, prefix=AS_USER)
    assert out.returncode == 2, out.stderr[-3000:]
    assert _error_lines(out.stderr) == [line for line in _error_lines(out.stderr)
                                        if "(its checkpoints/) is not a writable directory" in line] != []
    assert "step " not in out.stdout and os.listdir(work / "checkpoints") == []


def test_after_a_divergence_the_kept_checkpoint_is_good_and_the_advice_works(killed_run, tmp_path):
    work = tmp_path / "w"
    small = ["--config.train.steps=6", "--config.checkpoint.every_steps=1", "--config.eval.every_steps=0"]
    out = _train(killed_run, work, *small, "--config.train.learning_rate=1e30")
    assert out.returncode == 3, out.stderr[-3000:]
    kept = sorted(p.name for p in (work / "checkpoints").iterdir() if p.name.isdigit())
    assert kept and f"last good checkpoint (its loss was finite): {work}/checkpoints/{kept[-1]}" in out.stderr
    assert any(".diverged-" in p.name for p in (work / "checkpoints").iterdir())
    again = _train(killed_run, work, *small)  # the advice: a lower learning rate, same workdir
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resumed from {work}/checkpoints/{kept[-1]}" in again.stdout


def test_a_resume_on_a_nearly_full_disk_exits_2_and_keeps_metrics(killed_run, tmp_path):
    with tmpfs(tmp_path / "disk", "24m") as disk:
        work = unfinished_copy(killed_run["workdir"], disk / "w")
        before = (work / "metrics.jsonl").read_bytes()
        assert len(before) > 4096  # its rewrite needs two pages or more
        fill(disk, leave_pages=2)  # the probe's page comes back; the lock keeps one
        out = _train(killed_run, work)
        assert out.returncode == 2, out.stderr[-3000:]
        assert "metrics.jsonl: cannot rewrite it to resume (No space left on device)" in out.stderr
        assert "Traceback" not in out.stderr
        assert (work / "metrics.jsonl").read_bytes() == before
        assert not (work / "metrics.jsonl.tmp").exists() and not (work / "trainer.lock").exists()


def test_a_damaged_checkpoint_that_cannot_be_renamed_exits_2(killed_run, tmp_path):
    work = unfinished_copy(killed_run["workdir"], tmp_path / "w")
    garbage_meta(work / "checkpoints" / "16")
    with bind_mounted(work / "checkpoints" / "16"):
        out = _train(killed_run, work)
    assert out.returncode == 2, out.stderr[-3000:]
    assert "(step 16) is damaged (its metadata cannot be read" in out.stderr
    assert "could not be set aside (Device or resource busy)" in out.stderr
    assert "Traceback" not in out.stderr and (work / "checkpoints" / "16").is_dir()


def test_a_workdir_path_that_is_not_utf8_is_refused_up_front(killed_run, tmp_path):
    workdir = os.fsencode(tmp_path) + b"/run\xff"
    args = [os.fsencode(a) for a in killed_run["args"][:4]] + [b"--workdir=" + workdir]
    out = run_cli(args, killed_run["env"])
    assert out.returncode == 2, out.stderr[-3000:]
    assert len(_error_lines(out.stderr)) == 1 and "not UTF-8" in out.stderr
    assert os.listdir(tmp_path) == []


def test_a_directory_named_trainer_lock_exits_2(killed_run, tmp_path):
    (tmp_path / "w" / "trainer.lock").mkdir(parents=True)
    out = _train(killed_run, tmp_path / "w")
    assert out.returncode == 2 and "trainer.lock is not a lock file" in out.stderr, out.stderr[-3000:]
    assert "Traceback" not in out.stderr and os.listdir(tmp_path / "w") == ["trainer.lock"]


def test_a_non_integer_step_in_a_metrics_record_exits_2_naming_the_line(killed_run, tmp_path):
    work = unfinished_copy(killed_run["workdir"], tmp_path / "w")
    lines = (work / "metrics.jsonl").read_text().splitlines()
    lines[2] = json.dumps({**json.loads(lines[2]), "step": "3a"})
    (work / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    out = _train(killed_run, work)
    assert out.returncode == 2, out.stderr[-3000:]
    assert "metrics.jsonl: line 3 has step '3a', not an integer" in out.stderr
    assert "Traceback" not in out.stderr


def test_a_permission_error_is_not_damage_and_sets_nothing_aside(killed_run, tmp_path):
    work = unfinished_copy(killed_run["workdir"], tmp_path / "w")
    locked = data_files(work / "checkpoints" / "16")[0]
    locked.chmod(0)
    out = _train(killed_run, work, prefix=AS_USER)
    assert out.returncode == 2, out.stderr[-3000:]
    assert f"permission denied reading {locked}; it was not set aside" in out.stderr
    assert "damaged" not in out.stderr
    assert sorted(os.listdir(work / "checkpoints")) == ["16", "8"]


def test_a_kill_before_the_first_checkpoint_does_not_block_the_rerun(killed_run, tmp_path):
    work = tmp_path / "w"
    args = train_cmd(killed_run["corpus"], work, "--config.train.steps=40",
                     "--config.checkpoint.every_steps=40", "--config.train.log_every_steps=1")
    metrics = work / "metrics.jsonl"
    assert kill_when(args, killed_run["env"], lambda: metrics.exists() and metrics.stat().st_size > 0)
    assert not (work / "checkpoints").exists() or os.listdir(work / "checkpoints") == []
    out = run_cli(args, killed_run["env"])
    assert out.returncode == 0, out.stderr[-3000:]
    assert "metrics of an attempt that saved no checkpoint: moved" in out.stdout
    moved = list((work / "previous").iterdir())
    assert len(moved) == 1 and (moved[0] / "metrics.jsonl").exists()
    assert _summary(work)["steps"] == 40 and ("train", 1) in records(work)


def test_exit_2_leaves_no_probe_file_no_checkpoints_dir_and_no_workdir(killed_run, tmp_path):
    with tmpfs(tmp_path / "disk", "1m") as disk:
        (disk / "w").mkdir()
        fill(disk)
        out = _train(killed_run, disk / "w")
        assert out.returncode == 2 and "is not a writable directory" in out.stderr, out.stderr[-3000:]
        assert os.listdir(disk / "w") == []  # no .write_probe_* left
    out = _train(killed_run, tmp_path / "fresh", "--config.eval.batches=100000")  # found after the lock
    assert out.returncode == 2 and "config.eval.batches=100000" in out.stderr, out.stderr[-3000:]
    assert not (tmp_path / "fresh").exists()


def test_a_file_in_place_of_the_newest_step_is_set_aside_not_overwritten(killed_run, tmp_path):
    work = unfinished_copy(killed_run["workdir"], tmp_path / "w")
    shutil.rmtree(work / "checkpoints" / "16")
    (work / "checkpoints" / "16").write_text("mine")
    out = _train(killed_run, work)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "(step 16) is damaged: it is a file, not a checkpoint directory" in out.stderr
    aside = [p for p in (work / "checkpoints").iterdir() if p.name.startswith("16.corrupt-")]
    assert len(aside) == 1 and aside[0].read_text() == "mine"
    assert (work / "checkpoints" / "16").is_dir() and _summary(work)["steps"] == 16

