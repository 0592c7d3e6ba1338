"""Users' own model files: every format --model accepts, and every way it can go wrong.

Each bad file gives one clear error for its case, while the other cases of the
same run go on (the zoo model `simple` runs beside each of them).
"""

from __future__ import annotations

import pytest
import torch

from model_zoo import torch_models


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("model-files")
    cnn = torch_models.build_cnn()
    mlp = torch_models.build_mlp()
    torch.save(cnn.state_dict(), tmp / "cnn.pth")
    torch.save({"epoch": 3, "state_dict": mlp.state_dict()}, tmp / "mlp-checkpoint.pth")
    torch.save(mlp.state_dict(), tmp / "mlp.pth")
    torch.save(cnn, tmp / "whole-cnn.pt")  # a pickled module: loading it runs code
    torch.jit.trace(torch_models.build_simple(), torch.randn(2, 3)).save(str(tmp / "simple-traced.pt"))
    (tmp / "empty.pth").write_bytes(b"")
    data = (tmp / "cnn.pth").read_bytes()
    (tmp / "truncated.pth").write_bytes(data[: len(data) // 2])
    (tmp / "garbage.onnx").write_bytes(b"this is not an onnx file")
    return tmp


def _message(run, case_id):
    return run.cases[case_id]["message"]


def test_state_dict_with_zoo_architecture_passes(run_parity, files):
    run = run_parity(f"--model=cnn={files / 'cnn.pth'},mlp={files / 'mlp-checkpoint.pth'}")
    run.result.assert_outcomes(passed=2)
    assert set(run.cases) == {"cnn.cnn-torch-onnxruntime-cpu", "mlp.mlp_checkpoint-torch-onnxruntime-cpu"}


def test_state_dict_of_another_model_is_a_clear_error(run_parity, files):
    run = run_parity(f"--model=cnn={files / 'mlp.pth'},simple")
    run.result.assert_outcomes(passed=1, errors=1)
    message = _message(run, "cnn.mlp-torch-onnxruntime-cpu")
    assert "do not fit the architecture" in message and "mlp.pth" in message


def test_missing_empty_and_truncated_files_are_clear_errors(run_parity, files):
    run = run_parity(f"--model=cnn={files / 'missing.pth'},cnn={files / 'empty.pth'},"
                     f"cnn={files / 'truncated.pth'},simple")
    run.result.assert_outcomes(passed=1, errors=3)
    messages = {k: v["message"] for k, v in run.cases.items() if v["status"] == "error"}
    assert any("missing.pth" in m and "does not exist" in m for m in messages.values())
    assert "is empty" in messages["cnn.empty-torch-onnxruntime-cpu"]
    assert "truncated or corrupt" in messages["cnn.truncated-torch-onnxruntime-cpu"]
    assert "Traceback" not in run.output


def test_pickled_module_needs_trust(run_parity, files):
    refused = run_parity(f"--model=cnn={files / 'whole-cnn.pt'}")
    refused.result.assert_outcomes(errors=1)
    assert "--trust-model-code" in _message(refused, "cnn.whole_cnn-torch-onnxruntime-cpu")
    trusted = run_parity(f"--model=cnn={files / 'whole-cnn.pt'}", "--trust-model-code")
    trusted.result.assert_outcomes(passed=1)


def test_torchscript_file_with_input_spec_passes(run_parity, files):
    run = run_parity(f"--model={files / 'simple-traced.pt'}", "--input-spec=input:float32[N=1..4,3]",
                     "--output-names=output", "--trust-model-code")  # TorchScript runs its code at load
    run.result.assert_outcomes(passed=1)
    record = run.cases["simple_traced-torch-onnxruntime-cpu"]
    assert record["outputs"]["output"]["passed"]
    # torch.export cannot trace a ScriptModule: the TorchScript-based exporter takes over, on the record.
    assert record["provenance"]["exporter"] == "torchscript" and record["provenance"]["exporter_requested"] == "dynamo"


def test_file_without_shapes_asks_for_input_spec(run_parity, files):
    run = run_parity(f"--model={files / 'simple-traced.pt'},simple")
    run.result.assert_outcomes(passed=1, errors=1)
    assert "--input-spec" in _message(run, "simple_traced")


def test_input_spec_that_does_not_fit_the_model_is_a_clear_error(run_parity, files):
    run = run_parity(f"--model={files / 'simple-traced.pt'}", "--input-spec=input:float32[N=1..4,5]",
                     "--trust-model-code")
    run.result.assert_outcomes(errors=1)
    message = _message(run, "simple_traced-torch-onnxruntime-cpu")
    assert "rejects inputs built from its input spec" in message and "float32[" in message


def test_corrupt_converted_file_is_a_clear_error(run_parity, files):
    run = run_parity("--model=simple", "--source=torch", f"--converted={files / 'garbage.onnx'}")
    run.result.assert_outcomes(errors=1)
    message = _message(run, "simple-torch-onnxruntime-cpu-converted")
    assert "could not load" in message and "garbage.onnx" in message


def test_python_model_file_that_raises_is_a_clear_error(parity_dir, run_parity):
    (parity_dir / "broken_models.py").write_text("raise RuntimeError('my registry is broken')\n")
    run = run_parity("--model=broken_models.py,simple")
    run.result.assert_outcomes(passed=1, errors=1)
    assert "my registry is broken" in _message(run, "broken_models")
