"""metrics.jsonl across faults: a torn last line is dropped with a warning naming the file, a
garbled line elsewhere is refused naming file and line, and no (kind, step) is written twice."""
from __future__ import annotations

import json

import pytest

from jaxsparse.errors import ConfigError
from jaxsparse.train.workdir.records import MetricsWriter


def _lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_torn_last_line_is_dropped_with_a_warning(tmp_path, capsys):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"kind": "train", "step": 1, "loss": 3.0}\n{"kind": "train", "step": 2, "lo')
    writer = MetricsWriter(str(tmp_path), tensorboard=False, keep_until=8)
    writer.write("train", 2, {"loss": 2.5})
    writer.close()
    assert f"{path}: dropped its torn last line 2" in capsys.readouterr().err
    assert _lines(path) == [{"kind": "train", "step": 1, "loss": 3.0},
                            {"kind": "train", "step": 2, "loss": 2.5}]


def test_garbled_line_before_the_end_is_refused_naming_file_and_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    text = '{"kind": "train", "step": 1}\nGARBAGE\n{"kind": "train", "step": 2}\n'
    path.write_text(text)
    with pytest.raises(ConfigError, match=f"{path}: line 2 is not a JSON record"):
        MetricsWriter(str(tmp_path), tensorboard=False, keep_until=8)
    assert path.read_text() == text  # left as it was


def test_resume_trims_later_records_and_never_writes_a_record_twice(tmp_path):
    path = tmp_path / "metrics.jsonl"
    recs = [{"kind": "train", "step": s, "loss": float(s)} for s in (8, 16, 24)]
    recs.append({"kind": "eval", "step": 16, "eval_loss": 1.0})
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    writer = MetricsWriter(str(tmp_path), tensorboard=False, keep_until=16)
    assert writer.has("eval", 16) and not writer.has("train", 24)
    writer.write("eval", 16, {"eval_loss": 9.0})   # already there: not written again
    writer.write("train", 24, {"loss": 0.5})       # redone after the resume
    writer.close()
    assert _lines(path) == [recs[0], recs[1], recs[3], {"kind": "train", "step": 24, "loss": 0.5}]


def test_disabled_writer_touches_nothing(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"kind": "train", "step": 30}\n{"torn')
    MetricsWriter(str(tmp_path), enabled=False).write("train", 1, {})
    assert path.read_text() == '{"kind": "train", "step": 30}\n{"torn'


def test_a_resumed_writer_knows_the_kept_values_and_holds_every_record_in_order(tmp_path):
    path = tmp_path / "metrics.jsonl"
    recs = [{"kind": "train", "step": 8, "loss": 2.0}, {"kind": "eval", "step": 8, "eval_loss": 1.5},
            {"kind": "train", "step": 16, "loss": 1.0}]
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    writer = MetricsWriter(str(tmp_path), tensorboard=False, keep_until=8)
    assert writer.value("eval", 8, "eval_loss") == 1.5 and writer.value("eval", 16, "eval_loss") is None
    assert not writer.agreed_missing("eval", 8) and writer.agreed_missing("eval", 16)
    writer.write_all([("train", 16, {"loss": 0.5}), ("eval", 16, {"eval_loss": 0.25}),
                      ("eval", 8, {"eval_loss": 9.0})])  # the last is already there: skipped
    writer.close()
    assert writer.records == recs[:2] + [{"kind": "train", "step": 16, "loss": 0.5},
                                         {"kind": "eval", "step": 16, "eval_loss": 0.25}]
    assert _lines(path) == writer.records
