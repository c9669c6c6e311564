"""The trainer's command line: bad input exits 2 with one plain line naming the file or field (no
traceback, nothing written); a fault after compute started exits 1 saying what was saved and how to
resume; --help, --print_config, --restart and --force."""
from __future__ import annotations

import json

import pytest
from fault_utils import records, tmpfs
from train_utils import (
    REPO,
    cli_env,
    config_in,
    run_cli,
    train_cmd,
)

from jaxsparse.train import train


@pytest.mark.parametrize("extra, needle", [
    (["--config.train.bogus=1"], "bogus"),
    (["--config.train.batch_size=7"], "batch_size"),
    (["--config.pruning.interval=50"], "interval"),
    (["--config.pruning.final_sparsity=1.5"], "final_sparsity"),
    (["--config.pruning.schedule=square"], "pruning.schedule"),
    (["--config.mesh.tensor=3"], "mesh"),
])
def test_bad_cli_input_is_rejected_before_training(corpus, data_dir, tmp_path, extra, needle):
    out = run_cli(train_cmd(corpus, tmp_path / "w", *extra), cli_env(data_dir))
    assert out.returncode == 2
    assert needle in out.stderr and "error" in out.stderr
    assert not (tmp_path / "w" / "checkpoints").exists()


def test_bad_config_argument_and_unwritable_workdir(corpus, data_dir, tmp_path):
    out = run_cli([*train_cmd(corpus, tmp_path / "w")[:3], "--config=configs/paper.py:sparsity=abc",
                   f"--workdir={tmp_path / 'w'}"], cli_env(data_dir))
    assert out.returncode == 2 and "sparsity" in out.stderr
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match="workdir"):
        train(config_in(corpus, data_dir), str(blocker / "sub"))
    with pytest.raises(ValueError, match="gcsfuse"):
        train(config_in(corpus, data_dir), "gs://bucket/run")


TINY = f"{REPO}/configs/tiny.py"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return cli_env(tmp_path_factory.mktemp("data"))


def _config_file(tmp_path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


BAD_INPUT = [  # (id, config file text or None for configs/tiny.py, extra args, words in the line)
    ("missing config file", None, ["--config=configs/no_such.py"], ["configs/no_such.py", "does not exist"]),
    ("syntax error", "def get_config(:\n    pass\n", [], ["bad.py", "syntax error at line 1"]),
    ("get_config returns a dict", "def get_config():\n    return {'seed': 1}\n", [],
     ["bad.py", "get_config() returned a dict"]),
    ("get_config raises", "def get_config():\n    raise RuntimeError('no corpus here')\n", [],
     ["bad.py", "no corpus here"]),
    ("unknown key in the file",
     "from jaxsparse.train.resolve.train_config import base_config\n"
     "def get_config():\n    c = base_config()\n    c.train.stpes = 3\n    return c\n", ["--dry_run"],
     ["unknown key train.stpes", "did you mean train.steps?"]),
    ("unknown data key in the file",
     "from jaxsparse.train.resolve.train_config import base_config\n"
     "def get_config():\n    c = base_config()\n    c.data.tokenzier = 'bytes'\n    return c\n",
     ["--dry_run"], ["data.tokenzier", "did you mean data.tokenizer?"]),
    ("unknown override", None, ["--config.train.stesp=3"], ["train.stesp", "did you mean train.steps?"]),
    ("unknown section", None, ["--config.trian.steps=3"], ["trian", "did you mean train?"]),
    ("override of the wrong type", None, ["--config.train.steps=abc"], ["config.train.steps=abc"]),
    ("bad config argument", None, [f"--config={TINY}:steps=abc"], ["tiny.py", "steps=abc does not parse"]),
    ("bad value", None, ["--config.pruning.final_sparsity=1.5"], ["final_sparsity"]),
    ("stray argument", None, ["extra"], ["unexpected arguments: extra"]),
    ("memory plan over the device memory", None, ["--config.train.batch_size=1048576"],
     ["memory plan needs", "GiB limit", "--force"]),
]


@pytest.mark.parametrize("text, extra, words", [c[1:] for c in BAD_INPUT], ids=[c[0] for c in BAD_INPUT])
def test_bad_input_exits_2_with_one_plain_line_and_writes_nothing(tmp_path, corpus, env, text,
                                                                  extra, words):
    args = train_cmd(corpus, tmp_path / "w", *extra)
    if text is not None:
        args[3] = f"--config={_config_file(tmp_path, 'bad.py', text)}"
    out = run_cli(args, env)
    assert out.returncode == 2, out.stderr[-2000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr[-2000:]
    assert "Traceback" not in out.stderr and "\\n" not in lines[0] and "\\'" not in lines[0]
    for word in words:
        assert word in lines[0]
    assert not (tmp_path / "w").exists()


def test_help_exits_0_and_points_to_print_config(env):
    out = run_cli([*train_cmd(REPO, REPO)[:3], "--help"], env)
    assert out.returncode == 0 and "--print_config" in out.stdout and "--restart" in out.stdout


def test_print_config_lists_every_key_with_value_default_and_doc(corpus, env):
    out = run_cli([*train_cmd(corpus, REPO)[:4], "--config.train.steps=7", "--print_config"], env)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = {line.split(" = ")[0]: line for line in out.stdout.splitlines()}
    from jaxsparse.train.resolve.train_config import key_docs
    assert set(key_docs()) <= set(lines)  # every key, data's included
    assert lines["train.steps"].startswith("train.steps = 7 ")
    assert "optimizer steps" in lines["train.steps"] and "(default 0)" in lines["train.steps"]
    assert "(default" not in lines["train.b1"] and "AdamW beta1" in lines["train.b1"]
    from jaxsparse.data.data_config import KEYS as DATA_KEYS
    for key, (_, doc) in DATA_KEYS.items():  # the data keys' docs, from their one source
        assert doc and f"# {doc}" in lines[f"data.{key}"], key


def test_outputs_without_a_checkpoint_are_refused_unless_restart(corpus, env, tmp_path):
    workdir = tmp_path / "w"
    workdir.mkdir()
    (workdir / "metrics.jsonl").write_text('{"kind": "train", "step": 3, "loss": 1.0}\n')
    (workdir / "summary.json").write_text('{"steps": 3}')  # a finished run whose checkpoints are gone
    out = run_cli(train_cmd(corpus, workdir, "--config.train.steps=4"), env)
    assert out.returncode == 2 and "holds summary.json but no checkpoint to resume from" in out.stderr
    assert "--restart" in out.stderr
    out = run_cli(train_cmd(corpus, workdir, "--config.train.steps=4", "--restart"), env)
    assert out.returncode == 0, out.stderr[-2000:]
    moved = list((workdir / "previous").iterdir())
    assert len(moved) == 1 and (moved[0] / "metrics.jsonl").read_text().startswith('{"kind"')
    assert (moved[0] / "summary.json").read_text() == '{"steps": 3}'
    assert json.loads((workdir / "summary.json").read_text())["steps"] == 4
    # the console: a start-up line, checkpoint saves and eval results
    assert "test model (" in out.stdout and "4 steps" in out.stdout
    assert "checkpoint: saving step 4" in out.stdout and "eval at step 4: loss" in out.stdout


def test_a_disk_full_fault_after_compute_exits_1_saying_what_was_saved(corpus, env, tmp_path):
    """The workdir on a 512 KiB tmpfs: the metrics fit, a checkpoint (about 1.8 MB, whatever way
    orbax splits it into files) does not, so its save fails with ENOSPC after the steps were
    computed. The console shows one `error:` line saying that nothing was saved; orbax's own
    tracebacks (its threads log one per failed write) go to WORKDIR/trainer.log, not stderr."""
    run_cli([*train_cmd(corpus, tmp_path / "warm", "--config.train.steps=1")], env)  # builds data
    with tmpfs(tmp_path / "disk", "512k") as disk:
        out = run_cli(train_cmd(corpus, disk / "w", "--config.train.steps=8",
                                "--config.checkpoint.every_steps=4", "--config.eval.every_steps=0"), env)
        assert out.returncode == 1, out.stderr[-3000:]
        assert not [p for p in (disk / "w" / "checkpoints").iterdir() if p.name.isdigit()]
        train_steps = [s for kind, s in records(disk / "w") if kind == "train"]
        log = disk / "w" / "trainer.log"
        details = log.read_text(errors="replace")  # what the full disk let it hold
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    lines = out.stderr.splitlines()
    assert not [line for line in lines[:-1] if "orbax" in line], out.stderr[-3000:]
    # before the first step, absl warnings may come (the data builder's: issue 27, case 16)
    assert [line for line in lines if not line.startswith("W")] == [lines[-1]], out.stderr[-3000:]
    last = lines[-1]
    assert last.startswith("error: fault during training") and "No space left on device" in last
    assert "no checkpoint was saved" in last and "rerun the same command to resume" in last
    assert f"(details in {log}" in last
    if "; some could not be written (OSError: [Errno 28]" not in last:
        assert "Traceback" in details and "No space left on device" in details
    assert train_steps and max(train_steps) >= 4  # the metrics of computed steps were kept
    assert "step       4/8" in out.stdout  # steps were computed before the fault
