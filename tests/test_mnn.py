"""MNN as a target and the ONNX -> MNN hop, on real files with real MNN:
the zoo through MNN at the default float32 tolerances, a planted weight error
beside its correct twin, damaged .mnn files and a converter failure, each its
own case's clear error."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest.importorskip("MNN")

from harness.converters import onnx_mnn
from harness.errors import CaseError
from harness.registry import get_model
from tests import planted


def _convert(source: Path, model: str, out: Path) -> tuple[Path, dict]:
    spec = get_model(model)
    provenance = onnx_mnn.convert(source, spec, [], out, layouts=spec.source_layouts("torch"))
    return out / onnx_mnn.FILENAME, provenance


@pytest.fixture(scope="module")
def cnn_pair(tmp_path_factory) -> tuple[Path, Path]:
    """cnn converted to .mnn from its correct export and from the same export
    with the largest weight of its middle layer scaled by 1 + 1e-3."""
    tmp = tmp_path_factory.mktemp("mnn-cnn")
    good, _ = _convert(planted.export_zoo("cnn", tmp / "good"), "cnn", tmp / "good-mnn")
    bad, _ = _convert(planted.perturbed_weight_onnx("cnn", tmp, 1e-3, which="middle"), "cnn", tmp / "bad-mnn")
    return good, bad


def test_zoo_through_mnn_passes(run_parity):
    run = run_parity("--model=cnn,mlp,transformer", "--target=mnn")
    assert run.result.ret == 0, run.output
    assert {record["status"] for record in run.cases.values()} == {"passed"}, run.output
    assert len(run.cases) == 3
    for record in run.cases.values():
        runtime = record["provenance"]["runtime"]
        assert runtime["precision_mode"] == "high" and runtime["resizes_per_example"] is True
        assert record["isolation"], "MNN cases run in a worker process"


def test_hop_writes_float32_weights_with_exact_gelu(cnn_pair, tmp_path):
    spec = get_model("transformer")
    path, provenance = _convert(planted.export_zoo("transformer", tmp_path / "onnx"), "transformer", tmp_path / "mnn")
    assert path.is_file()
    assert "--fp16" not in provenance["flags"] and provenance["fp16_weights"] is False
    assert provenance["flags"][provenance["flags"].index("--useGeluApproximation") + 1] == "0"
    assert provenance["weight_storage"]["half_or_quantized"] == 0
    assert provenance["input_layouts"] == dict(spec.source_layouts("torch")[0])
    # the check itself sees half-float weights: cnn converted with --fp16
    f16 = tmp_path / "f16.mnn"
    code, output = onnx_mnn.run_converter(["-f", "ONNX", "--modelFile", str(planted.export_zoo("cnn", tmp_path / "c")),
                                           "--MNNModel", str(f16), "--fp16"])
    assert f16.is_file(), output
    assert onnx_mnn.describe(f16)["weight_storage"]["half_or_quantized"] > 0
    assert onnx_mnn.describe(cnn_pair[0])["weight_storage"] == {"float32": 2, "half_or_quantized": 0}


def test_planted_weight_fails_beside_its_correct_twin(run_parity, cnn_pair):
    good, bad = cnn_pair
    args = ("--model=cnn", "--source=torch", "--target=mnn")
    passed = run_parity(f"--converted={good}", *args)
    assert passed.result.ret == 0, passed.output
    assert passed.single["status"] == "passed", passed.output
    failed = run_parity(f"--converted={bad}", *args)
    assert failed.result.ret != 0
    assert failed.single["status"] == "failed", failed.output
    assert failed.single["worst_error_ratio"] > 1


@pytest.mark.parametrize("damage", ["truncated", "random"])
def test_damaged_mnn_file_is_its_cases_error(run_parity, cnn_pair, tmp_path, damage):
    data = cnn_pair[0].read_bytes()
    path = tmp_path / f"{damage}.mnn"
    path.write_bytes(data[: len(data) // 2] if damage == "truncated" else os.urandom(len(data)))
    run = run_parity(f"--converted={path}", "--model=cnn", "--source=torch", "--target=mnn")
    record = run.single
    assert record["status"] == "error", run.output
    assert record["stage"] == "runtime", record
    assert str(path) in record["message"] and "MNN could not read" in record["message"], record["message"]
    assert "Traceback" not in record["message"]


def test_converter_failure_is_a_case_error(tmp_path):
    source = tmp_path / "broken.onnx"
    source.write_bytes(b"\x08\x07not an onnx model" * 10)
    with pytest.raises(CaseError) as caught:
        _convert(source, "cnn", tmp_path / "out")
    assert caught.value.stage == "convert"
    assert str(source) in caught.value.message
    assert not (tmp_path / "out" / onnx_mnn.FILENAME).exists()


def test_missing_onnx_is_a_case_error(tmp_path):
    with pytest.raises(CaseError, match="does not exist"):
        _convert(tmp_path / "absent.onnx", "cnn", tmp_path / "out")


def test_mnns_usage_logger_is_never_imported():
    # MNN.tools' logger runs `pip install aliyun-log-python-sdk` and sends the converter's arguments
    # to a log service: neither the runtime nor the hop's child may import it
    import subprocess
    import sys

    from harness.converters import onnx_mnn

    assert "MNN.tools" not in onnx_mnn._CHILD and "mnnconvert" not in onnx_mnn._CHILD.split("_tools.")[0]
    probe = ("import sys, MNN, MNN.expr, MNN.nn, harness.runtimes.mnn, harness.converters.onnx_mnn; "
             "print(sorted(m for m in sys.modules if m.startswith(('MNN.tools', 'aliyun'))))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"   # after MNN's own banner
