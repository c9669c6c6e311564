"""The readers (generate, evaluate, export) verify what they read with the trainer's own
verification and fallback, and end every fault in the documented way; met as a user meets them:
the command lines as subprocesses, full tmpfs disks, file modes honoured, a live trainer."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

from fault_utils import AS_USER, fill, reader, tmpfs
from train_utils import flip_bit, run_cli, train_cmd, truncate


def _copy(killed_run, dst: Path) -> Path:
    shutil.copytree(killed_run["workdir"], dst)
    return dst


def _damaged_warning(work: Path, step: int) -> str:
    return f"checkpoint {work / 'checkpoints'}/{step} (step {step}) is damaged: "


def test_evaluate_falls_back_from_a_flipped_bit_and_refuses_it_by_step(killed_run, tmp_path):
    work = _copy(killed_run, tmp_path / "w")
    flip_bit(work / "checkpoints" / "16")
    out = run_cli(reader("evaluate", f"--workdir={work}"), killed_run["env"])
    assert out.returncode == 0, out.stderr[-3000:]
    # The arrays are stored compressed: a flipped bit either decodes to other values (the checksums
    # catch it) or stops the decoding (the read fails), by where in the file the write order put it.
    reason = re.search(re.escape(_damaged_warning(work, 16)) + r"(checksum mismatch|its arrays cannot be read)",
                       out.stderr)
    assert reason, out.stderr[-3000:]
    assert json.loads(out.stdout)["step"] == 8
    assert sorted(os.listdir(work / "checkpoints")) == ["16", "8"]  # a reader changes nothing
    out = run_cli(reader("evaluate", f"--workdir={work}", "--step=16"), killed_run["env"])
    assert out.returncode == 2 and out.stdout == "", out.stderr[-3000:]
    assert out.stderr.strip().splitlines()[-1].startswith("error: " + reason.group(0))


def test_export_and_generate_treat_a_truncated_array_file_as_damage(killed_run, tmp_path):
    work = _copy(killed_run, tmp_path / "w")
    truncate(work / "checkpoints" / "16")
    out = run_cli(reader("export", f"--workdir={work}", f"--out={tmp_path / 'hf'}"), killed_run["env"])
    assert out.returncode == 0, out.stderr[-3000:]
    assert _damaged_warning(work, 16) + "its arrays cannot be read" in out.stderr
    assert json.loads(out.stdout)["step"] == 8 and (tmp_path / "hf" / "model.safetensors").exists()
    out = run_cli(reader("generate", f"--workdir={work}", "--step=16", "--max_new_tokens=2"),
                  killed_run["env"])
    assert out.returncode == 2, out.stderr[-3000:]
    assert "Traceback" not in out.stderr and "(step 16) is damaged: its arrays cannot be read" in out.stderr


def test_a_changed_seq_len_in_the_metadata_is_damage_to_evaluate(killed_run, tmp_path):
    work = _copy(killed_run, tmp_path / "w")
    meta_file = work / "checkpoints" / "16" / "meta" / "metadata"
    meta = json.loads(meta_file.read_text())
    meta["config"]["train"]["seq_len"] = 16
    meta_file.write_text(json.dumps(meta))
    out = run_cli(reader("evaluate", f"--workdir={work}"), killed_run["env"])
    assert out.returncode == 0, out.stderr[-3000:]
    assert _damaged_warning(work, 16) + "checksum mismatch in meta" in out.stderr
    result = json.loads(out.stdout)
    assert result["step"] == 8 and result["seq_len"] == 32


def test_evaluate_refuses_an_unusable_out_before_computing(killed_run, tmp_path):
    work = killed_run["workdir"]
    readonly = tmp_path / "readonly"
    readonly.mkdir(mode=0o555)
    for out_file, prefix, words in ((tmp_path / "no_dir" / "e.json", [], "does not exist"),
                                    (tmp_path, [], "is a directory"),
                                    (readonly / "e.json", AS_USER, "Permission denied")):
        out = run_cli([*prefix, *reader("evaluate", f"--workdir={work}", f"--out={out_file}")],
                      killed_run["env"])
        assert out.returncode == 2 and out.stdout == "", out.stderr[-3000:]
        assert words in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert not (tmp_path / "no_dir").exists() and os.listdir(readonly) == []


def test_evaluate_on_a_full_disk_prints_the_result_and_exits_1(killed_run, tmp_path):
    with tmpfs(tmp_path / "disk", "64k") as disk:
        fill(disk)
        out = run_cli(reader("evaluate", f"--workdir={killed_run['workdir']}", f"--out={disk / 'e.json'}"),
                      killed_run["env"])
        assert out.returncode == 1, out.stderr[-3000:]
        assert json.loads(out.stdout)["step"] == 16  # the result is not lost
        assert "could not write the result (No space left on device)" in out.stderr
        assert "Traceback" not in out.stderr and sorted(os.listdir(disk)) == ["filler"]


def test_export_on_a_full_disk_exits_1_with_one_error_line_and_leaves_nothing(killed_run, tmp_path):
    with tmpfs(tmp_path / "disk", "256k") as disk:
        out = run_cli(reader("export", f"--workdir={killed_run['workdir']}", f"--out={disk / 'hf'}"),
                      killed_run["env"])
        assert out.returncode == 1, out.stderr[-3000:]
        errors = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and "could not write the export (" in errors[0]
        assert "No space left on device" in errors[0]
        assert "Traceback" not in out.stderr and os.listdir(disk) == []


def test_export_overwrite_refuses_a_folder_that_is_not_an_export(killed_run, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my own")
    out = run_cli(reader("export", f"--workdir={killed_run['workdir']}", f"--out={mine}", "--overwrite"),
                  killed_run["env"])
    assert out.returncode == 2 and "holds no jaxsparse-export.json" in out.stderr, out.stderr[-3000:]
    assert os.listdir(mine) == ["notes.txt"] and (mine / "notes.txt").read_text() == "my own"


def test_reading_a_live_run_that_keeps_one_checkpoint_does_not_race(killed_run, tmp_path):
    """A trainer saving every step with checkpoint.keep=1 deletes each checkpoint as the next one
    commits; a reader that lists a step and then reads it moves on to the newest remaining one."""
    from jaxsparse.inference.restore import load_run
    from jaxsparse.train.workdir.layout import saved_steps

    work = tmp_path / "live"
    args = train_cmd(killed_run["corpus"], work, "--config.train.steps=100000", "--config.checkpoint.keep=1",
                     "--config.checkpoint.every_steps=1", "--config.eval.every_steps=0")
    trainer = subprocess.Popen(args, env=killed_run["env"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    read, failures, deadline = [], [], time.time() + 240
    try:
        while len(read) < 4 and trainer.poll() is None and time.time() < deadline:
            if not saved_steps(str(work)):  # before the first checkpoint
                time.sleep(0.05)
                continue
            try:
                read.append(load_run(str(work), with_tokenizer=False).step)
            except Exception as err:  # noqa: BLE001 - what a user would see
                failures.append(f"{type(err).__name__}: {err}")
    finally:
        trainer.send_signal(signal.SIGTERM)  # the trainer checkpoints and stops (75)
        _, err = trainer.communicate(timeout=120)
    assert trainer.returncode == 75, err.decode()[-2000:]
    assert len(read) >= 4 and failures == [], failures[:3]
    assert read == sorted(read) and read[-1] > read[0]  # it read a live, moving run
