"""ONNX files with tensors of every rank and type the runtimes take: 0-d inputs
and outputs kept 0-d end to end on every ONNX runtime, and a file holding a
type a runtime cannot take skipped with that type and that runtime named.
Every file is made here with onnx.helper and run in-process, on the real
runtimes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from harness import matrix, runner
from harness.cache import ArtifactCache
from harness.case import Case
from harness.inputs import corner_recipes, make_inputs
from harness.options import RunOptions, parse_input_spec
from harness.specs import InputSpec, ModelSpec

ONNX_TARGETS = ("onnxruntime", "openvino", "onnx-reference")


def _save(path: Path, nodes, inputs, outputs, initializers=(), opset: int = 18) -> Path:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), str(path))
    return path


def _value(name: str, shape, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


def _run(model: Path, target: str, tmp_path: Path, converted: Path | None = None, input_specs=()) -> dict:
    """One case of `model` on `target` from start to record, in this process."""
    options = RunOptions(models=(str(model),), sources=("onnx",), targets=(target,), devices=("cpu",),
                         use_cache=False, reports_dir=tmp_path / "reports", converted=converted,
                         input_specs=tuple(parse_input_spec(text) for text in input_specs))
    [case] = matrix.build_cases(options)
    assert (case.skip, case.error) == (None, None)
    return runner.run_case(case, options, ArtifactCache(tmp_path / "cache")).to_json()


# ---------------------------------------------------------------- 0-d tensors

def _scalar_files(folder: Path) -> dict[str, tuple[Path, tuple[str, ...]]]:
    """name -> (file, --input-specs): a 0-d float input broadcast against a [3]
    one, a 0-d int64 index (bounded to the dim it indexes), a 0-d output."""
    return {
        "add": (_save(folder / "add.onnx", [helper.make_node("Add", ["s", "x"], ["y"])],
                      [_value("s", []), _value("x", [3])], [_value("y", [3])]), ()),
        "gather": (_save(folder / "gather.onnx", [helper.make_node("Gather", ["x", "i"], ["y"])],
                         [_value("x", [4, 3]), _value("i", [], TensorProto.INT64)], [_value("y", [3])]),
                   ("i:int64[]::0..3",)),
        "sum": (_save(folder / "sum.onnx", [helper.make_node("ReduceSum", ["x"], ["y"], keepdims=0)],
                      [_value("x", [3])], [_value("y", [])]), ()),
    }


@pytest.mark.parametrize("target", ONNX_TARGETS)
@pytest.mark.parametrize("name", ["add", "gather", "sum"])
def test_0d_inputs_and_outputs_stay_0d_and_pass_on_every_onnx_runtime(tmp_path, name, target):
    """Today a 0-d input reached the reference and OpenVINO as shape (1,): a
    0-d Gather index gave (1, 3) against (3,), OpenVINO refused the tensor."""
    model, input_specs = _scalar_files(tmp_path)[name]
    record = _run(model, target, tmp_path, input_specs=input_specs)
    assert record["status"] == "passed", record.get("message")
    expected_shape = {"add": [3], "gather": [3], "sum": []}[name]
    assert record["outputs"]["y"]["ref_shape"] == record["outputs"]["y"]["got_shape"] == expected_shape


def test_a_0d_integer_input_is_an_array_at_every_corner():
    """numpy's operators turn a 0-d array into a numpy scalar (np.clip in the
    "tiny" corner), which ONNX Runtime refuses: "Unable to handle object of
    type numpy.int64"."""
    spec = ModelSpec("m", (InputSpec("i", (), dtype="int64"), InputSpec("b", (), dtype="bool")), ("y",))
    for _, recipe in corner_recipes(spec, ("normal", "uniform", "large", "tiny")):
        for value in make_inputs(spec, recipe).values():
            assert type(value) is np.ndarray and value.shape == ()


def _scaled(path: Path, scale: float) -> Path:
    """y = s * scale + x, and its 0-d sum."""
    return _save(path, [helper.make_node("Mul", ["s", "c"], ["z"]), helper.make_node("Add", ["z", "x"], ["y"]),
                        helper.make_node("ReduceSum", ["y"], ["total"], keepdims=0)],
                 [_value("s", []), _value("x", [3])], [_value("y", [3]), _value("total", [])],
                 [numpy_helper.from_array(np.array(scale, np.float32), "c")])


@pytest.mark.parametrize("target", ONNX_TARGETS)
def test_a_0d_constant_changed_in_the_converted_file_fails_with_0d_shapes_in_the_record(tmp_path, target):
    original, planted = _scaled(tmp_path / "scaled.onnx", 2.0), _scaled(tmp_path / "planted.onnx", 2.5)
    assert _run(original, target, tmp_path / "same", converted=_scaled(tmp_path / "same.onnx", 2.0))["status"] \
        == "passed"
    record = _run(original, target, tmp_path, converted=planted)
    assert record["status"] == "failed", record.get("message")
    assert record["failure"]["shapes"] == {"s": [], "x": [3]}
    assert record["outputs"]["total"]["ref_shape"] == record["outputs"]["total"]["got_shape"] == []
    with np.load(record["failure"]["npz"]) as stored:
        assert stored["input:s"].shape == ()


# ---------------------------------------------------------------- types a runtime cannot take

FLOAT8_TYPES = [name for name in TensorProto.DataType.keys() if name.startswith("FLOAT8")]
ORT_TAKES = "float16, bfloat16, float32, float64, int8, uint8, int16, uint16, int32, uint32, int64, uint64, bool"


def _typed_input(path: Path, elem: int) -> Path:
    """An Identity of one [3] input of element type `elem`."""
    return _save(path, [helper.make_node("Identity", ["x"], ["y"])], [_value("x", [3], elem)],
                 [_value("y", [3], elem)], opset=24)


def _cast_output(path: Path, elem: int) -> Path:
    """A float32 input cast to an output of element type `elem`."""
    return _save(path, [helper.make_node("Cast", ["x"], ["y"], to=elem)], [_value("x", [3])],
                 [_value("y", [3], elem)], opset=21)


def _cases(model: Path, targets=ONNX_TARGETS) -> dict[str, Case]:
    options = RunOptions(models=(str(model),), sources=("onnx",), targets=targets, devices=("cpu",))
    return {case.target: case for case in matrix.build_cases(options)}


@pytest.mark.parametrize("type_name", FLOAT8_TYPES)
def test_a_float8_input_is_a_skip_naming_the_type_and_each_runtime(tmp_path, type_name):
    """Today: an error case, "the harness cannot make" the input."""
    dtype = type_name.lower()
    cases = _cases(_typed_input(tmp_path / "f8.onnx", getattr(TensorProto, type_name)))
    assert set(cases) == set(ONNX_TARGETS)
    for target, case in cases.items():
        assert case.error is None
        assert case.skip.startswith(f"input 'x' ({dtype} tensor): {target} does not take {dtype} (it takes ")


def test_a_string_input_is_a_skip_naming_the_type_and_the_runtime(tmp_path):
    case = _cases(_typed_input(tmp_path / "text.onnx", TensorProto.STRING), ("onnxruntime",))["onnxruntime"]
    assert case.skip == f"input 'x' (string tensor): onnxruntime does not take string (it takes {ORT_TAKES})"


@pytest.mark.parametrize("type_name", ["INT4", "UINT4"])
def test_an_output_of_a_type_onnxruntime_cannot_give_is_a_skip_not_an_input_spec_error(tmp_path, type_name):
    """Once, a bfloat16 output ran and ended in an error blamed on the input spec."""
    dtype = type_name.lower()
    case = _cases(_cast_output(tmp_path / "cast.onnx", getattr(TensorProto, type_name)),
                  ("onnxruntime",))["onnxruntime"]
    assert case.skip == f"output 'y' ({dtype} tensor): onnxruntime does not take {dtype} (it takes {ORT_TAKES})"


@pytest.mark.parametrize("kind", ["sequence", "optional"])
def test_a_sequence_or_optional_output_is_a_skip_saying_the_harness_compares_tensors_only(tmp_path, kind):
    node = (helper.make_node("SequenceConstruct", ["x", "x"], ["y"]) if kind == "sequence"
            else helper.make_node("Optional", ["x"], ["y"]))
    output = (helper.make_tensor_sequence_value_info("y", TensorProto.FLOAT, [3]) if kind == "sequence"
              else helper.make_value_info("y", helper.make_optional_type_proto(
                  helper.make_tensor_type_proto(TensorProto.FLOAT, [3]))))
    model = _save(tmp_path / f"{kind}.onnx", [node], [_value("x", [3])], [output])
    words = {"sequence": "sequence of float32 tensors", "optional": "optional float32 tensor"}[kind]
    for target, case in _cases(model).items():
        assert case.skip == (f"output 'y' ({words}) is not a tensor: the harness feeds and compares tensors only, "
                             f"so it does not run this file on {target}")


def _uint16_add(path: Path, constant: int) -> Path:
    return _save(path, [helper.make_node("Add", ["x", "c"], ["y"])], [_value("x", [2, 3], TensorProto.UINT16)],
                 [_value("y", [2, 3], TensorProto.UINT16)],
                 [numpy_helper.from_array(np.array(constant, np.uint16), "c")])


@pytest.mark.parametrize("target", ONNX_TARGETS)
def test_uint16_runs_exactly_and_a_changed_constant_fails(tmp_path, target):
    """Today a uint16 input was an error ("the harness cannot make" it)."""
    original = _uint16_add(tmp_path / "u16.onnx", 1)
    record = _run(original, target, tmp_path / "same")
    assert record["status"] == "passed", record.get("message")
    assert record["outputs"]["y"]["ref_dtype"] == record["outputs"]["y"]["got_dtype"] == "uint16"
    assert _run(original, target, tmp_path, converted=_uint16_add(tmp_path / "planted.onnx", 2))["status"] == "failed"


# ---------------------------------------------------------------- bfloat16

def _bf16_scaled(path: Path, scale: float) -> Path:
    """A bfloat16 input times `scale` (in float32 between exact Casts: ONNX
    Runtime's CPU provider has no bfloat16 Mul), a bfloat16 output."""
    return _save(path, [helper.make_node("Cast", ["x"], ["x32"], to=TensorProto.FLOAT),
                        helper.make_node("Mul", ["x32", "c"], ["y32"]),
                        helper.make_node("Cast", ["y32"], ["y"], to=TensorProto.BFLOAT16)],
                 [_value("x", [2, 3], TensorProto.BFLOAT16)], [_value("y", [2, 3], TensorProto.BFLOAT16)],
                 [numpy_helper.from_array(np.array(scale, np.float32), "c")])


@pytest.mark.parametrize("target", ONNX_TARGETS)
def test_bfloat16_runs_end_to_end_and_a_changed_constant_fails(tmp_path, target):
    """Today a bfloat16 input or output was a skip ("onnxruntime does not
    take bfloat16"): neither ONNX Runtime's numpy bridge nor ov.Tensor takes
    ml_dtypes' arrays. A constant 2.5 for 2.0 is 25% off, 32 steps of
    bfloat16's 2^-7."""
    original = _bf16_scaled(tmp_path / "bf16.onnx", 2.0)
    record = _run(original, target, tmp_path / "same", converted=_bf16_scaled(tmp_path / "same.onnx", 2.0))
    assert record["status"] == "passed", record.get("message")
    assert record["outputs"]["y"]["ref_dtype"] == record["outputs"]["y"]["got_dtype"] == "bfloat16"
    planted = _run(original, target, tmp_path, converted=_bf16_scaled(tmp_path / "planted.onnx", 2.5))
    assert planted["status"] == "failed", planted.get("message")
    # localized too: ONNX Runtime's CPU provider gives the tensors of both files, bfloat16 ones included
    assert "localized: the first diverging tensor is 'y32'" in planted["message"], planted["message"]


def test_a_bfloat16_output_one_step_off_passes_at_its_default_tolerance():
    """A bfloat16 output is judged at bfloat16's resolution (rtol 5e-2, about
    6 steps of 2^-7; tolerances.BFLOAT16), not float32's: one step off, the
    least a runtime that rounds differently gives, passes; 32 steps fail."""
    import ml_dtypes

    from harness.compare import compare_outputs
    from harness.tolerances import default_tolerance

    ref = np.array([-3.0, -0.7, 0.01, 0.5, 1.0, 1.99, 100.0, 3e4], np.float32).astype(ml_dtypes.bfloat16)
    one_step = (ref.view(np.uint16) + 1).view(ml_dtypes.bfloat16)
    tolerance = default_tolerance("bfloat16", "cpu")
    assert compare_outputs("y", ref, one_step, tolerance).passed
    assert not compare_outputs("y", ref, (ref.astype(np.float32) * 1.25).astype(ml_dtypes.bfloat16), tolerance).passed


# ---------------------------------------------------------------- files ONNX Runtime refuses to load

def _batchwise_gru(path: Path) -> Path:
    """A GRU with layout=1 (batch first), which onnx's full checker accepts
    and ONNX Runtime's kernel refuses at load."""
    hidden, features = 4, 3
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)
               for name, shape in (("W", [1, 3 * hidden, features]), ("R", [1, 3 * hidden, hidden]))]
    return _save(path, [helper.make_node("GRU", ["x", "W", "R"], ["", "h"], hidden_size=hidden, layout=1)],
                 [_value("x", [2, 5, features])], [_value("h", [2, 1, hidden])], weights, opset=14)


def test_a_valid_file_onnxruntime_cannot_load_is_a_skip_naming_its_reason(tmp_path):
    """Today: an error ("onnxruntime could not load ... FAIL ..."), as if the
    file were at fault."""
    model = _batchwise_gru(tmp_path / "gru.onnx")
    record = _run(model, "onnxruntime", tmp_path / "ort")
    assert record["status"] == "skipped", record.get("message")
    assert record["message"].startswith("onnxruntime cannot run this file: onnxruntime could not load")
    assert "Batchwise recurrent operations (layout == 1) are not supported" in record["message"]
    assert "onnx's full checker accepts the file: this is onnxruntime's own limit; run the file on another " \
           "target" in record["message"]
    # The advice, followed (not on OpenVINO, whose GRU reads layout=1's [batch, seq] input as [seq, batch]).
    followed = _run(model, "onnx-reference", tmp_path / "reference")
    assert followed["status"] == "passed", followed.get("message")


def _mixed_add(path: Path, other: int) -> Path:
    return _save(path, [helper.make_node("Add", ["a", "b"], ["y"])], [_value("a", [3]), _value("b", [3], other)],
                 [_value("y", [3])])


def test_a_file_the_checker_rejects_stays_an_error_saying_what_the_checker_said(tmp_path):
    """Its benign twin: a float32 Add of an int64 is the file's fault, not a limit of ONNX Runtime."""
    from harness.errors import CaseError, RuntimeLimit
    from harness.runtimes import onnxruntime as ort_runtime

    options = RunOptions(targets=("onnxruntime",), devices=("cpu",))
    with pytest.raises(CaseError) as refused:
        ort_runtime.Session(_mixed_add(tmp_path / "mixed.onnx", TensorProto.INT64), "cpu", options)
    assert not isinstance(refused.value, RuntimeLimit)
    assert "onnx's full checker rejects the file too: " in refused.value.message
    assert "Fix what the checker names" in refused.value.message
    ort_runtime.Session(_mixed_add(tmp_path / "fixed.onnx", TensorProto.FLOAT), "cpu", options)   # fixed, it loads
