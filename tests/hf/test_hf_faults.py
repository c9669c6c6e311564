"""Faults of the Hugging Face export and import, met as a user meets them: the command lines as
subprocesses on real files (one tiny run and one export of it, shared by the module), and a real
SIGKILL at each step of the export's replacement of an earlier export."""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
safetensors_numpy = pytest.importorskip("safetensors.numpy")

from fault_utils import reader  # noqa: E402
from hf_fixtures import train_tiny_run  # noqa: E402
from train_utils import cli_env, run_cli, train_cmd  # noqa: E402

MARKER = "jaxsparse-export.json"
INDEX = "model.safetensors.index.json"

# Runs `python -m jaxsparse.export ARGS` and SIGKILLs it (a real signal, sent by the process to itself
# from a Python audit hook: nothing of the code under test is replaced) just before the Nth rename,
# exchange (renameat2, looked up through ctypes just before each call) or tree removal that names the
# export ("swap N"), or at the first file removal inside such a tree removal ("remove 1").
# argv: kind, N, the export's folder name, then export's arguments.
KILLER = r"""
import os, runpy, signal, sys
kind, nth, name = sys.argv[1], int(sys.argv[2]), sys.argv[3]
del sys.argv[1:4]
seen = {"n": 0, "removing": False}

def texts(args):
    for a in args:
        for b in (a if isinstance(a, tuple) else (a,)):
            yield b.decode(errors="replace") if isinstance(b, bytes) else str(b)

def hook(event, args):
    named = any(name in t or t == "renameat2" for t in texts(args))
    if event in ("os.rename", "os.replace", "ctypes.dlsym", "shutil.rmtree") and named:
        seen["n"] += 1
        seen["removing"] = event == "shutil.rmtree"
        if kind == "swap" and seen["n"] == nth:
            os.kill(os.getpid(), signal.SIGKILL)
    elif event == "os.remove" and kind == "remove" and seen["removing"]:
        os.kill(os.getpid(), signal.SIGKILL)

sys.addaudithook(hook)
sys.argv[0] = "jaxsparse.export"
runpy.run_module("jaxsparse.export", run_name="__main__", alter_sys=True)
"""


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """A 12-step run (checkpoints 6 and 12) and the export of its step 6, written by the command
    line into a parent folder that did not exist."""
    root = tmp_path_factory.mktemp("hf_faults")
    workdir = train_tiny_run(root, "run")
    env = cli_env(root / "data")
    out = root / "exported" / "default"
    first = run_cli(reader("export", f"--workdir={workdir}", f"--out={out}", "--step=6"), env)
    return {"root": root, "workdir": workdir, "env": env, "export": out, "first": first}


def export(shared: dict, *args: str):
    return run_cli(reader("export", f"--workdir={shared['workdir']}", *args), shared["env"])


def one_error(done, *words: str) -> str:
    """The one `error:` line of a failed command (exit 2, no traceback), holding every word."""
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 2 and len(lines) == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert all(w in lines[0] for w in words), lines[0]
    return lines[0]


def complete_step(folder: Path, files: list[str]) -> int:
    """The step of the complete export at `folder` (every file there, every tensor readable)."""
    assert folder.is_dir() and sorted(p.name for p in folder.iterdir()) == files, folder
    tensors = safetensors_numpy.load_file(str(folder / "model.safetensors"))
    assert len(tensors) > 10 and all(np.all(np.isfinite(t)) for t in tensors.values())
    return json.loads((folder / MARKER).read_text())["step"]


# --- export -------------------------------------------------------------------------------------

def test_export_makes_the_parent_folder_it_writes_into(shared, tmp_path):
    assert shared["first"].returncode == 0, shared["first"].stderr[-3000:]
    assert json.loads(shared["first"].stdout)["step"] == 6
    assert (shared["export"] / "model.safetensors").is_file()
    empty = tmp_path / "no_run"
    empty.mkdir()
    done = run_cli(reader("export", f"--workdir={empty}", f"--out={tmp_path / 'new' / 'model'}"), shared["env"])
    one_error(done, "holds no checkpoints")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["no_run"]  # bad input: no parent made


def test_export_never_writes_into_a_run_directory(shared):
    before = sorted(p.name for p in shared["workdir"].iterdir())
    one_error(export(shared, f"--out={shared['workdir'] / 'hf'}"), "in the run directory", "--out=")
    assert sorted(p.name for p in shared["workdir"].iterdir()) == before


def test_the_export_holds_no_local_path(shared):
    root = str(shared["root"])
    assert os.path.realpath(root) == root
    for path in shared["export"].iterdir():
        assert root.encode() not in path.read_bytes(), path.name
    card = (shared["export"] / "README.md").read_text(encoding="utf-8")
    assert '"dataset": "text:…/corpus"' in card and '"data_dir": "…/data"' in card  # kept, path cut
    assert json.loads((shared["export"] / MARKER).read_text()) == {"step": 6}


@pytest.mark.parametrize("kind,nth", [("swap", 1), ("swap", 2), ("remove", 1)])
def test_export_overwrite_killed_during_the_replacement_leaves_a_complete_export(shared, tmp_path, kind, nth):
    files = sorted(p.name for p in shared["export"].iterdir())
    folder = tmp_path / "hf-export"
    shutil.copytree(shared["export"], folder)
    cmd = [sys.executable, "-c", KILLER, kind, str(nth), folder.name, f"--workdir={shared['workdir']}",
           f"--out={folder}", "--overwrite"]
    done = run_cli(cmd, shared["env"])
    assert done.returncode == -signal.SIGKILL, done.stderr[-3000:]
    assert complete_step(folder, files) in (6, 12)  # the old export or the new one, whole
    left = [p.name for p in tmp_path.iterdir() if p != folder]
    assert all(name.startswith(".hf-export.tmp-") for name in left), left  # what the next export removes


def test_a_later_export_removes_the_leftovers_of_interrupted_ones_and_nothing_else(shared, tmp_path):
    files = sorted(p.name for p in shared["export"].iterdir())
    folder = tmp_path / "hf-export"
    shutil.copytree(shared["export"], folder)
    shutil.copytree(shared["export"], tmp_path / "hf-export.old-1a2b3c4d")  # as earlier versions left it
    half = tmp_path / ".hf-export.tmp-k3j4x9_q"  # a kill while writing model.safetensors
    half.mkdir()
    raw = (folder / "model.safetensors").read_bytes()
    (half / "model.safetensors").write_bytes(raw[: len(raw) // 2])
    others = ["hf-export2", ".hf-export2.tmp-abc", "hf-export.old-notes", ".hf-export.tmp-live"]
    for name in others:
        (tmp_path / name).mkdir()
    live = os.open(tmp_path / ".hf-export.tmp-live", os.O_RDONLY)
    fcntl.flock(live, fcntl.LOCK_EX)  # a running export's folder: held, so kept
    try:
        done = export(shared, f"--out={folder}", "--overwrite")
    finally:
        os.close(live)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(json.loads(done.stdout)["removed_leftovers"]) == [".hf-export.tmp-k3j4x9_q", "hf-export.old-1a2b3c4d"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["hf-export", *others])
    assert complete_step(folder, files) == 12


def test_export_overwrite_through_a_symlink_replaces_its_target_and_keeps_the_link(shared, tmp_path):
    files = sorted(p.name for p in shared["export"].iterdir())
    shutil.copytree(shared["export"], tmp_path / "v1")
    (tmp_path / "model").symlink_to("v1")
    done = export(shared, f"--out={tmp_path / 'model'}", "--overwrite")
    assert done.returncode == 0, done.stderr[-3000:]
    assert os.readlink(tmp_path / "model") == "v1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "v1"]  # no stray entry
    assert complete_step(tmp_path / "v1", files) == 12
    (tmp_path / "gone").symlink_to("nowhere")
    done = export(shared, f"--out={tmp_path / 'gone'}", "--overwrite")
    one_error(done, "is a symlink to 'nowhere', which does not exist")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gone", "model", "v1"]


# --- import (model.init_from=hf:DIR) --------------------------------------------------------------

def _load(folder: Path) -> dict:
    return safetensors_numpy.load_file(str(folder / "model.safetensors"))


def _save(folder: Path, tensors: dict, name: str = "model.safetensors") -> None:
    safetensors_numpy.save_file(tensors, str(folder / name), metadata={"format": "pt"})


def _edit_json(path: Path, edit) -> None:
    path.write_text(json.dumps(edit(json.loads(path.read_text()))))


def _sharded(folder: Path) -> None:
    """model.safetensors split in two shards with their index, as transformers writes large models."""
    tensors = _load(folder)
    (folder / "model.safetensors").unlink()
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[: len(names) // 2],
              "model-00002-of-00002.safetensors": names[len(names) // 2:]}
    for shard, part in shards.items():
        _save(folder, {n: tensors[n] for n in part}, shard)
    index = {"metadata": {}, "weight_map": {n: shard for shard, part in shards.items() for n in part}}
    (folder / INDEX).write_text(json.dumps(index))


def _nan(folder: Path) -> None:
    tensors = _load(folder)
    tensors["model.layers.1.mlp.up_proj.weight"][3, 5] = np.nan
    _save(folder, tensors)


def _float16_inf(folder: Path) -> None:
    tensors = {n: t.astype(np.float16) for n, t in _load(folder).items()}
    tensors["lm_head.weight"][0, 0] = np.inf
    _save(folder, tensors)


def _truncated(folder: Path) -> None:
    raw = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(raw[: len(raw) // 2])


def _index_of_a_bin(folder: Path) -> None:
    tensors = _load(folder)
    torch.save({n: torch.from_numpy(t) for n, t in tensors.items()}, folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    (folder / INDEX).write_text(json.dumps({"weight_map": dict.fromkeys(tensors, "pytorch_model.bin")}))


def _missing_shard(folder: Path) -> None:
    _sharded(folder)
    (folder / "model-00002-of-00002.safetensors").unlink()


def _index_list(folder: Path) -> None:
    _sharded(folder)
    _edit_json(folder / INDEX, lambda index: [index])


BAD_FOLDERS = {
    "int32": (lambda f: _save(f, {n: t.astype(np.int32) for n, t in _load(f).items()}),
              "in model.safetensors has dtype I32; only floating-point weights"),
    "nan": (_nan, "tensor model.layers.1.mlp.up_proj.weight in model.safetensors has 1 non-finite value"),
    "float16_inf": (_float16_inf, "tensor lm_head.weight in model.safetensors has 1 non-finite value"),
    "config_list": (lambda f: _edit_json(f / "config.json", lambda c: [c]), "config.json holds a JSON array"),
    "eps_string": (lambda f: _edit_json(f / "config.json", lambda c: {**c, "rms_norm_eps": "small"}),
                   "config.json: rms_norm_eps='small' is a JSON string; expected a number"),
    "truncated": (_truncated, "model.safetensors is not a readable safetensors file (Error while deserializing"),
    "random": (lambda f: (f / "model.safetensors").write_bytes(np.random.default_rng(0).bytes(4096)),
               "model.safetensors is not a readable safetensors file"),
    "missing_shard": (_missing_shard,
                      f"{INDEX} names the shard model-00002-of-00002.safetensors, which does not exist"),
    "index_list": (_index_list, f"{INDEX} holds a JSON array; expected an object"),
    "index_of_a_bin": (_index_of_a_bin, f"{INDEX} names the shard 'pytorch_model.bin': only safetensors shards"),
}


@pytest.mark.parametrize("case", sorted(BAD_FOLDERS))
def test_a_bad_hf_folder_is_refused_before_training_in_one_line(shared, tmp_path, case):
    damage, words = BAD_FOLDERS[case]
    folder = tmp_path / "llama"
    shutil.copytree(shared["export"], folder)
    damage(folder)
    workdir = tmp_path / "run"
    done = run_cli(train_cmd(shared["root"] / "corpus", workdir, f"--config.model.init_from=hf:{folder}"),
                   shared["env"])
    one_error(done, f"config.model.init_from=hf:{folder}: ", words)
    assert not workdir.exists()  # refused before anything was written or computed


def test_a_sentencepiece_export_holds_no_local_path(shared, tmp_path):
    """A .model file trained elsewhere records its trainer's input files and prefix: the export's
    tokenizer files hold neither, and its tokenizer.model still encodes as the .model does."""
    import sentencepiece as spm
    from jaxsparse.data.tokenizer import load_sentencepiece
    from jaxsparse.hf.tokenizer import write_tokenizer

    text = sorted((shared["root"] / "corpus").glob("*.txt"))[0]
    prefix = tmp_path / "spm" / "mine"
    prefix.parent.mkdir()
    spm.SentencePieceTrainer.train(input=str(text), model_prefix=str(prefix), vocab_size=120,
                                   hard_vocab_limit=False, bos_id=1, eos_id=2, pad_id=0, unk_id=3, minloglevel=2)
    model = prefix.with_suffix(".model")
    assert str(text).encode() in model.read_bytes()  # what the export must leave out
    tok = load_sentencepiece(str(model))
    out = tmp_path / "tok"
    out.mkdir()
    write_tokenizer(tok, str(out))
    for path in out.iterdir():
        assert str(shared["root"]).encode() not in path.read_bytes() and str(tmp_path).encode() not in \
            path.read_bytes(), path.name
    sample = text.read_text(encoding="utf-8")[:4000]
    reloaded = spm.SentencePieceProcessor(model_file=str(out / "tokenizer.model"))
    assert reloaded.encode(sample) == tok.encode(sample) and len(tok.encode(sample)) > 500
