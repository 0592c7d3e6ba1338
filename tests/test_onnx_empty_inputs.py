"""ONNX files with empty (zero-size) inputs, and files that take no inputs at
all: both are checked like any other file, on the real runtimes, in-process.
An input dim the file fixes at 0 is drawn, cornered and shrunk like any other;
an output empty on both sides is compared by shape and dtype alone, so it
cannot make a pass (inconclusive); a model with no inputs is one run of each
side, compared elementwise. Every file is made here with onnx.helper."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from onnx import TensorProto, helper, numpy_helper

from harness import matrix, runner
from harness.__main__ import main
from harness.cache import ArtifactCache
from harness.inputs import DOMAIN_ENDS, InputRecipe, corner_recipes, input_recipes, make_inputs, make_tensor
from harness.options import RunOptions
from harness.results import load_failure, save_failure
from harness.specs import InputSpec, ModelSpec, SpecError

ONNX_TARGETS = ("onnxruntime", "openvino", "onnx-reference")


def _save(path: Path, nodes, inputs, outputs, initializers=()) -> Path:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


def _value(name: str, shape, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


def _constant(name: str, value) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, np.float32), name)


def _options(model: Path, target: str, tmp_path: Path, converted: Path | None) -> RunOptions:
    return RunOptions(models=(str(model),), sources=("onnx",), targets=(target,), devices=("cpu",), examples=10,
                      use_cache=False, reports_dir=tmp_path / "reports", converted=converted,
                      cache_dir=tmp_path / "cache")


def _run(model: Path, target: str, tmp_path: Path, converted: Path | None = None) -> dict:
    """One case of `model` on `target` from start to record, in this process."""
    options = _options(model, target, tmp_path, converted)
    [case] = matrix.build_cases(options)
    assert (case.skip, case.error) == (None, None)
    return runner.run_case(case, options, ArtifactCache(tmp_path / "cache")).to_json()


# ---------------------------------------------------------------- inputs fixed at 0

def test_a_dim_fixed_at_0_is_made_at_every_corner_and_draw_but_a_symbolic_dim_stays_at_least_1():
    spec = ModelSpec("m", (InputSpec("e", (0, "N"), {"N": (1, 3)}), InputSpec("i", (2, 0), dtype="int64"),
                           InputSpec("b", (0,), dtype="bool")), ("y",))

    def check(recipe: InputRecipe) -> None:
        tensors = make_inputs(spec, recipe)
        assert tensors["e"].shape == (0, recipe.dims["N"]) and tensors["i"].shape == (2, 0)
        assert tensors["b"].shape == (0,) and tensors["b"].dtype == np.bool_

    for _, recipe in corner_recipes(spec):
        check(recipe)
    settings(max_examples=20, database=None)(given(input_recipes(spec))(check))()
    for end in DOMAIN_ENDS:
        assert make_tensor(spec.inputs[1], (2, 0), end, 0.0, np.random.default_rng(0)).shape == (2, 0)
    with pytest.raises(SpecError, match=r"input 'e': bounds of 'N' must satisfy 1 <= min <= max, got 0\.\.3"):
        InputSpec("e", (0, "N"), {"N": (0, 3)})


def _concat(path: Path, scale: float) -> Path:
    """y = Concat(e, x) * scale, e fixed at [0, 4]."""
    return _save(path, [helper.make_node("Concat", ["e", "x"], ["c"], axis=0),
                        helper.make_node("Mul", ["c", "s"], ["y"])],
                 [_value("e", [0, 4]), _value("x", [3, 4])], [_value("y", [3, 4])], [_constant("s", scale)])


@pytest.mark.parametrize("target", ONNX_TARGETS)
def test_an_input_fixed_at_0_passes_on_every_onnx_runtime(tmp_path, target):
    """Today: an error before any example, "the harness makes no empty inputs"."""
    record = _run(_concat(tmp_path / "concat.onnx", 2.0), target, tmp_path)
    assert record["status"] == "passed", record.get("message")
    assert record["examples"] == 10 and record["outputs"]["y"]["got_shape"] == [3, 4]
    assert record["message"] == "all outputs within tolerance"   # it takes inputs: drawn, not one run


@pytest.mark.parametrize("target", ONNX_TARGETS)
def test_a_planted_scale_beside_an_empty_input_fails_and_its_empty_input_is_saved_and_replayed(tmp_path, target):
    original = _concat(tmp_path / "concat.onnx", 2.0)
    planted = _concat(tmp_path / "planted.onnx", 2.5)
    record = _run(original, target, tmp_path, converted=planted)
    assert record["status"] == "failed", record.get("message")
    assert record["failure"]["shapes"] == {"e": [0, 4], "x": [3, 4]}
    assert record["failure"]["input_stats"]["e"] == {"dtype": "float32", "shape": [0, 4], "min": None, "max": None,
                                                     "mean": None, "std": None, "zeros": 0, "non_finite": 0}
    with np.load(record["failure"]["npz"]) as stored:
        assert stored["input:e"].shape == (0, 4)
    replayed = main(["replay", record["failure"]["npz"], "--model", str(original), "--converted", str(planted),
                     "--cache-dir", str(tmp_path / "cache")])
    assert replayed == 1   # reproduced


def _relu(path: Path) -> Path:
    """y = Relu(e), empty like e."""
    return _save(path, [helper.make_node("Relu", ["e"], ["y"])], [_value("e", [2, 0])], [_value("y", [2, 0])])


@pytest.mark.parametrize("target", ONNX_TARGETS)
def test_an_output_empty_on_both_sides_is_inconclusive_not_a_pass(tmp_path, target):
    """Shape and dtype are all two empty outputs can be held to: a converted
    model that computed anything else would pass too."""
    record = _run(_relu(tmp_path / "relu.onnx"), target, tmp_path)
    assert record["status"] == "inconclusive", record.get("message")
    assert record["outputs"]["y"]["sensitivity"]["empty"] is True
    assert record["message"] == ("passed, but inconclusive: y is empty on both sides: compared by shape and dtype "
                                 "only. --parity-strict fails such cases")


def test_an_output_that_is_not_empty_but_never_moves_is_inconclusive_by_its_change(tmp_path):
    """The twin: y = Shape(x) holds values, the same for every draw of one shape: its change is what is said."""
    path = _save(tmp_path / "shape.onnx", [helper.make_node("Shape", ["x"], ["y"])], [_value("x", [2, 3])],
                 [_value("y", [2], TensorProto.INT64)])
    record = _run(path, "onnxruntime", tmp_path)
    assert record["status"] == "inconclusive", record.get("message")
    assert "empty" not in record["outputs"]["y"]["sensitivity"]
    assert record["message"].startswith("passed, but inconclusive: y (largest change 0, 0x its tolerance, over ")


def test_an_output_empty_on_one_side_only_fails_as_a_shape_mismatch(tmp_path):
    widened = _save(tmp_path / "widened.onnx", [helper.make_node("Relu", ["e"], ["r"]),
                                                helper.make_node("Concat", ["r", "c"], ["y"], axis=1)],
                    [_value("e", [2, 0])], [_value("y", [2, 1])], [_constant("c", [[1.0], [2.0]])])
    record = _run(_relu(tmp_path / "relu.onnx"), "onnxruntime", tmp_path, converted=widened)
    assert record["status"] == "failed"
    assert "y: shape mismatch: original (2, 0), converted (2, 1)" in record["message"]


# ---------------------------------------------------------------- models with no inputs

def _constant_model(path: Path, values) -> Path:
    """A graph of one Constant node: no inputs."""
    node = helper.make_node("Constant", [], ["values"], value=_constant("v", values))
    return _save(path, [node], [], [_value("values", list(np.shape(values)))])


@pytest.mark.parametrize("target", ONNX_TARGETS)
def test_a_model_with_no_inputs_is_one_run_of_each_side_and_passes_not_inconclusive(tmp_path, target):
    """Today: "model 'constant' declares no inputs", an error."""
    record = _run(_constant_model(tmp_path / "constant.onnx", [[1.5, -2.0, 3.0]]), target, tmp_path)
    assert record["status"] == "passed", record.get("message")
    assert (record["examples"], record["corner_examples"], record["shrink_steps"]) == (1, 0, 0)
    assert record["outputs"]["values"]["error_ratio"] == 0.0 and record["outputs"]["values"]["sensitivity"] is None
    assert record["message"] == ("the model takes no inputs: one run of each side compared; "
                                 "all outputs within tolerance")


@pytest.mark.parametrize("target", ONNX_TARGETS)
def test_a_converted_file_holding_another_constant_fails_and_replays(tmp_path, target):
    original = _constant_model(tmp_path / "constant.onnx", [[1.5, -2.0, 3.0]])
    planted = _constant_model(tmp_path / "planted.onnx", [[1.5, -2.0, 3.25]])
    record = _run(original, target, tmp_path, converted=planted)
    assert record["status"] == "failed", record.get("message")
    assert (record["examples"], record["shrink_steps"], record["failure"]["shapes"]) == (1, 0, {})
    assert record["outputs"]["values"]["worst_ref"] == 3.0 and record["outputs"]["values"]["worst_got"] == 3.25
    assert f"\nfailing input: {record['failure']['npz']}\n" in record["message"]   # nothing drawn, nothing shrunk
    replayed = main(["replay", record["failure"]["npz"], "--model", str(original), "--converted", str(planted),
                     "--cache-dir", str(tmp_path / "cache")])
    assert replayed == 1   # reproduced


def test_a_saved_failure_without_inputs_is_refused_unless_its_model_takes_none(tmp_path):
    replay = {"case_id": "m-onnx-onnxruntime-cpu", "model_ref": "m.onnx", "source": "onnx", "target": "onnxruntime",
              "device": "cpu", "options": {}, "recipe": InputRecipe({}, {"x": "normal"}, 0.0, 0).to_json()}
    path, _ = save_failure(tmp_path, "takes-x", {}, replay)
    with pytest.raises(ValueError, match=r"takes-x\.npz holds no inputs \(input:NAME entries\)"):
        load_failure(path)
    path, _ = save_failure(tmp_path, "takes-none", {}, {**replay, "recipe": InputRecipe({}, {}, 0.0, 0).to_json()})
    assert load_failure(path)[1] == {}


def test_a_spec_written_by_hand_with_no_inputs_keeps_its_error():
    with pytest.raises(SpecError, match="model 'm' declares no inputs"):
        ModelSpec("m", (), ("y",))
    assert ModelSpec("m", (), ("y",), declared_by_file=True).inputs == ()
