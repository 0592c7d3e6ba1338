"""The TensorRT targets (`tensorrt`, through Polygraphy, and
`onnxruntime-tensorrt`, ONNX Runtime's TensorRT provider) and the shape
profile they are built for.

No TensorRT runs here (no GPU, and its libraries come from NVIDIA's index
only): these tests hold every pure decision of the two modules (typing and
builder flags per precision, strict mode and TensorRT version; the engine
cache key; the profile and its checks; the messages), check that both meet the
backend contract, and that a run asking for them skips every case with its
reason. Fake objects stand in only for TensorRT's parser-error objects, given
to the function that formats them; nothing pretends that TensorRT ran.
"""

from __future__ import annotations

import importlib.util
import inspect
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings

from harness import backends
from harness.cache import cache_key
from harness.errors import CaseError
from harness.inputs import corner_recipes, example_recipe, input_recipes
from harness.options import PRECISIONS
from harness.shape_profile import shape_profile
from harness.specs import InputSpec, ModelSpec
from harness.runtimes import onnxruntime_tensorrt as ort_trt
from harness.runtimes import tensorrt as trt_rt

REPO = Path(__file__).resolve().parents[1]
HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None


def _spec() -> ModelSpec:
    """An NCHW image, an unlaid [N, T] mask sharing N, and an input with a fixed dim."""
    return ModelSpec(
        "two_inputs",
        inputs=(InputSpec("image", ("N", 3, "H", "W"), dims={"N": (1, 4), "H": (8, 32), "W": (10, 40)}, layout="NCHW"),
                InputSpec("mask", ("N", "T"), dims={"N": (1, 4), "T": (2, 16)}, dtype="int64", domain=(0, 1)),
                InputSpec("extra", ("N", 5), dims={"N": (1, 4)}, layout="NC")),
        outputs=("out",))


# ---------------------------------------------------------------- shape_profile

def test_profile_bounds_and_export_shape_in_the_spec_s_layout():
    spec = _spec()
    opt = example_recipe(spec).dims
    profile = shape_profile(spec, {"image": "NCHW", "mask": None, "extra": "NC"})
    assert list(profile) == ["image", "mask", "extra"]
    assert profile["image"] == ((1, 3, 8, 10), (opt["N"], 3, opt["H"], opt["W"]), (4, 3, 32, 40))
    assert profile["mask"] == ((1, 2), (opt["N"], opt["T"]), (4, 16))
    assert profile["extra"] == ((1, 5), (opt["N"], 5), (4, 5))   # the fixed dim stays


def test_profile_moves_to_the_artifact_s_layout():
    spec = _spec()
    opt = example_recipe(spec).dims
    profile = shape_profile(spec, {"image": "NHWC"})   # names not given keep the spec's layout
    assert profile["image"] == ((1, 8, 10, 3), (opt["N"], opt["H"], opt["W"], 3), (4, 32, 40, 3))
    assert profile["extra"] == ((1, 5), (opt["N"], 5), (4, 5))
    # H != W bounds: a swapped transpose would show
    assert shape_profile(spec, {"image": "NWHC"})["image"][2] == (4, 40, 32, 3)


def test_profile_of_a_zoo_model_laid_out_as_keras_takes_it():
    from harness.registry import get_model

    spec = get_model("cnn")
    layouts, _ = spec.source_layouts("keras")
    low, opt, high = shape_profile(spec, layouts)["image"]
    assert (low, high) == ((1, 16, 20, 3), (4, 40, 48, 3))
    assert opt[3] == 3 and all(lo <= o <= hi for lo, o, hi in zip(low, opt, high))


@settings(max_examples=40, deadline=None)
@given(recipe=input_recipes(_spec()))
def test_every_recipe_the_harness_draws_fits_the_profile(recipe):
    """What the engine relies on: no example it feeds falls outside the engine."""
    from harness.layouts import permutation

    spec = _spec()
    profile = shape_profile(spec, {"image": "NHWC"})
    recipes = [recipe, example_recipe(spec)] + [r for _, r in corner_recipes(spec)]
    for each in recipes:
        shapes = {i.name: i.example_shape(each.dims) for i in spec.inputs}
        shapes["image"] = tuple(shapes["image"][a] for a in permutation("NCHW", "NHWC"))
        assert trt_rt.profile_violation(profile, shapes) is None


# ---------------------------------------------------------------- typing and builder flags

@pytest.mark.parametrize("precision, strict, version, expected", [
    # fp32: the file's own types, strongly typed; TensorRT 10 asks with the creation flag, 11 is always strong
    ("fp32", False, "10.13.0.35", (True, True, ("TF32",))),
    ("fp32", True, "10.13.0.35", (True, True, ())),
    ("fp32", False, "11.1.0.106", (True, False, ("TF32",))),
    ("fp32", True, "11.1.0", (True, False, ())),
    # fp16/bf16: weakly typed and lowered by a flag, TensorRT 10 only
    ("fp16", False, "10.0.1", (False, False, ("TF32", "FP16"))),
    ("fp16", True, "10.13.0", (False, False, ("FP16",))),
    ("bf16", False, "10.16.1", (False, False, ("TF32", "BF16"))),
    ("bf16", True, "10.16.1", (False, False, ("BF16",))),
])
def test_builder_plan_per_precision_strict_mode_and_version(precision, strict, version, expected):
    plan = trt_rt.build_plan(precision, strict, version)
    assert (plan.strongly_typed, plan.creation_flag, plan.flags) == expected
    assert plan.typing == ("strong" if expected[0] else "weak")
    assert plan.tf32 is not strict


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_tensorrt_11_does_not_lower_and_says_to_use_a_lowered_onnx(precision):
    with pytest.raises(ValueError, match="strongly typed networks only"):
        trt_rt.build_plan(precision, False, "11.0.0")
    reason = trt_rt.precision_problem(precision, "11.0.0")
    assert f"make a {precision} ONNX model first" in reason and "BuilderFlag." in reason
    # a 10.x build of the bindings without the flag is the same skip
    assert "strongly typed networks only" in trt_rt.precision_problem(precision, "10.16.0", flag_present=False)
    assert trt_rt.precision_problem(precision, "10.16.0") is None


def test_precision_problems():
    ampere, turing = trt_rt.Gpu("NVIDIA A100", (8, 0)), trt_rt.Gpu("Tesla T4", (7, 5))
    assert trt_rt.precision_problem("fp32", "11.1.0") is None
    assert trt_rt.precision_problem("bf16", "10.13.0", ampere) is None
    reason = trt_rt.precision_problem("bf16", "10.13.0", turing)
    assert "Tesla T4 (compute capability 7.5)" in reason and "8.0" in reason
    assert trt_rt.precision_problem("fp16", "10.13.0", turing) is None
    assert "no precision 'int8'" in trt_rt.precision_problem("int8", "10.13.0")
    with pytest.raises(ValueError, match="no precision"):
        trt_rt.build_plan("int8", False, "10.13.0")
    assert trt_rt.weak_typing("10.16.1") and not trt_rt.weak_typing("11.0.0") and trt_rt.trt_major("9.3.0") == 9


# ---------------------------------------------------------------- the engine cache

def _key_parts(**change):
    parts = dict(onnx_sha256="a" * 64, versions={"tensorrt": "10.13.0", "polygraphy": "0.53.6"},
                 gpu=trt_rt.Gpu("NVIDIA H100", (9, 0)), plan=trt_rt.build_plan("fp32", False, "10.13.0"),
                 profile={"x": ((1, 3), (2, 3), (4, 3))}, options=trt_rt.Options())
    parts.update(change)
    return cache_key(trt_rt.engine_key(**parts))


@pytest.mark.parametrize("change", [
    {"onnx_sha256": "b" * 64},
    {"versions": {"tensorrt": "10.13.1", "polygraphy": "0.53.6"}},
    {"versions": {"tensorrt": "10.13.0", "polygraphy": "0.54.0"}},
    {"gpu": trt_rt.Gpu("NVIDIA H200", (9, 0))},
    {"gpu": trt_rt.Gpu("NVIDIA H100", (9, 1))},
    {"plan": trt_rt.build_plan("fp32", True, "10.13.0")},        # TF32 off
    {"plan": trt_rt.build_plan("fp16", False, "10.13.0")},       # weak typing, FP16
    {"plan": trt_rt.build_plan("bf16", False, "10.13.0")},
    {"profile": {"x": ((1, 3), (2, 3), (8, 3))}},
    {"profile": {"x": ((1, 3), (3, 3), (4, 3))}},
    {"profile": {"y": ((1, 3), (2, 3), (4, 3))}},
    {"options": trt_rt.Options(workspace_mb=512)},
    {"options": trt_rt.Options(builder_optimization_level=5)},
])
def test_the_engine_key_changes_with_each_of_its_parts(change):
    assert _key_parts(**change) != _key_parts()
    assert _key_parts() == _key_parts()   # and nothing else moves it


def test_the_timing_cache_is_per_tensorrt_and_gpu():
    h100, a100 = trt_rt.Gpu("NVIDIA H100 80GB HBM3", (9, 0)), trt_rt.Gpu("NVIDIA A100-SXM4-40GB", (8, 0))
    name = trt_rt.timing_cache_name("10.13.0.35", h100)
    assert name == "timing-10.13.0.35-NVIDIA-H100-80GB-HBM3-sm90.cache"
    assert len({name, trt_rt.timing_cache_name("10.13.0.35", a100), trt_rt.timing_cache_name("11.1.0", h100)}) == 3
    assert "/" not in trt_rt.timing_cache_name("10.13.0", trt_rt.Gpu("a/b c", (8, 6)))


# ---------------------------------------------------------------- the profile against the file and the examples

def test_an_input_outside_the_profile_is_refused_naming_it():
    profile = {"image": ((1, 8, 10, 3), (2, 16, 20, 3), (4, 32, 40, 3))}
    assert trt_rt.profile_violation(profile, {"image": (4, 32, 40, 3)}) is None
    message = trt_rt.profile_violation(profile, {"image": (1, 3, 8, 10)})   # NCHW fed to an NHWC engine
    assert "input 'image' of shape [1, 3, 8, 10]" in message and "[1, 8, 10, 3] to [4, 32, 40, 3]" in message
    assert "outside the engine's optimization profile" in message
    assert "input 'image'" in trt_rt.profile_violation(profile, {"image": (2, 16, 20)})   # another rank


def test_session_run_refuses_before_running(tmp_path):
    """The refusal is the session's own check: it comes before the runner (none here)."""
    session = object.__new__(trt_rt.Session)
    session.engine_profile, session._input_names = {"x": ((1, 4), (2, 4), (3, 4))}, ["x"]
    session.path, session.runner = tmp_path / "model.onnx", None
    with pytest.raises(CaseError, match=r"input 'x' of shape \[5, 4\] is outside"):
        session.run([np.zeros((5, 4), np.float32)])
    ort_session = object.__new__(ort_trt.Session)
    ort_session._engine_profile, ort_session._input_names = {"x": ((1, 4), (2, 4), (3, 4))}, ["x"]
    with pytest.raises(CaseError, match=r"input 'x' of shape \[2, 7\] is outside"):
        ort_session.run([np.zeros((2, 7), np.float32)])


def test_a_file_that_cannot_take_the_profile_is_named_before_a_build():
    profile = {"x": ((1, 3, 8, 8), (2, 3, 16, 16), (4, 3, 32, 32))}
    assert trt_rt.profile_mismatch(profile, {"x": [None, 3, None, None]}) is None
    message = trt_rt.profile_mismatch(profile, {"x": [2, 3, None, None]})
    assert "fixed size 2 on axis 0" in message and "asks for 1..4" in message and "dynamic" in message
    assert "rank 3 in the file but 4" in trt_rt.profile_mismatch(profile, {"x": [None, 3, None]})


def test_the_profile_is_keyed_by_the_file_s_names():
    profile = {"a": ((1,), (2,), (3,)), "b": ((4,), (5,), (6,))}
    assert trt_rt.profile_in_onnx_names(profile, ["a", "b"], ["b", "a"]) == profile
    by_position = trt_rt.profile_in_onnx_names(profile, ["a", "b"], ["input.1", "input.2"])
    assert by_position == {"input.1": profile["a"], "input.2": profile["b"]}
    with pytest.raises(CaseError, match="do not match"):
        trt_rt.profile_in_onnx_names(profile, ["a", "b"], ["a", "c"])
    with pytest.raises(CaseError, match="no range for the spec's inputs"):
        trt_rt.profile_in_onnx_names(profile, ["a", "b", "c"], ["a", "b", "c"])


# ---------------------------------------------------------------- messages

class FakeParserError:
    """Stands in for tensorrt.ParserError (TensorRT 10's API: code, desc, node, node_name, node_operator)."""

    def __init__(self, code, desc, node=-1, node_name="", node_operator=""):
        self._values = {"code": code, "desc": desc, "node": node, "node_name": node_name,
                        "node_operator": node_operator}

    def __getattr__(self, name):
        if name.startswith("_") or name not in self._values:
            raise AttributeError(name)
        return lambda: self._values[name]


class OldParserError:
    """A parser error of a binding without node_name/node_operator."""

    def code(self):
        return "ErrorCode.INVALID_NODE"

    def desc(self):
        return "Assertion failed: inputs.size() == 2"

    def node(self):
        return 4


def test_parser_errors_name_the_node_and_its_op():
    path = Path("/models/net.onnx")
    message = trt_rt.parser_error_message(
        [FakeParserError("ErrorCode.UNSUPPORTED_NODE", "No importer registered for op: Einsum", 12, "Einsum_12",
                         "Einsum"),
         FakeParserError("ErrorCode.INVALID_GRAPH", "graph has no outputs")], path)
    assert str(path) in message
    assert "node 12 'Einsum_12' (op Einsum): UNSUPPORTED_NODE: No importer registered for op: Einsum" in message
    assert "- the model: INVALID_GRAPH: graph has no outputs" in message
    assert "cannot import the op" in message and "plugin" in message
    old = trt_rt.parser_error_message([OldParserError()], path)
    assert "node 4: INVALID_NODE: Assertion failed" in old and "cannot import the op" not in old
    assert "could not read /models/net.onnx" in trt_rt.parser_error_message([], path)


def test_a_build_out_of_workspace_names_the_flag():
    log = ["[ERROR] 4: [optimizer.cpp::computeCosts::3728] Error Code 4: Internal Error (Could not find any "
           "implementation for node /conv1/Conv due to insufficient workspace. See verbose log for requested sizes.)"]
    message = trt_rt.build_failure_message(Path("m.onnx"), log, 64)
    assert "ran out of workspace memory (limit: 64 MiB)" in message and "--tensorrt-workspace-mb" in message
    assert "insufficient workspace" in message
    default = trt_rt.build_failure_message(Path("m.onnx"), ["[ERROR] Error Code 2: OutOfMemory (no further "
                                                              "information)"], 0)
    assert "TensorRT's default" in default and "--tensorrt-workspace-mb" in default
    other = trt_rt.build_failure_message(Path("m.onnx"), ["[ERROR] 10: Could not find any implementation for "
                                                          "node ArgMax_3."], 0)
    assert "--tensorrt-workspace-mb" not in other and "ArgMax_3" in other
    assert "boom" in trt_rt.build_failure_message(Path("m.onnx"), [], 0, RuntimeError("boom"))


def test_skip_reasons():
    assert "--device=cuda" in trt_rt.device_problem("cpu") and trt_rt.device_problem("cuda") is None
    assert "does not know device 'gpu'" in trt_rt.device_problem("gpu")
    assert trt_rt.missing("cpu") == trt_rt.device_problem("cpu")
    reason = trt_rt.install_problem("tensorrt", ImportError("No module named 'tensorrt'"))
    assert "No module named 'tensorrt'" in reason and "--extra-index-url https://pypi.nvidia.com tensorrt-cu12" in reason
    assert "needs TensorRT 10 or newer" in trt_rt.install_problem("tensorrt", version="8.6.1")
    assert "pip install polygraphy" in trt_rt.install_problem("polygraphy", "x")
    assert "no precision 'int8'" in trt_rt.missing_precision("cuda", "int8")
    assert trt_rt.missing_precision("cpu", "fp32") is None
    assert "--device=cuda" in trt_rt.missing_precision("cpu", "fp16")


@pytest.mark.skipif(HAS_TENSORRT, reason="tensorrt is installed here")
def test_without_tensorrt_the_cuda_reason_says_how_to_install_it():
    assert "pip install --extra-index-url https://pypi.nvidia.com tensorrt" in trt_rt.missing("cuda")
    assert "tensorrt Python package" in trt_rt.missing_precision("cuda", "bf16")


def test_the_file_s_inputs_are_read_without_its_weights(tmp_path):
    """Names, dtypes and dims of the graph inputs, initializers listed among them (IR < 4) left out;
    and the ops that tell a Q/DQ file."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    scale = numpy_helper.from_array(np.array(0.1, np.float32), "s")
    graph = helper.make_graph(
        [helper.make_node("QuantizeLinear", ["x", "s"], ["q"]), helper.make_node("DequantizeLinear", ["q", "s"], ["d"]),
         helper.make_node("MatMul", ["d", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4]),
         helper.make_tensor_value_info("ids", TensorProto.INT64, [2, "T"]),
         helper.make_tensor_value_info("w", TensorProto.FLOAT, [4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], initializer=[weight, scale])
    path = tmp_path / "q.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)]), path)
    assert trt_rt.onnx_io(path) == ([("x", "float32", [None, 4]), ("ids", "int64", [2, None])], ["y"])
    names, ops = ort_trt._onnx_summary(path)
    assert names == ["x", "ids"] and ort_trt.has_qdq(ops)
    (tmp_path / "bad.onnx").write_bytes(b"not a model")
    with pytest.raises(CaseError, match="does not read as an ONNX model"):
        trt_rt.onnx_io(tmp_path / "bad.onnx")


def test_sessions_refuse_the_cpu_before_touching_a_library(tmp_path):
    options = SimpleNamespace(runtime_options={}, strict_cuda=False, cache_dir=tmp_path, use_cache=True)
    with pytest.raises(CaseError, match="NVIDIA GPUs only"):
        trt_rt.Session(tmp_path / "m.onnx", "cpu", options)
    with pytest.raises(CaseError, match="NVIDIA GPUs only"):
        ort_trt.Session(tmp_path / "m.onnx", "cpu", options)   # through onnxruntime.py's provider hook


# ---------------------------------------------------------------- ONNX Runtime's TensorRT provider

def test_profile_shapes_in_the_provider_s_format():
    profile = {"image": ((1, 8, 10, 3), (2, 16, 20, 3), (4, 32, 40, 3)), "mask": ((1, 2), (2, 5), (4, 16))}
    options = ort_trt.provider_options("fp32", profile, Path("/cache/x"), ort_trt.Options(), int8=False)
    assert options["trt_profile_min_shapes"] == "image:1x8x10x3,mask:1x2"
    assert options["trt_profile_opt_shapes"] == "image:2x16x20x3,mask:2x5"
    assert options["trt_profile_max_shapes"] == "image:4x32x40x3,mask:4x16"
    assert (options["trt_fp16_enable"], options["trt_int8_enable"]) == (False, False)
    assert options["trt_engine_cache_enable"] and options["trt_engine_cache_path"] == "/cache/x"
    assert "trt_max_workspace_size" not in options and "trt_builder_optimization_level" not in options
    tuned = ort_trt.provider_options("fp16", None, Path("/c"), ort_trt.Options(workspace_mb=2, builder_optimization_level=0,
                                                                               timing_cache="off"), int8=False,
                                     engine_cache=False)
    assert tuned["trt_fp16_enable"] and tuned["trt_max_workspace_size"] == 2 << 20
    assert tuned["trt_builder_optimization_level"] == 0 and not tuned["trt_timing_cache_enable"]
    assert not tuned["trt_engine_cache_enable"] and "trt_profile_min_shapes" not in tuned


def test_qdq_files_and_the_int8_flag():
    assert ort_trt.has_qdq(["Conv", "QuantizeLinear", "DequantizeLinear"]) and not ort_trt.has_qdq(["Conv", "Relu"])
    assert ort_trt.int8_enable(True, "10.13.0")          # weakly typed Q/DQ, as ORT's docs run it
    assert not ort_trt.int8_enable(True, "11.1.0")       # no INT8 flag: strongly typed takes Q/DQ's int8
    assert not ort_trt.int8_enable(True, None)           # unknown TensorRT: leave the network strongly typed
    assert not ort_trt.int8_enable(False, "10.13.0")


def test_provider_skip_reasons():
    assert "--device=cuda" in ort_trt.device_problem("cpu") and ort_trt.device_problem("cuda") is None
    reason = ort_trt.provider_problem("1.32.0", ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert "no TensorrtExecutionProvider" in reason and "onnxruntime-gpu" in reason and "TensorRT" in reason
    assert ort_trt.provider_problem("1.32.0", ["TensorrtExecutionProvider", "CPUExecutionProvider"]) is None
    assert "tensorrt Python package" in ort_trt.fp16_problem(None)
    assert "strongly typed networks only" in ort_trt.fp16_problem("11.0.0") and ort_trt.fp16_problem("10.8.0") is None
    assert "no precision 'bf16'" in ort_trt.missing_precision("cuda", "bf16")
    assert ort_trt.missing_precision("cpu", "fp32") is None and ort_trt.missing("cpu") == ort_trt.device_problem("cpu")


def test_strict_mode_needs_tf32_overridden_in_the_environment(tmp_path):
    assert ort_trt.tf32_problem(False, None) is None and ort_trt.tf32_problem(True, "0") is None
    reason = ort_trt.tf32_problem(True, None)
    assert "NVIDIA_TF32_OVERRIDE=0" in reason and "--target=tensorrt" in reason
    assert ort_trt.tf32_problem(True, "1") == reason
    options = SimpleNamespace(runtime_options={}, strict_cuda=True, cache_dir=tmp_path, use_cache=True)
    if "NVIDIA_TF32_OVERRIDE" not in __import__("os").environ:
        with pytest.raises(CaseError, match="NVIDIA_TF32_OVERRIDE=0"):
            ort_trt.Session(tmp_path / "m.onnx", "cuda", options)


def test_the_provider_s_cache_folder_changes_with_its_parts():
    gpu = trt_rt.Gpu("NVIDIA H100", (9, 0))
    base = ort_trt.provider_options("fp32", {"x": ((1,), (2,), (3,))}, Path("/c"), ort_trt.Options(), False)
    key = cache_key(ort_trt.cache_parts("a" * 64, {"onnxruntime": "1.32.0", "tensorrt": "10.13.0"}, gpu, base))
    changes = [
        ("b" * 64, {"onnxruntime": "1.32.0", "tensorrt": "10.13.0"}, gpu, base),
        ("a" * 64, {"onnxruntime": "1.33.0", "tensorrt": "10.13.0"}, gpu, base),
        ("a" * 64, {"onnxruntime": "1.32.0", "tensorrt": None}, gpu, base),
        ("a" * 64, {"onnxruntime": "1.32.0", "tensorrt": "10.13.0"}, trt_rt.Gpu("NVIDIA A100", (8, 0)), base),
        ("a" * 64, {"onnxruntime": "1.32.0", "tensorrt": "10.13.0"}, gpu, {**base, "trt_fp16_enable": True}),
        ("a" * 64, {"onnxruntime": "1.32.0", "tensorrt": "10.13.0"}, gpu, {**base, "trt_profile_max_shapes": "x:4"}),
    ]
    assert all(cache_key(ort_trt.cache_parts(*change)) != key for change in changes)
    # the folder's own path is not part of it
    moved = {**base, "trt_engine_cache_path": "/elsewhere", "trt_timing_cache_path": "/elsewhere"}
    assert cache_key(ort_trt.cache_parts("a" * 64, {"onnxruntime": "1.32.0", "tensorrt": "10.13.0"}, gpu, moved)) == key


# ---------------------------------------------------------------- the contract

def test_both_runtimes_are_registered_and_meet_the_contract():
    """tests/test_backends.py's contract test walks `backends.names("runtime")`:
    both are in it, and pass it (run here for the runtimes alone)."""
    from tests.test_backends import test_every_registered_backend_meets_the_contract

    names = backends.names("runtime")
    assert {"tensorrt", "onnxruntime-tensorrt"} <= set(names)
    test_every_registered_backend_meets_the_contract("runtime")
    for name, module in (("tensorrt", trt_rt), ("onnxruntime-tensorrt", ort_trt)):
        assert backends.runtime(name) is module and module.FORMATS == ("onnx",)
        assert module.SHAPE_PROFILE and module.NEEDS_ISOLATION
        assert {"precision", "profile"} <= set(inspect.signature(module.Session).parameters)
        assert set(backends.runtime_precisions(name)) <= set(PRECISIONS)
    assert backends.runtime_precisions("tensorrt") == ("fp32", "fp16", "bf16")
    assert backends.runtime_precisions("onnxruntime-tensorrt") == ("fp32", "fp16")


def test_flags_are_made_from_their_options():
    flags = {backends.option_flag(name, option) for name in ("tensorrt", "onnxruntime-tensorrt")
             for option in backends.option_fields(name)}
    assert flags == {"--tensorrt-workspace-mb", "--tensorrt-builder-optimization-level", "--tensorrt-timing-cache",
                     "--onnxruntime-tensorrt-workspace-mb", "--onnxruntime-tensorrt-builder-optimization-level",
                     "--onnxruntime-tensorrt-timing-cache"}


def test_modules_import_without_tensorrt_polygraphy_or_onnx():
    code = ("import sys, harness.runtimes.tensorrt, harness.runtimes.onnxruntime_tensorrt, harness.shape_profile; "
            "loaded = {'tensorrt', 'polygraphy', 'onnx'} & set(sys.modules); "
            "assert not loaded, f'imported at module level: {loaded}'")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


# ---------------------------------------------------------------- a run

def test_a_run_on_a_machine_without_them_skips_every_case_with_its_reason(run_parity):
    run = run_parity("--model=mlp", "--target=tensorrt,onnxruntime-tensorrt", "--device=cpu,cuda",
                     "--reference-device=cpu", "--precision=fp32,fp16,bf16",
                     "--tensorrt-workspace-mb=256", "--tensorrt-builder-optimization-level=1",
                     "--tensorrt-timing-cache=off", "--onnxruntime-tensorrt-workspace-mb=128")
    cases = run.cases
    assert run.result.ret == 0, run.output
    assert set(cases) == {
        "mlp-torch-tensorrt-cpu", "mlp-torch-tensorrt-cpu-fp16", "mlp-torch-tensorrt-cpu-bf16",
        "mlp-torch-tensorrt-cuda-ref-cpu", "mlp-torch-tensorrt-cuda-fp16-ref-cpu",
        "mlp-torch-tensorrt-cuda-bf16-ref-cpu",
        "mlp-torch-onnxruntime-tensorrt-cpu", "mlp-torch-onnxruntime-tensorrt-cpu-fp16",
        "mlp-torch-onnxruntime-tensorrt-cuda-ref-cpu", "mlp-torch-onnxruntime-tensorrt-cuda-fp16-ref-cpu",
    }, run.output
    if HAS_TENSORRT or "TensorrtExecutionProvider" in _ort_providers():
        pytest.skip("a TensorRT is installed here: the cuda cases may run")
    for case_id, record in cases.items():
        assert record["status"] == "skipped", (case_id, record.get("message"), run.output)
        if "-cpu" in case_id.replace("-ref-cpu", ""):
            assert "NVIDIA GPUs only" in record["message"] and "--device=cuda" in record["message"]
        elif "onnxruntime-tensorrt" in case_id:
            assert "no TensorrtExecutionProvider" in record["message"] and "onnxruntime-gpu" in record["message"]
        else:
            assert "tensorrt Python package" in record["message"] and "pypi.nvidia.com" in record["message"]
    assert "--tensorrt-workspace-mb" not in run.output   # accepted, and used by cases of this run: no warning


def test_a_bad_value_of_a_tensorrt_flag_is_a_usage_error(run_parity):
    run = run_parity("--model=mlp", "--target=tensorrt", "--tensorrt-timing-cache=maybe")
    assert run.result.ret == 4, run.output
    errors = "\n".join(run.result.errlines)
    assert "--tensorrt-timing-cache 'maybe': give one of on, off (default on)" in errors


def _ort_providers() -> list[str]:
    import onnxruntime

    return onnxruntime.get_available_providers()
