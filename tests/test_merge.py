"""`python -m harness merge`: one run out of its shards' results (issue 22, item 2).

A real run of the zoo's mlp and cnn on ONNX Runtime's CPU provider (torch and mxnet sources, the dev
profile), its whole matrix's ids from `pytest --parity --collect-only`, split by case into three shard
files, each with the environment of its own machine, and merged back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from harness.__main__ import main
from harness.merge import EXPECTED_CASES_FILE
from harness.report.baseline import compare_to_baseline, load_baseline
from tests.conftest import REPO

MATRIX = ["--model=mlp,cnn", "--source=torch,mxnet", "--target=onnxruntime", "--device=cpu"]
GPU_MACHINE = {"gpu": ["NVIDIA H100 80GB HBM3, 550.54.15"], "cpu": "AMD EPYC 9654", "cpu_count": 16}


@pytest.fixture(scope="module")
def real_run(tmp_path_factory) -> dict:
    """The whole matrix's expected ids (collect-only) and the run's parity.json, from two pytest processes."""
    folder = tmp_path_factory.mktemp("unsharded")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST") and k != "PYTEST_ADDOPTS"}
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--hypothesis-profile=dev",
               f"--parity-cache-dir={folder / 'cache'}", *MATRIX]
    collected = subprocess.run([*command, "--collect-only", "-q"], cwd=folder, env=env, capture_output=True,
                               text=True, timeout=300)
    expected = folder / "reports" / EXPECTED_CASES_FILE
    assert collected.returncode == 0 and expected.is_file(), collected.stdout + collected.stderr
    assert f"expected cases: reports/{EXPECTED_CASES_FILE}" in collected.stdout
    ran = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=600)
    results = json.loads((folder / "reports" / "parity.json").read_text())
    assert len(results["cases"]) == 4, ran.stdout + ran.stderr
    return {"expected": expected, "parity": folder / "reports" / "parity.json", "results": results}


def split(results: dict, folder: Path) -> list[Path]:
    """Three shard files of the run, case by case in turn; the third ran on a GPU machine."""
    ids = list(results["cases"])
    paths = []
    for index in range(3):
        environment = json.loads(json.dumps(results["environment"]))
        if index == 2:
            environment.update(GPU_MACHINE)
            environment["versions"]["onnxruntime-gpu"] = "1.20.1"
        shard = {**results, "environment": environment, "shard": f"{index + 1}/3",
                 "cases": {case_id: results["cases"][case_id] for case_id in ids[index::3]}}
        paths.append(folder / f"shard{index + 1}" / "parity.json")
        paths[-1].parent.mkdir()
        paths[-1].write_text(json.dumps(shard))
    return paths


def test_three_shards_merge_into_the_unsharded_run(real_run, tmp_path, capsys):
    shards = split(real_run["results"], tmp_path)
    out, html = tmp_path / "merged.json", tmp_path / "merged.html"
    code = main(["merge", *map(str, shards), "-o", str(out), "--html", str(html), f"--expect={real_run['expected']}"])
    printed = capsys.readouterr()
    assert code == 0 and not printed.err, printed
    assert "merged 4 cases from 3 of 3 files" in printed.out
    merged, original = load_baseline(out), real_run["results"]   # the gate's own reader
    # Every record says when it finished, in UTC: --prefer=newest orders machines of other time zones by it.
    assert all(datetime.fromisoformat(c["finished"]).utcoffset() == timedelta(0) for c in original["cases"].values())
    assert list(merged["cases"]) == list(original["cases"]) == json.loads(real_run["expected"].read_text())["cases"]
    assert {k: c["status"] for k, c in merged["cases"].items()} == {k: c["status"] for k, c in original["cases"].items()}
    # Each case keeps its machine's environment; the run's is what all three share.
    gpu_case = merged["cases"][list(original["cases"])[2]]
    assert gpu_case["shard"] == str(shards[2]) and merged["shards"][str(shards[2])]["environment"]["gpu"] == GPU_MACHINE["gpu"]
    assert merged["shards"][str(shards[0])]["environment"]["gpu"] == original["environment"]["gpu"]
    assert "gpu" not in merged["environment"] and "onnxruntime-gpu" not in merged["environment"]["versions"]
    assert merged["environment"]["versions"]["onnxruntime"] == original["environment"]["versions"]["onnxruntime"]
    # The gate's verdict is the unsharded run's, against a baseline it passes and one it fails.
    tighter = json.loads(json.dumps(original))
    for case in tighter["cases"].values():
        for output in (case.get("outputs") or {}).values():
            if isinstance(output.get("error_ratio"), float):
                output["error_ratio"] /= 1000
    (tmp_path / "tighter.json").write_text(json.dumps(tighter))
    for baseline, verdict in ((real_run["parity"], 0), (tmp_path / "tighter.json", 1)):
        assert main(["diff", str(baseline), str(out), "--html", str(tmp_path / "d.html")]) == verdict
        assert main(["diff", str(baseline), str(real_run["parity"]), "--html", str(tmp_path / "d.html")]) == verdict
        assert compare_to_baseline(merged, load_baseline(baseline)).failed == bool(verdict)
    page = html.read_text()
    assert "<h3>Shards</h3>" in page and "NVIDIA H100 80GB HBM3" in page and str(shards[2]) in page


def test_a_case_recorded_differently_twice_is_refused_unless_prefer_newest(real_run, tmp_path, capsys):
    case_id, record = next(iter(real_run["results"]["cases"].items()))
    earlier = {**record, "finished": "2026-01-01T00:00:00.000+00:00", "worst_error_ratio": 0.5}
    later = {**record, "finished": "2026-01-01T00:00:01.000+00:00", "worst_error_ratio": 0.25}
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    first.write_text(json.dumps({**real_run["results"], "cases": {case_id: later}}))
    second.write_text(json.dumps({**real_run["results"], "cases": {case_id: earlier}}))
    out = tmp_path / "merged.json"
    assert main(["merge", str(first), str(second), "-o", str(out)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and not out.exists()
    assert f"case {case_id} is in {first} and in {second}" in error and "pass --prefer=newest to keep the later one" in error
    # The advice, followed: the record that finished later is kept, though its file came first.
    assert main(["merge", str(first), str(second), "-o", str(out), "--prefer=newest"]) == 0
    assert load_baseline(out)["cases"][case_id]["worst_error_ratio"] == 0.25
    # The twin: the same record in two files is one case.
    second.write_text(first.read_text())
    assert main(["merge", str(first), str(second), "-o", str(out)]) == 0
    assert list(load_baseline(out)["cases"]) == [case_id]


def test_a_shard_that_wrote_nothing_is_missing_cases_and_fails_the_gate(real_run, tmp_path, capsys):
    shards = split(real_run["results"], tmp_path)
    shards[2].unlink()   # the GPU job died before its first case
    out, html = tmp_path / "merged.json", tmp_path / "merged.html"
    code = main(["merge", *map(str, shards), "-o", str(out), "--html", str(html), f"--expect={real_run['expected']}"])
    printed = capsys.readouterr()
    assert code == 2 and printed.err == f"python -m harness merge: {shards[2]}: no such file\n", printed
    lost = list(real_run["results"]["cases"])[2::3]
    merged = load_baseline(out)
    assert [k for k, c in merged["cases"].items() if c["status"] == "missing"] == lost
    assert len(merged["cases"]) == 4 and f"missing: {len(lost)} expected cases" in printed.out
    assert main(["diff", str(real_run["parity"]), str(out), "--html", str(tmp_path / "d.html")]) == 1
    assert f"{lost[0]}: passed, now missing: no shard recorded this case" in capsys.readouterr().out
    assert "<h2 id=\"missing\">Missing cases</h2>" in html.read_text()
    # Without --expect nothing says the matrix was larger: the gate still fails on the coverage lost.
    assert main(["merge", *map(str, shards[:2]), "-o", str(out)]) == 0
    assert "missing" not in {c["status"] for c in load_baseline(out)["cases"].values()}
    assert main(["diff", str(real_run["parity"]), str(out), "--html", str(tmp_path / "d.html")]) == 1


def test_inputs_that_are_not_results_are_named_in_one_line(real_run, tmp_path, capsys):
    out = tmp_path / "merged.json"
    # The expected-cases file given as a shard: named, and the real shard merged all the same.
    assert main(["merge", str(real_run["parity"]), str(real_run["expected"]), "-o", str(out)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and str(real_run["expected"]) in error and "not a parity results file" in error
    assert len(load_baseline(out)["cases"]) == 4
    # A parity.json given as --expect: named, nothing written, and the advice says how to make the right file.
    out.unlink()
    assert main(["merge", str(real_run["parity"]), "-o", str(out), f"--expect={real_run['parity']}"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and not out.exists()
    assert f"--expect: {real_run['parity']} is not a list of expected cases: write one with pytest --parity" in error


SPLIT_IDS = [f"layer{i}-onnx-onnxruntime-cpu" for i in range(6)]


def planted_shards(folder: Path, durations: dict[str, float], count: int = 2) -> list[Path]:
    """Each shard's parity.json as a job balanced by `durations` writes it: its run header from shards.py,
    its cases' records reduced to a status."""
    from harness.results import SCHEMA
    from harness.shards import select_shard

    paths = []
    for index in range(1, count + 1):
        shard = select_shard(SPLIT_IDS, durations, index, count)
        path = folder / f"shard-{index}" / "parity.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"schema": SCHEMA, "environment": {"versions": {}}, "run": {"shard": shard.header()},
                                    "cases": {case_id: {"id": case_id, "status": "passed"}
                                              for case_id in sorted(shard.case_ids)}}))
        paths.append(path)
    return paths


def test_shards_balanced_by_different_durations_are_refused(tmp_path, capsys):
    """Two jobs given different --parity-durations files split one collection two ways: refused, naming both
    files; the advice followed (one file for every job) merges."""
    last_night = {case_id: float(seconds) for case_id, seconds in zip(SPLIT_IDS, (9, 1, 1, 1, 1, 1))}
    a_week_ago = {**last_night, SPLIT_IDS[0]: 2.0}
    first, _ = planted_shards(tmp_path / "last-night", last_night)
    _, second = planted_shards(tmp_path / "a-week-ago", a_week_ago)
    out = tmp_path / "parity.json"
    assert main(["merge", str(first), str(second), "-o", str(out)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and not out.exists()
    assert (f"{first} and {second} are shards of 2 balanced by different durations (durations_sha256 " in error
            and error.endswith("give every shard the same --parity-durations file\n")), error
    # The advice, followed: both shards balanced by last night's durations.
    assert main(["merge", *map(str, planted_shards(tmp_path / "same", last_night)), "-o", str(out)]) == 0
    assert sorted(load_baseline(out)["cases"]) == sorted(SPLIT_IDS)


def test_shards_written_before_durations_were_hashed_merge_as_before(tmp_path):
    """The headers of an older harness do not say which durations balanced them: nothing to hold them to."""
    first, _ = planted_shards(tmp_path / "last-night", {SPLIT_IDS[0]: 9.0})
    _, second = planted_shards(tmp_path / "a-week-ago", {SPLIT_IDS[0]: 2.0})
    for path in (first, second):
        data = json.loads(path.read_text())
        data["run"]["shard"].pop("durations_sha256", None)
        path.write_text(json.dumps(data))
    assert main(["merge", str(first), str(second), "-o", str(tmp_path / "parity.json")]) == 0
