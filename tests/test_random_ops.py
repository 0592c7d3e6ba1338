"""Random operators found in an ONNX graph (random_ops.py), and such a case
compared by distribution, never elementwise (explore.py, compare.compare_distributions)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from harness.random_ops import random_ops

SHAPE = [2, 3, 40]


def _save(nodes: list, path: Path, initializers: tuple = (), opset: int = 17) -> Path:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, SHAPE)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, SHAPE)],
                              initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def uniform_noise(path: Path, high: float = 1.0, seed: float | None = None) -> Path:
    """y = x + U(0, high), drawn anew on every run (or from `seed`)."""
    attributes = {"low": 0.0, "high": high, **({"seed": seed} if seed is not None else {})}
    return _save([helper.make_node("RandomUniformLike", ["x"], ["u"], **attributes),
                  helper.make_node("Add", ["x", "u"], ["y"])], path)


def dropout(path: Path, training: bool | None) -> Path:
    inputs, initializers = ["x"], []
    if training is not None:
        inputs += ["ratio", "training"]
        initializers = [helper.make_tensor("ratio", TensorProto.FLOAT, [], [0.5]),
                        helper.make_tensor("training", TensorProto.BOOL, [], [training])]
    return _save([helper.make_node("Dropout", inputs, ["y"])], path, initializers)


def test_random_operators_are_found_in_the_graph_and_its_subgraphs(tmp_path):
    assert random_ops(uniform_noise(tmp_path / "u.onnx")) == ("RandomUniformLike",)
    assert random_ops(dropout(tmp_path / "train.onnx", True)) == ("Dropout(training_mode)",)
    branch = helper.make_graph([helper.make_node("Bernoulli", ["x"], ["b"])], "then", [],
                               [helper.make_tensor_value_info("b", TensorProto.FLOAT, SHAPE)])
    other = helper.make_graph([helper.make_node("Identity", ["x"], ["i"])], "else", [],
                              [helper.make_tensor_value_info("i", TensorProto.FLOAT, SHAPE)])
    cond = helper.make_tensor("cond", TensorProto.BOOL, [], [True])
    nested = _save([helper.make_node("If", ["cond"], ["y"], then_branch=branch, else_branch=other)],
                   tmp_path / "if.onnx", [cond])
    assert random_ops(nested) == ("Bernoulli",)


def test_dropout_in_inference_mode_is_not_random(tmp_path):
    assert random_ops(dropout(tmp_path / "eval.onnx", False)) == ()
    assert random_ops(dropout(tmp_path / "plain.onnx", None)) == ()


def test_a_random_op_drawing_from_a_wider_range_fails_by_distribution(tmp_path, run_converted):
    record = run_converted(uniform_noise(tmp_path / "model.onnx"), uniform_noise(tmp_path / "wide.onnx", high=2.0))
    assert record["status"] == "failed" and record["random_ops"] == ["RandomUniformLike"]
    assert "y: the converted model draws from another distribution than the original over 20 draws" in \
        record["message"]
    assert record["outputs"]["y"]["extra"]["distribution"]["converted"]["max"] > 2.0


def test_a_random_op_drawing_from_the_same_range_passes_by_distribution(tmp_path, run_converted):
    record = run_converted(uniform_noise(tmp_path / "model.onnx"), uniform_noise(tmp_path / "same.onnx"))
    assert record["status"] == "passed", record["message"]
    assert record["message"].startswith("random operators in the graph (RandomUniformLike): compared by distribution")
    assert record["outputs"]["y"]["accepted_by"] == "distribution" and record["examples"] == 20


def test_sessions_drawing_the_same_seeded_numbers_are_not_an_elementwise_pass(tmp_path, run_converted):
    record = run_converted(uniform_noise(tmp_path / "model.onnx", seed=3.0),
                           uniform_noise(tmp_path / "seeded.onnx", seed=3.0))
    assert record["random_ops"] == ["RandomUniformLike"]
    assert record["outputs"]["y"]["accepted_by"] == "distribution"
    assert np.isfinite(record["outputs"]["y"]["extra"]["distribution"]["original"]["mean"])
