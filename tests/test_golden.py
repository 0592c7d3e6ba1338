"""Golden examples: an ONNX model in ONNX's test-data layout is checked on each
target against its stored outputs first, reported apart from the drawn
examples; a stored output off by 1e-3 (relative) fails the case although every
drawn example passes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper


def write_model_folder(folder: Path, golden_error: float = 0.0) -> Path:
    """y = tanh(x @ w + b), x fixed at [2, 8], with one stored test-data set."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 4)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w", "b"], ["h"]), helper.make_node("Tanh", ["h"], ["y"])], "golden",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
        initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    folder.mkdir(parents=True)
    onnx.save(model, folder / "model.onnx")
    x = rng.standard_normal((2, 8)).astype(np.float32)
    y = np.tanh(x.astype(np.float64) @ w + b).astype(np.float32)
    y = y + golden_error * np.abs(y).max() * (np.arange(y.size).reshape(y.shape) == 0)
    data = folder / "test_data_set_0"
    data.mkdir()
    (data / "input_0.pb").write_bytes(numpy_helper.from_array(x, "x").SerializeToString())
    (data / "output_0.pb").write_bytes(numpy_helper.from_array(y.astype(np.float32), "y").SerializeToString())
    return folder


@pytest.mark.parametrize("target", ["onnxruntime", "openvino"])
def test_golden_examples_are_checked_first_and_a_wrong_stored_output_fails(run_parity, parity_dir, target):
    good = write_model_folder(parity_dir / "good")
    run = run_parity(f"--model={good}", "--source=onnx", f"--target={target}")
    record = run.single
    assert record["status"] == "passed", run.output
    assert record["golden"]["sets"] == 1 and record["golden"]["passed"] == 1
    assert record["examples"] >= 1 and record["provenance"]["reference"]["float64_twin"].startswith("float64 twin")

    off = write_model_folder(parity_dir / "off", golden_error=1e-3)
    run = run_parity(f"--model={off}", "--source=onnx", f"--target={target}")
    record = run.single
    assert record["status"] == "failed" and record["golden"]["passed"] == 0, run.output
    assert record["message"].startswith("golden example test_data_set_0")
    # the drawn examples, against the reference, passed: the stored outputs alone failed it
    assert all(o.get("passed", True) for o in record["outputs"].values())
