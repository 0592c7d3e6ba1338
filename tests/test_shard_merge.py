"""Three shards merged are the unsharded run (issue 22's first goal).

Real pytest processes on the zoo's mlp and cnn (torch and mxnet sources, ONNX Runtime and OpenVINO on the
CPU, the dev profile): the whole matrix's ids from `--collect-only`, one unsharded run, and three
`--parity-shard=K/3` runs at once, sharing one artifact cache; then `python -m harness merge --expect`
and the gate (`python -m harness diff`) over the merged file and over the unsharded one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.__main__ import main
from harness.merge import EXPECTED_CASES_FILE
from harness.report.baseline import load_baseline

MATRIX = ["--model=mlp,cnn", "--source=torch,mxnet", "--target=onnxruntime,openvino", "--device=cpu",
          "--hypothesis-profile=dev", "-p", "no:cacheprovider", "-p", "no:randomly"]
SHARDS = 3


def pytest_command(folder: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "pytest", *MATRIX, f"--parity-cache-dir={folder / 'cache'}", *args]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """The expected ids, the unsharded run's parity.json (it fills the cache) and the three shards'."""
    folder = tmp_path_factory.mktemp("shard-merge")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST") and k != "PYTEST_ADDOPTS"}
    collected = subprocess.run(pytest_command(folder, "--collect-only", "-q", "--parity-reports=plan"), cwd=folder,
                               env=env, capture_output=True, text=True, timeout=300)
    assert collected.returncode == 0, collected.stdout + collected.stderr
    unsharded = subprocess.run(pytest_command(folder, "--parity-reports=whole"), cwd=folder, env=env,
                               capture_output=True, text=True, timeout=600)
    assert unsharded.returncode == 0, unsharded.stdout + unsharded.stderr
    shards = [subprocess.Popen(pytest_command(folder, f"--parity-shard={index}/{SHARDS}",
                                              f"--parity-reports=shard-{index}"),
                               cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
              for index in range(1, SHARDS + 1)]
    for shard in shards:
        output, _ = shard.communicate(timeout=600)
        assert shard.returncode == 0, output
    return {"folder": folder, "expected": folder / "plan" / EXPECTED_CASES_FILE,
            "whole": folder / "whole" / "parity.json",
            "shards": [folder / f"shard-{index}" / "parity.json" for index in range(1, SHARDS + 1)]}


def merge(shards: list[Path], out: Path, *extra: str) -> int:
    return main(["merge", *map(str, shards), "-o", str(out), *extra])


def gate(baseline: Path, run: Path, tmp_path: Path) -> int:
    return main(["diff", str(baseline), str(run), "--html", str(tmp_path / "diff.html")])


@pytest.mark.slow  # four whole runs of the zoo; tests/test_merge.py merges shards in make test
def test_three_shard_processes_merged_are_the_unsharded_run(runs, tmp_path, capsys):
    out = tmp_path / "parity.json"
    assert merge(runs["shards"], out, f"--expect={runs['expected']}", "--html", str(tmp_path / "p.html")) == 0
    printed = capsys.readouterr()
    assert f"merged 8 cases from {SHARDS} of {SHARDS} files" in printed.out and not printed.err, printed
    merged, whole = load_baseline(out), load_baseline(runs["whole"])
    expected = json.loads(runs["expected"].read_text())["cases"]
    assert list(merged["cases"]) == expected and sorted(whole["cases"]) == sorted(expected)
    assert {k: c["status"] for k, c in merged["cases"].items()} == {k: c["status"] for k, c in whole["cases"].items()}
    # Each shard ran its own share of one collection: disjoint, and together the whole.
    headers = [load_baseline(path)["run"]["shard"] for path in runs["shards"]]
    assert [h["index"] for h in headers] == [1, 2, 3] and len({h["collected_sha256"] for h in headers}) == 1
    assert sum(h["cases"] for h in headers) == len(expected) == headers[0]["collected"]
    # The gate's verdict is the unsharded run's: against a baseline both pass, and one both fail.
    tighter = json.loads(runs["whole"].read_text())
    for case in tighter["cases"].values():
        for output in (case.get("outputs") or {}).values():
            if isinstance(output.get("error_ratio"), float):
                output["error_ratio"] /= 1000
    (tmp_path / "tighter.json").write_text(json.dumps(tighter))
    for baseline, verdict in ((runs["whole"], 0), (tmp_path / "tighter.json", 1)):
        assert gate(baseline, out, tmp_path) == gate(baseline, runs["whole"], tmp_path) == verdict


@pytest.mark.slow  # the module's four whole runs of the zoo; tests/test_merge.py holds missing shards in make test
def test_a_shard_left_out_is_its_missing_cases_and_fails_the_gate(runs, tmp_path, capsys):
    out = tmp_path / "parity.json"
    left_out = load_baseline(runs["shards"][1])
    assert merge(runs["shards"][::2], out, f"--expect={runs['expected']}") == 1
    printed = capsys.readouterr().out
    assert f"missing: shard 2/{SHARDS}, which no input holds\n" in printed
    merged = load_baseline(out)
    assert sorted(k for k, c in merged["cases"].items() if c["status"] == "missing") == sorted(left_out["cases"])
    assert merged["run"]["missing_shards"] == [f"2/{SHARDS}"]
    assert f"no input holds shard 2/{SHARDS}" in merged["cases"][next(iter(left_out["cases"]))]["message"]
    assert gate(runs["whole"], out, tmp_path) == 1
    # Without --expect the shard is named, and the advice (--expect) followed gives its cases.
    assert merge(runs["shards"][::2], out) == 1
    printed = capsys.readouterr().out
    assert (f"missing: shard 2/{SHARDS}, which no input holds: its cases are not in the merged run; pass "
            f"--expect=CASES.json (pytest --parity --collect-only's) to record them as missing") in printed
    assert gate(runs["whole"], out, tmp_path) == 1


@pytest.mark.slow  # the module's four whole runs of the zoo; tests/test_merge.py refuses mixed splits in make test
def test_shards_of_one_count_split_from_different_collections_are_refused(runs, tmp_path, capsys):
    other = json.loads(runs["shards"][2].read_text())
    other["run"]["shard"]["collected_sha256"] = "0" * 64   # shard 3 of a run with other matrix options
    (tmp_path / "other.json").write_text(json.dumps(other))
    out = tmp_path / "parity.json"
    assert merge([*runs["shards"][:2], tmp_path / "other.json"], out) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and not out.exists()
    assert (f"{runs['shards'][0]} and {tmp_path / 'other.json'} are shards of {SHARDS} split from different "
            f"collections") in error and "run every shard of one split with the same matrix options" in error
    # The twin: an unsharded run beside the shards (the GPU job) is no shard of their split.
    assert merge([*runs["shards"], runs["whole"]], out, "--prefer=newest") == 0


def test_a_shard_the_split_leaves_empty_writes_its_header(run_parity, parity_dir, tmp_path, capsys):
    """One case in two shards: shard 2 runs nothing, yet writes a parity.json saying which shard it is,
    so the merge sees every shard of the split."""
    first = run_parity("--model=mlp", "--parity-shard=1/2", "--parity-reports=shard-1")
    empty = run_parity("--model=mlp", "--parity-shard=2/2", "--parity-reports=shard-2")
    assert first.result.ret == 0, first.output
    assert empty.result.ret == pytest.ExitCode.OK, empty.output   # no failed CI job (test_shards.py)
    shards = [parity_dir / f"shard-{index}" / "parity.json" for index in (1, 2)]
    header = load_baseline(shards[1])
    assert header["cases"] == {} and header["run"]["shard"]["index"] == 2 and header["run"]["shard"]["cases"] == 0
    assert merge(shards, tmp_path / "parity.json") == 0
    assert "merged 1 cases from 2 of 2 files" in capsys.readouterr().out
