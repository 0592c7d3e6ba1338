"""JSON a user hands over (harness/user_json.py), read under a size and a depth
budget: a baseline, a report or a failure record nested 100,000 deep is one
line and exit 2 in `python -m harness diff`, `report` and `replay` (it was a
RecursionError's traceback, and diff's exit 1 read as a regression); one
nested as the harness writes it, brackets in its strings, reads as before.
The gate's side (pytest --parity-baseline) is in test_gate.py, the
reproduction's manifest in test_repro_trust.py."""

from __future__ import annotations

import json

import numpy as np
import pytest

from harness.__main__ import main
from harness.results import load_failure, save_failure
from harness.user_json import UserJSONError, loads_user_json, nesting_depth, read_user_json
from tests.test_baseline import record, results
from tests.test_trust import _npy, _zip

DEEP = "[" * 100_000 + "]" * 100_000


def test_nesting_is_counted_without_recursion_and_brackets_in_strings_count_for_nothing():
    assert nesting_depth(DEEP) == 100_000
    assert nesting_depth('{"a": [1, {"b": "[[{{ \\" [[[ "}]}') == 3
    text = json.dumps({"name": "[" * 1000, "quoted": '"{{' * 100})
    assert loads_user_json(text, "names.json") == json.loads(text)
    with pytest.raises(UserJSONError, match=r"^deep\.json: JSON nested 100000 deep, more than the 64 allowed"):
        loads_user_json(DEEP, "deep.json")


def test_a_file_past_the_size_budget_is_refused_before_it_is_parsed(tmp_path):
    path = tmp_path / "big.json"
    path.write_text(json.dumps(list(range(100))))
    with pytest.raises(UserJSONError, match=rf"^{path}: 390 bytes, more than the 100 allowed for JSON"):
        read_user_json(path, max_bytes=100)
    assert read_user_json(path) == list(range(100))


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def refused(capsys, *args: str) -> str:
    code, out, err = cli(capsys, *args)
    assert code == 2 and not out and len(err.strip().splitlines()) == 1, (code, out, err)
    assert "Traceback" not in err
    return err


@pytest.fixture
def run_json(tmp_path):
    path = tmp_path / "parity.json"
    path.write_text(json.dumps(results(record("simple-torch-onnxruntime-cpu"))))
    return path


@pytest.fixture
def deep_json(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text('{"schema": 1, "cases": {}, "note": ' + DEEP + "}")
    return path


def test_diff_of_a_file_nested_past_the_budget_exits_2_in_one_line(capsys, run_json, deep_json):
    for old, new in ((deep_json, run_json), (run_json, deep_json)):
        err = refused(capsys, "diff", str(old), str(new))
        assert err.startswith(f"python -m harness diff: {deep_json}: JSON nested 100001 deep, more than the 64")
    code, out, _ = cli(capsys, "diff", str(run_json), str(run_json))   # the twin
    assert code == 0 and "parity diff: ok" in out


def test_report_of_a_file_nested_past_the_budget_exits_2_in_one_line(capsys, run_json, deep_json):
    err = refused(capsys, "report", str(deep_json))
    assert err.startswith(f"python -m harness report: {deep_json}: JSON nested 100001 deep")
    assert not deep_json.with_suffix(".html").exists()
    err = refused(capsys, "report", str(deep_json.with_name("missing.json")))
    assert f"{deep_json.with_name('missing.json')}: no such file" in err
    code, out, _ = cli(capsys, "report", str(run_json))   # the twin
    assert code == 0 and run_json.with_suffix(".html").is_file()


def test_report_of_json_that_is_no_results_file_exits_2_in_one_line(capsys, tmp_path):
    array = tmp_path / "array.json"
    array.write_text("[]")   # was an AttributeError traceback from the HTML writer
    err = refused(capsys, "report", str(array))
    assert err.startswith(f"python -m harness report: {array}: not a parity results file")
    assert "holds an array, not an object" in err


def test_a_failure_record_nested_past_the_budget_is_one_line(tmp_path, capsys):
    path = _zip(tmp_path / "deep.npz", {"__replay__.npy": _npy(np.array(DEEP)), "input:x.npy": _npy(np.zeros(3))})
    with pytest.raises(ValueError, match=rf"^{path}: its __replay__ entry: JSON nested 100000 deep"):
        load_failure(path)
    err = refused(capsys, "replay", str(path))
    assert str(path) in err and "nested 100000 deep" in err
    info = {"case_id": "simple-torch-onnxruntime-cpu", "model_ref": "simple", "source": "torch",
            "target": "onnxruntime", "device": "cpu", "options": {"examples": 3}}
    saved, _ = save_failure(tmp_path, info["case_id"], {"x": np.zeros(3, np.float32)}, info)   # the twin
    assert load_failure(saved)[0] == info
