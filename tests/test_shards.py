"""--parity-shard K/N and --parity-durations (issue 22, item 1): a deterministic, balanced share of the cases.

The split itself is a pure function (harness/shards.py), tested on synthetic ids and on the core matrix's
ids with durations shaped as a measured run's; one real run and one collect-only run check the plugin:
the shard it keeps, the other tests in shard 1 only, and the run header parity.json gets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from harness.matrix import build_cases
from harness.errors import OptionError
from harness.options import RunOptions, parse_shard
from harness.shards import assign_shards, case_costs, read_durations, select_shard
from tests.conftest import REPO

SYNTHETIC_IDS = [f"model{i}-torch-onnxruntime-cpu" for i in range(40)] + ["a", "b", "c-cuda", "z"]


def parity_json(path: Path, durations: dict[str, float]) -> Path:
    """A parity.json as a run writes it, its records reduced to what a split reads."""
    path.parent.mkdir(parents=True, exist_ok=True)
    records = {case_id: {"id": case_id, "status": "passed", "duration_s": seconds}
               for case_id, seconds in durations.items()}
    path.write_text(json.dumps({"schema": 1, "run": {}, "cases": records}))
    return path


@pytest.mark.parametrize("count", [1, 2, 3, 7])
@pytest.mark.parametrize("known", ["none", "some", "all"])
def test_every_case_falls_in_exactly_one_shard(count, known):
    rng = np.random.default_rng(count)
    durations = {case_id: float(rng.exponential(2.0))
                 for case_id in SYNTHETIC_IDS[: {"none": 0, "some": 20, "all": None}[known]]}
    shards = [select_shard(SYNTHETIC_IDS, durations, index, count).case_ids for index in range(1, count + 1)]
    assert set().union(*shards) == set(SYNTHETIC_IDS)
    assert sum(map(len, shards)) == len(SYNTHETIC_IDS)   # pairwise disjoint


def test_an_unknown_case_counts_as_the_median_of_the_run_s_known_ones():
    costs = case_costs(["a", "b", "c", "new"], {"a": 1.0, "b": 2.0, "c": 9.0, "gpu-only": 500.0})
    assert costs == {"a": 1.0, "b": 2.0, "c": 9.0, "new": 2.0}
    assert case_costs(["a", "b"], {}) == {"a": 1.0, "b": 1.0}


def test_the_header_hashes_the_durations_that_balanced_the_split():
    """Every shard of one split says the same durations_sha256; a collected case timed otherwise changes
    it, a case not collected (a GPU job's) does not, and with no collected case timed it is null."""
    night = {case_id: float(len(case_id)) for case_id in SYNTHETIC_IDS[:30]}
    hashes = {select_shard(SYNTHETIC_IDS, night, index, 3).header()["durations_sha256"] for index in (1, 2, 3)}
    assert len(hashes) == 1 and None not in hashes
    (same,) = hashes
    retimed = {**night, SYNTHETIC_IDS[0]: night[SYNTHETIC_IDS[0]] + 0.5}
    assert select_shard(SYNTHETIC_IDS, retimed, 1, 3).header()["durations_sha256"] != same
    with_gpu = {**night, "tiny-torch-tensorrt-cuda": 300.0}
    assert select_shard(SYNTHETIC_IDS, with_gpu, 1, 3).header()["durations_sha256"] == same
    for durations in ({}, {"tiny-torch-tensorrt-cuda": 300.0}):
        assert select_shard(SYNTHETIC_IDS, durations, 1, 3).header()["durations_sha256"] is None


def test_ties_go_by_case_id_then_by_shard_index():
    assert assign_shards({"d": 1.0, "b": 1.0, "a": 1.0, "c": 1.0}, 3) == [["a", "d"], ["b"], ["c"]]


SPLIT_SCRIPT = """
import json
from harness.shards import select_shard
ids = list({f"case{i}" for i in range(60)})   # set order: the hash seed's
durations = {f"case{i}": float(i % 7) for i in range(0, 60, 2)}
print(json.dumps([sorted(select_shard(ids, durations, k, 4).case_ids) for k in range(1, 5)]))
"""


def test_the_split_is_the_same_in_every_process():
    splits = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(REPO)}
        done = subprocess.run([sys.executable, "-c", SPLIT_SCRIPT], env=env, capture_output=True, text=True,
                              timeout=120, cwd=REPO)
        assert done.returncode == 0, done.stderr
        splits.append(json.loads(done.stdout))
    assert splits[0] == splits[1]


@pytest.fixture(scope="module")
def core_cpu_cases() -> list:
    """The core matrix on the CPU (`make parity`'s cases but for the CUDA ones)."""
    return build_cases(RunOptions(devices=("cpu",)))


@pytest.fixture(scope="module")
def core_cpu_ids(core_cpu_cases) -> list[str]:
    return [case.id for case in core_cpu_cases]


@pytest.fixture(scope="module")
def core_durations(core_cpu_cases) -> dict[str, float]:
    """Durations shaped as a measured run of the core matrix on 2 cores: a skip takes microseconds, a case that
    runs a log-normal time (as measured: median 0.67 s, sd of the log 1.15, 0.12 s to 6.4 s), seeded."""
    rng = np.random.default_rng(22)
    return {case.id: 3e-6 if case.skip else float(np.exp(rng.normal(-0.2, 1.15))) for case in core_cpu_cases}


@pytest.mark.parametrize("count", [1, 2, 3, 7])
def test_the_core_matrix_s_shards_add_up_to_its_collection(core_cpu_ids, core_durations, count):
    """Half the cases known (the others new since the durations file), every case in one shard."""
    known = dict(sorted(core_durations.items())[::2])
    shards = [select_shard(core_cpu_ids, known, index, count).case_ids for index in range(1, count + 1)]
    assert set().union(*shards) == set(core_cpu_ids) and sum(map(len, shards)) == len(core_cpu_ids)


@pytest.mark.parametrize("count", [2, 3, 7])
def test_with_known_durations_the_largest_shard_is_within_15_percent_of_the_mean(tmp_path, core_cpu_ids,
                                                                                  core_durations, count):
    durations = read_durations(parity_json(tmp_path / "parity.json", core_durations))
    expected = [select_shard(core_cpu_ids, durations, index, count).expected_s for index in range(1, count + 1)]
    assert max(expected) <= 1.15 * (sum(expected) / count), expected


def test_gpu_cases_in_the_durations_file_do_not_weigh_on_cpu_shards(core_cpu_ids, core_durations):
    cpu = core_durations
    with_gpu = {**cpu, **{case_id.replace("-cpu", "-cuda"): 120.0 for case_id in core_cpu_ids},
                "tiny-torch-tensorrt-cuda-new": 300.0}
    for index in (1, 2, 3):
        assert select_shard(core_cpu_ids, with_gpu, index, 3) == select_shard(core_cpu_ids, cpu, index, 3)


@pytest.mark.parametrize("value", ["3/2", "0/2", "a/b", "2", "1/0", "-1/2", "1/2/3"])
def test_a_bad_shard_is_one_line_naming_the_option_with_an_example(value):
    with pytest.raises(OptionError) as raised:
        parse_shard(value)
    message = str(raised.value)
    assert message.startswith(f"--parity-shard={value}: ") and "\n" not in message
    example = message.rsplit("e.g. ", 1)[1]
    assert parse_shard(example.split("=", 1)[1]) == (1, 3)   # the advice, taken


@pytest.mark.parametrize("value, expected", [("1/1", (1, 1)), ("2/3", (2, 3)), ("7/7", (7, 7)), (None, None)])
def test_a_good_shard_is_taken(value, expected):
    assert parse_shard(value) == expected


@pytest.mark.parametrize("content", ['{"cases": [1, 2]}', '[]', '{"schema": 1}', '{"cases": {"a": 3}}', "not json"])
def test_a_durations_file_that_is_not_a_parity_json_is_one_line_with_an_example(tmp_path, monkeypatch, content):
    (tmp_path / "d.json").write_text(content)
    with pytest.raises(OptionError) as raised:
        read_durations(tmp_path / "d.json")
    message = str(raised.value)
    assert message.startswith(f"--parity-durations={tmp_path / 'd.json'}: ") and "\n" not in message
    # The advice, taken: an earlier run's parity.json where it says.
    monkeypatch.chdir(tmp_path)
    parity_json(tmp_path / "reports" / "parity.json", {"a": 1.5, "b": "nan"})
    advised = message.split("e.g. --parity-durations=", 1)[1].split()[0]
    assert read_durations(Path(advised)) == {"a": 1.5}


def tanh_layer(path: Path, width: int) -> Path:
    """y = tanh(x @ w), x of [N, 8], an ONNX file: a case with no conversion to make."""
    w = np.random.default_rng(width).standard_normal((8, width)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Tanh", ["h"], ["y"])], "layer",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", width])],
        initializer=[numpy_helper.from_array(w, "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    return path


def test_the_plugin_runs_its_shard_and_writes_it_in_the_run_header(run_parity, parity_dir):
    """Shard 1 of 2 runs its parity case and the user's own test, and says in parity.json's run header
    which shard of which collection it is; shard 2 (collected only) splits what -k leaves, without the
    user's test."""
    (parity_dir / "test_mine.py").write_text("def test_mine():\n    pass\n")
    files = [tanh_layer(parity_dir / f"{name}.onnx", width) for name, width in (("wide", 6), ("mid", 4), ("narrow", 2))]
    matrix = [f"--model={','.join(map(str, files))}", "--source=onnx", "--target=onnxruntime", "-p", "no:randomly",
              "test_mine.py"]
    durations = parity_json(parity_dir / "previous" / "parity.json", {
        "wide-onnx-onnxruntime-cpu": 9.0, "mid-onnx-onnxruntime-cpu": 5.0, "narrow-onnx-onnxruntime-cpu": 1.0})
    first = run_parity(*matrix, "--parity-shard=1/2", f"--parity-durations={durations}", "-v")
    assert first.result.ret == 0, first.output
    assert list(first.cases) == ["wide-onnx-onnxruntime-cpu"]
    header = first.json["run"]["shard"]
    assert {k: header[k] for k in ("index", "count", "cases", "collected", "expected_s")} == {
        "index": 1, "count": 2, "cases": 1, "collected": 3, "expected_s": 9.0}
    collected = ["wide-onnx-onnxruntime-cpu", "mid-onnx-onnxruntime-cpu", "narrow-onnx-onnxruntime-cpu"]
    assert header["durations_sha256"] == select_shard(collected, read_durations(durations), 1, 2).header()[
        "durations_sha256"] is not None
    assert "test_mine.py::test_mine PASSED" in first.output
    # -k first: of mid (5 s) and narrow (1 s), shard 2 is narrow; split before -k, it would be both.
    second = run_parity(*matrix, "-k", "not wide", "--parity-shard=2/2", f"--parity-durations={durations}",
                        "--collect-only", "-q")
    listed = [line for line in second.result.outlines if "::" in line]
    assert second.result.ret == 0 and listed == ["parity::test_parity[narrow-onnx-onnxruntime-cpu]"], second.output
    assert "1/4 tests collected (3 deselected)" in second.output


def test_a_shard_the_split_leaves_empty_passes_and_says_so(run_parity, parity_dir):
    """Two cases in four shards: shard 3 has nothing to run, which is no failed CI job; a run whose
    collection is empty before the split (-k matching nothing) is still pytest's exit 5. In one process and
    under pytest-xdist (the nightly's CPU shards run -n auto), whose controller collects nothing itself."""
    files = [tanh_layer(parity_dir / f"{name}.onnx", width) for name, width in (("wide", 6), ("narrow", 2))]
    matrix = [f"--model={','.join(map(str, files))}", "--source=onnx", "--target=onnxruntime", "-p", "no:randomly"]
    for processes in (["-n", "0"], ["-n", "2"]):
        empty = run_parity(*matrix, *processes, "--parity-shard=3/4")
        assert empty.result.ret == pytest.ExitCode.OK, empty.output
        assert "shard 3/4 holds none of the 2 parity cases collected: nothing to run here" in empty.output
        assert empty.cases == {} and empty.json["run"]["shard"]["index"] == 3
    nothing = run_parity(*matrix, "-k", "nothing_matches", "--parity-shard=3/4")
    assert nothing.result.ret == pytest.ExitCode.NO_TESTS_COLLECTED, nothing.output
    assert "nothing to run here" not in nothing.output


def test_durations_without_a_shard_warn_that_the_run_is_not_split():
    from harness.option_effects import changed_flags, option_findings

    alone = RunOptions(durations=Path("reports/parity.json"))
    assert changed_flags(alone) == ["--parity-durations"]
    def durations_warnings(options: RunOptions) -> list[str]:
        return [w for w in option_findings(options, []).warnings if w.startswith("--parity-durations")]

    assert durations_warnings(alone) == ["--parity-durations reports/parity.json: balances the shards of "
                                         "--parity-shard, but no --parity-shard is given: the run is not split"]
    assert durations_warnings(RunOptions(durations=Path("reports/parity.json"), shard=(1, 2))) == []
