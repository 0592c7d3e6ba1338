"""OpenVINO as a target and the ONNX -> OpenVINO IR hop, on real files with
real OpenVINO: parity with ONNX Runtime at float32, the precision traps (the
CPU plugin's bf16 default, save_model's fp16 weights), a planted weight error
beside its correct twin, bad files, and binding."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest

pytest.importorskip("openvino")

from harness.compare import compare_outputs
from harness.converters import onnx_openvino
from harness.errors import CaseError
from harness.inputs import InputRecipe, corner_recipes, make_inputs
from harness.registry import get_model
from harness.runtimes import onnxruntime as ort_runtime
from harness.runtimes import openvino as ov_runtime
from harness.tolerances import resolve_tolerance
from tests import planted

REPO = Path(__file__).resolve().parents[1]
MODELS = ("cnn", "mlp")


@pytest.fixture(scope="module")
def onnx_files(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("openvino-onnx")
    return {name: planted.export_zoo(name, tmp / name) for name in MODELS}


@pytest.fixture(scope="module")
def ir_files(onnx_files, tmp_path_factory) -> dict[str, tuple[Path, dict]]:
    """(the hop's model.xml, its provenance) per model."""
    tmp = tmp_path_factory.mktemp("openvino-ir")
    return {name: _convert(onnx_files[name], name, tmp / name) for name in MODELS}


def _convert(source: Path, model: str, out: Path) -> tuple[Path, dict]:
    spec = get_model(model)
    provenance = onnx_openvino.convert(source, spec, [], out, layouts=spec.source_layouts("torch"))
    return out / onnx_openvino.FILENAME, provenance


def _examples(model: str) -> list[list[np.ndarray]]:
    """The corner examples (smallest and largest shapes, large and tiny values)
    and a few normal draws: shapes change from one example to the next."""
    spec = get_model(model)
    recipes = [recipe for _, recipe in corner_recipes(spec)]
    recipes += [InputRecipe(recipes[0].dims, {i.name: "normal" for i in spec.inputs}, 0.0, seed) for seed in (7, 8)]
    return [[make_inputs(spec, recipe)[i.name] for i in spec.inputs] for recipe in recipes]


def _reference(path: Path, model: str) -> list[list[np.ndarray]]:
    """ONNX Runtime's CPU provider, graph optimizations off, on `_examples(model)`."""
    spec = get_model(model)
    session = ort_runtime.Session(path, "cpu", SimpleNamespace(runtime_options={"onnxruntime": {"opt_level": "disable"}}, strict_cuda=False))
    session.bind([i.name for i in spec.inputs], [i.dtype for i in spec.inputs], [o.name for o in spec.outputs])
    return [session.run(example) for example in _examples(model)]


def _open(path: Path, model: str, precision: str = "fp32") -> ov_runtime.Session:
    spec = get_model(model)
    session = ov_runtime.Session(path, "cpu", None, precision)
    session.bind([i.name for i in spec.inputs], [i.dtype for i in spec.inputs], [o.name for o in spec.outputs])
    return session


def _worst(reference: list[list[np.ndarray]], session: ov_runtime.Session, model: str):
    """The worst comparison over the examples, each output held to its default
    float32 tolerance on the CPU, as the engine resolves it."""
    spec = get_model(model)
    worst = None
    for expected, example in zip(reference, _examples(model)):
        for output, want, got in zip(spec.outputs, expected, session.run(example)):
            tolerance = resolve_tolerance(output, str(want.dtype), ov_runtime.NAME, "cpu")
            result = compare_outputs(output.name, want, got, tolerance)
            if worst is None or result.error_ratio > worst.error_ratio:
                worst = result
    return worst


def _skip_without(precision: str) -> None:
    reason = ov_runtime.missing_precision("cpu", precision)
    if reason is not None:
        pytest.skip(reason)


# --- float32 parity -----------------------------------------------------------------

@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("artifact", ["onnx", "openvino-ir"])
def test_fp32_matches_onnxruntime(onnx_files, ir_files, model, artifact):
    path = onnx_files[model] if artifact == "onnx" else ir_files[model][0]
    session = _open(path, model)
    worst = _worst(_reference(onnx_files[model], model), session, model)
    assert worst.passed, worst.message
    assert worst.normalized_error < 1e-5
    provenance = session.provenance
    assert provenance["format"] == artifact
    assert provenance["inference_precision_hint"] == "f32"
    assert provenance["inference_precision"] == "f32"  # what the compiled model reports
    assert provenance["execution_devices"] == ["CPU"]
    assert provenance["num_streams"] >= 1 and provenance["inference_num_threads"] >= 1
    session.close()


def test_outputs_are_copied_out_of_the_request(onnx_files):
    session = _open(onnx_files["mlp"], "mlp")
    first, second = _examples("mlp")[-2:]  # same shapes, other values
    kept = session.run(first)[0]
    snapshot = kept.copy()
    session.run(second)
    np.testing.assert_array_equal(kept, snapshot)


# --- the precision traps -------------------------------------------------------------

def test_default_precision_is_bf16_and_fails_fp32_tolerances(onnx_files):
    """The planted twin of the fp32 test: the CPU plugin's default precision on a
    CPU with BF16. Compiled without a hint it reports bf16, and misses the float32
    tolerance by two orders of magnitude; the session at fp32 passes."""
    import openvino as ov

    _skip_without("bf16")
    model, path = "cnn", onnx_files["cnn"]
    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(path)), "CPU")  # no INFERENCE_PRECISION_HINT
    assert compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name() == "bf16"
    spec = get_model(model)
    reference = _reference(path, model)
    request = compiled.create_infer_request()
    ratios = []
    for expected, example in zip(reference, _examples(model)):
        request.infer(example)
        got = request.get_output_tensor(0).data.copy()
        tolerance = resolve_tolerance(spec.outputs[0], "float32", ov_runtime.NAME, "cpu")
        ratios.append(compare_outputs(spec.outputs[0].name, expected[0], got, tolerance).error_ratio)
    assert max(ratios) > 10
    assert _worst(reference, _open(path, model, "fp32"), model).passed


@pytest.mark.parametrize("model", MODELS)
def test_bf16_precision_fails_fp32_tolerances(onnx_files, model):
    _skip_without("bf16")
    session = _open(onnx_files[model], model, "bf16")
    assert session.provenance["inference_precision"] == "bf16"
    worst = _worst(_reference(onnx_files[model], model), session, model)
    assert not worst.passed and worst.error_ratio > 10
    assert worst.normalized_error < 2e-2  # bf16's rounding, not a broken model (measured: 4.8e-3 to 5.7e-3)


def test_fp16_precision_runs_in_f16_or_is_refused(onnx_files):
    """On a CPU without FP16 OpenVINO turns an f16 hint into bf16 without a word:
    missing_precision says so, and a session asked for fp16 refuses to run."""
    reason = ov_runtime.missing_precision("cpu", "fp16")
    if reason is None:
        session = _open(onnx_files["cnn"], "cnn", "fp16")
        assert session.provenance["inference_precision"] == "f16"
        worst = _worst(_reference(onnx_files["cnn"], "cnn"), session, "cnn")
        assert not worst.passed and worst.normalized_error < 1e-2
        return
    assert "FP16" in reason and "OPTIMIZATION_CAPABILITIES" in reason
    with pytest.raises(CaseError) as caught:
        ov_runtime.Session(onnx_files["cnn"], "cpu", None, "fp16")
    assert caught.value.stage == "runtime"
    assert str(onnx_files["cnn"]) in caught.value.message and "not the f16" in caught.value.message


def test_save_model_default_fp16_weights_are_caught(onnx_files, ir_files, tmp_path):
    """ov.save_model stores float16 weights unless told not to: such an IR is off
    beyond the float32 tolerance; the hop's IR holds float32 weights only, and
    the hop's own check refuses a compressed one."""
    import openvino as ov

    model = "cnn"
    converted = ov.convert_model(str(onnx_files[model]))
    compressed = tmp_path / "compressed" / "model.xml"
    ov.save_model(converted, str(compressed))  # the default: compress_to_fp16=True
    hop_ir, provenance = ir_files[model]
    assert provenance["compress_to_fp16"] is False
    assert set(provenance["weight_element_types"]) == {"f32"}
    assert hop_ir.with_suffix(".bin").stat().st_size > 1.9 * compressed.with_suffix(".bin").stat().st_size

    saved = ov.Core().read_model(str(compressed))
    assert "f16" in onnx_openvino._float_constants(saved)
    with pytest.raises(CaseError, match="compressed to float16"):
        onnx_openvino.check_saved_weights(converted, saved, compressed)

    reference = _reference(onnx_files[model], model)
    worst = _worst(reference, _open(compressed, model), model)
    assert not worst.passed and worst.error_ratio > 5
    assert _worst(reference, _open(hop_ir, model), model).passed


def test_ir_with_one_weight_off_by_1e_3_fails_beside_its_twin(onnx_files, ir_files, tmp_path):
    model = "cnn"
    source = tmp_path / "perturbed.onnx"
    shutil.copy(onnx_files[model], source)
    perturbed, _ = _convert(planted.perturb_weight(source, 1e-3), model, tmp_path / "perturbed-ir")
    reference = _reference(onnx_files[model], model)
    worst = _worst(reference, _open(perturbed, model), model)
    assert not worst.passed
    assert 1 < worst.error_ratio < 1e3  # a small error, caught, not a gross one
    assert _worst(reference, _open(ir_files[model][0], model), model).passed


# --- the hop --------------------------------------------------------------------------

def test_hop_provenance(onnx_files, ir_files):
    import hashlib

    path, provenance = ir_files["cnn"]
    assert path.name == "model.xml" and path.with_suffix(".bin").is_file()
    assert provenance["converter"] == onnx_openvino.NAME == "openvino.convert_model"
    assert provenance["source_sha256"] == hashlib.sha256(onnx_files["cnn"].read_bytes()).hexdigest()
    assert provenance["input_layouts"] == {"image": "NCHW"}
    assert provenance["output_layouts"] == get_model("cnn").source_layouts("torch")[1]
    assert provenance["tensor_names"]["inputs"] == [["image"]]
    assert provenance["versions"] == onnx_openvino.versions() and "openvino" in provenance["versions"]
    assert (onnx_openvino.READS, onnx_openvino.WRITES) == (("onnx",), "openvino-ir")
    assert onnx_openvino.missing() is None


# --- bad input ------------------------------------------------------------------------

@pytest.fixture
def ir_copy(ir_files, tmp_path) -> Path:
    """A copy of the cnn IR that a test may damage."""
    xml = ir_files["cnn"][0]
    shutil.copy(xml, tmp_path / xml.name)
    shutil.copy(xml.with_suffix(".bin"), tmp_path / xml.with_suffix(".bin").name)
    return tmp_path / xml.name


def test_ir_without_its_bin_is_an_error_naming_the_file(ir_copy):
    ir_copy.with_suffix(".bin").unlink()
    with pytest.raises(CaseError) as caught:
        ov_runtime.Session(ir_copy, "cpu", None)
    assert caught.value.stage == "runtime"
    assert str(ir_copy) in caught.value.message and "model.bin" in caught.value.message


@pytest.mark.parametrize("keep", [0.5, 0.0])
def test_truncated_bin_is_an_error_naming_the_file(ir_copy, keep):
    weights = ir_copy.with_suffix(".bin")
    data = weights.read_bytes()
    weights.write_bytes(data[:int(len(data) * keep)])
    with pytest.raises(CaseError) as caught:
        ov_runtime.Session(ir_copy, "cpu", None)
    assert str(ir_copy) in caught.value.message and "truncated" in caught.value.message


@pytest.mark.parametrize("content", [b"not a model\n", "truncated"])
def test_onnx_that_does_not_parse_is_an_error_naming_the_file(onnx_files, tmp_path, content):
    path = tmp_path / "broken.onnx"
    path.write_bytes(onnx_files["cnn"].read_bytes()[:3000] if content == "truncated" else content)
    with pytest.raises(CaseError) as caught:
        ov_runtime.Session(path, "cpu", None)
    assert caught.value.stage == "runtime" and str(path) in caught.value.message
    with pytest.raises(CaseError) as caught:
        _convert(path, "cnn", tmp_path / "ir")
    assert caught.value.stage == "convert" and str(path) in caught.value.message
    assert not (tmp_path / "ir" / "model.xml").exists()


def _custom_op_model(path: Path) -> Path:
    from onnx import TensorProto, helper

    node = helper.make_node("FancyOp", ["x"], ["y"], domain="com.example")
    graph = helper.make_graph([node], "custom", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 16])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("com.example", 1)])
    onnx.save(model, str(path))
    return path


def test_op_openvino_cannot_run_is_an_error_naming_file_and_op(tmp_path):
    path = _custom_op_model(tmp_path / "custom.onnx")
    with pytest.raises(CaseError) as caught:
        ov_runtime.Session(path, "cpu", None)
    assert str(path) in caught.value.message and "FancyOp" in caught.value.message
    assert "another target" in caught.value.message
    with pytest.raises(CaseError) as caught:
        _convert(path, "mlp", tmp_path / "ir")
    assert caught.value.stage == "convert"
    assert str(path) in caught.value.message and "FancyOp" in caught.value.message


def test_external_data_outside_the_model_folder_is_refused(onnx_files, tmp_path):
    """A model file must not make the harness read arbitrary files."""
    folder = tmp_path / "model"
    folder.mkdir()
    path = folder / "model.onnx"
    proto = onnx.load(str(onnx_files["mlp"]))
    onnx.save(proto, str(path), save_as_external_data=True, location="weights.data", size_threshold=0)
    (folder / "weights.data").rename(tmp_path / "weights.data")
    proto = onnx.load(str(path), load_external_data=False)
    for tensor in proto.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../weights.data"
    onnx.save(proto, str(path))
    with pytest.raises(CaseError) as caught:
        ov_runtime.Session(path, "cpu", None)
    assert str(path) in caught.value.message and "outside its own folder" in caught.value.message
    with pytest.raises(CaseError) as caught:
        _convert(path, "mlp", tmp_path / "ir")
    assert str(path) in caught.value.message and "outside" in caught.value.message


def _unsqueeze_model(path: Path, axes_as_input: bool) -> Path:
    """Unsqueeze with its axes a graph input (as ONNX's test_unsqueeze_axis_0 has them), which the CPU plugin
    cannot compile (the output's rank is not known), or the same axes as a constant."""
    from onnx import TensorProto, helper, numpy_helper

    axes = [helper.make_tensor_value_info("axes", TensorProto.INT64, [1])] if axes_as_input else []
    constant = [] if axes_as_input else [numpy_helper.from_array(np.array([0], np.int64), "axes")]
    graph = helper.make_graph([helper.make_node("Unsqueeze", ["x", "axes"], ["y"])], "unsqueeze",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4]), *axes],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4])], constant)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model, full_check=True)   # a valid file: not compiling it is OpenVINO's limit
    onnx.save(model, str(path))
    return path


def test_a_valid_file_the_cpu_plugin_cannot_compile_is_its_limit_with_its_own_reason(tmp_path):
    """Before, a CaseError whose first line was OpenVINO's source location ("Exception from
    src/inference/src/cpp/core.cpp:117:"), the reason cut off by summaries; the user's own file an error."""
    from harness.errors import RuntimeLimit

    path = _unsqueeze_model(tmp_path / "unsqueeze.onnx", axes_as_input=True)
    with pytest.raises(RuntimeLimit) as caught:
        ov_runtime.Session(path, "cpu", None)
    message = caught.value.message
    assert len(message.splitlines()) == 1 and str(path) in message and "another target" in message
    assert "doesn't support Unsqueeze operation with dynamic rank" in message and "core.cpp" not in message


def test_the_same_unsqueeze_with_constant_axes_compiles_and_runs(tmp_path):
    session = ov_runtime.Session(_unsqueeze_model(tmp_path / "unsqueeze.onnx", axes_as_input=False), "cpu", None)
    session.bind(["x"], ["float32"], ["y"])
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.testing.assert_array_equal(session.run([x])[0], x[None])


# --- binding and declared shapes --------------------------------------------------------

def _renamed(source: Path, out: Path) -> Path:
    """The ONNX file with its inputs and outputs renamed input_K / output_K."""
    proto = onnx.load(str(source))
    renames = {v.name: f"input_{k}" for k, v in enumerate(proto.graph.input)}
    renames |= {v.name: f"output_{k}" for k, v in enumerate(proto.graph.output)}
    for value in list(proto.graph.input) + list(proto.graph.output):
        value.name = renames[value.name]
    for node in proto.graph.node:
        node.input[:] = [renames.get(n, n) for n in node.input]
        node.output[:] = [renames.get(n, n) for n in node.output]
    onnx.save(proto, str(out))
    return out


def test_bind_by_name(onnx_files):
    session = ov_runtime.Session(onnx_files["cnn"], "cpu", None)
    bound = session.bind(["image"], ["float32"], ["features"])
    assert bound == {"matched_by": "name", "inputs": {"image": "image"}, "outputs": {"features": "features"}}


def test_bind_by_position_runs_the_same(onnx_files, tmp_path):
    model = "mlp"
    session = ov_runtime.Session(_renamed(onnx_files[model], tmp_path / "renamed.onnx"), "cpu", None)
    bound = session.bind(["x"], ["float32"], ["logits"])
    assert bound == {"matched_by": "position", "inputs": {"x": "input_0"}, "outputs": {"logits": "output_0"}}
    example = _examples(model)[0]
    np.testing.assert_array_equal(session.run(example)[0], _open(onnx_files[model], model).run(example)[0])


def _dropout_model(path: Path, relu_first: bool) -> Path:
    """ONNX's test_dropout_default_ratio: an inference-mode Dropout, which OpenVINO folds away, its input port
    then named after the Dropout's output ('y') only; or a Relu before the Dropout, the input keeping its name."""
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Relu", ["x"], ["d"])] if relu_first else []
    nodes += [helper.make_node("Dropout", ["d" if relu_first else "x", "r"], ["y"])]
    graph = helper.make_graph(nodes, "dropout", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4]),
                                                 helper.make_tensor_value_info("r", TensorProto.FLOAT, [])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 4])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


@pytest.mark.parametrize("relu_first", [False, True])   # False: "inputs ['y', 'r'] do not match the spec's ['x', 'r']"
def test_an_input_folded_through_to_an_output_binds_by_the_file_s_name(tmp_path, relu_first):
    session = ov_runtime.Session(_dropout_model(tmp_path / "dropout.onnx", relu_first), "cpu", None)
    bound = session.bind(["x", "r"], ["float32", "float32"], ["y"])
    assert bound == {"matched_by": "name", "inputs": {"x": "x", "r": "r"}, "outputs": {"y": "y"}}
    x = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
    np.testing.assert_array_equal(session.run([x, np.float32(0.5)])[0], np.maximum(x, 0) if relu_first else x)
    with pytest.raises(CaseError, match="do not match"):   # the file's names bind only the names it has
        session.bind(["w", "r"], ["float32", "float32"], ["y"])


def _reduce_sum_empty_axes_model(path: Path) -> Path:
    """ONNX's test_reduce_sum_empty_axes_input_noop: ReduceSum with its `axes` a graph input of shape (0,) and
    noop_with_empty_axes=1 (the output is the input); OpenVINO's reader drops the empty `axes` parameter."""
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("ReduceSum", ["data", "axes"], ["reduced"], noop_with_empty_axes=1)],
                              "reduce_sum", [helper.make_tensor_value_info("data", TensorProto.FLOAT, [3, 2, 2]),
                                             helper.make_tensor_value_info("axes", TensorProto.INT64, [0])],
                              [helper.make_tensor_value_info("reduced", TensorProto.FLOAT, [3, 2, 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def test_an_empty_input_openvino_drops_is_not_fed_and_the_case_passes(tmp_path):
    """Before: "the converted model's inputs ['data'] do not match the spec's ['data', 'axes']" (42 of ONNX's
    node tests: empty Reduce axes, CastLike's like, Split's input)."""
    from harness.cache import ArtifactCache
    from harness.matrix import build_cases
    from harness.options import RunOptions
    from harness.runner import run_case

    model = _reduce_sum_empty_axes_model(tmp_path / "reduce_sum.onnx")
    options = RunOptions(models=(str(model),), sources=("onnx",), targets=("openvino",), devices=("cpu",),
                         examples=5, cache_dir=tmp_path / "cache", reports_dir=tmp_path / "reports", localize="off")
    (case,) = build_cases(options)
    record = run_case(case, options, ArtifactCache(options.cache_dir)).to_json()
    assert record["status"] == "passed", record["message"]
    runtime = record["provenance"]["runtime"]
    assert list(runtime["dropped_inputs"]) == ["axes"] and "(0,)" in runtime["dropped_inputs"]["axes"]
    assert record["provenance"]["binding"]["inputs"] == {"data": "data"}


def test_a_dropped_input_binds_to_no_port_and_declares_nothing(tmp_path):
    session = ov_runtime.Session(_reduce_sum_empty_axes_model(tmp_path / "reduce_sum.onnx"), "cpu", None)
    bound = session.bind(["data", "axes"], ["float32", "int64"], ["reduced"])
    assert bound == {"matched_by": "name", "inputs": {"data": "data"}, "outputs": {"reduced": "reduced"}}
    assert session.declared_inputs() == [[3, 2, 2], None]
    data = np.arange(12, dtype=np.float32).reshape(3, 2, 2)
    np.testing.assert_array_equal(session.run([data, np.zeros(0, np.int64)])[0], data)


@pytest.mark.parametrize("off_by, code", [(1.0, 1), (0.0, 0)])   # before: 2 for both, "Port for tensor name axes"
def test_a_reproduction_on_openvino_does_not_feed_the_input_it_dropped(tmp_path, off_by, code):
    from harness.localize.repro import write_repro

    folder = tmp_path / "case.repro"
    data = np.arange(12, dtype=np.float32).reshape(3, 2, 2)
    write_repro(folder, _reduce_sum_empty_axes_model(tmp_path / "sub.onnx"),
                {"data": data, "axes": np.zeros(0, np.int64)}, {"reduced": data + off_by}, runtime="openvino",
                device="cpu", allowed=1e-4, versions={}, case_id="reduce_sum-onnx-openvino-cpu", min_snr_db=0.0,
                summary="ReduceSum leaves the reference.")
    done = subprocess.run([sys.executable, "-I", "repro.py"], cwd=folder, capture_output=True, text=True, timeout=120)
    assert done.returncode == code, done.stdout + done.stderr


@pytest.mark.parametrize("inputs", [["data", "axis"],    # a spec name the file lacks is not taken for a dropped one
                                    ["x", "axes"]])      # nor is one where a kept port's name does not match
def test_a_missing_input_the_file_does_not_declare_is_still_a_binding_error(tmp_path, inputs):
    session = ov_runtime.Session(_reduce_sum_empty_axes_model(tmp_path / "reduce_sum.onnx"), "cpu", None)
    with pytest.raises(CaseError, match=r"inputs \['data'\] do not match the spec's"):
        session.bind(inputs, ["float32", "int64"], ["reduced"])


@pytest.mark.parametrize("inputs, dtypes, outputs, words", [
    (["x", "mask"], ["float32", "float32"], ["logits"], "do not match"),      # one more than the model has
    (["x"], ["float32"], ["logits", "probs"], "do not match"),
    (["x"], ["int64"], ["logits"], "takes float32"),
])
def test_bind_refuses_what_does_not_fit(onnx_files, inputs, dtypes, outputs, words):
    session = ov_runtime.Session(onnx_files["mlp"], "cpu", None)
    with pytest.raises(CaseError, match=words):
        session.bind(inputs, dtypes, outputs)


@pytest.mark.parametrize("artifact", ["onnx", "openvino-ir"])
def test_declared_inputs_keep_dynamic_dims(onnx_files, ir_files, artifact):
    for model, expected in (("cnn", [[None, 3, None, None]]), ("mlp", [[None, 16]])):
        path = onnx_files[model] if artifact == "onnx" else ir_files[model][0]
        assert _open(path, model).declared_inputs() == expected


# --- availability -------------------------------------------------------------------------

def test_devices_and_precisions():
    assert ov_runtime.missing("cpu") is None
    assert "CUDA" in ov_runtime.missing("cuda")
    assert "Intel GPU" in ov_runtime.missing("gpu")
    assert ov_runtime.missing_precision("cpu", "fp32") is None
    assert "no precision" in ov_runtime.missing_precision("cpu", "int8")
    assert "CUDA" in ov_runtime.missing_precision("cuda", "bf16")
    assert ov_runtime.versions()["openvino"]
    assert (ov_runtime.FORMATS, ov_runtime.DEVICES, ov_runtime.PRECISIONS) == (
        ("onnx", "openvino-ir"), ("cpu",), ("fp32", "bf16", "fp16"))


def test_modules_import_without_openvino():
    code = ("import sys, harness.runtimes.openvino, harness.converters.onnx_openvino; "
            "assert 'openvino' not in sys.modules, 'openvino imported at module level'")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_the_declared_keras_gru_limitation_is_still_real(tmp_path):
    """A canary for the zoo's `keras->openvino` declaration on `gru`: the day
    OpenVINO converts the Loop tf2onnx writes for it, this fails and the
    declaration must go (its cases would then run instead of skipping)."""
    pytest.importorskip("tf2onnx")
    from harness.converters import tf_onnx
    from harness.inputs import example_recipe
    from harness.inputs import make_inputs
    from harness.registry import get_model
    from harness.sources import keras as keras_source

    spec = get_model("gru")
    assert "keras->openvino" in spec.unsupported
    model = keras_source.bind(keras_source.build(spec.builders["keras"]), spec)
    example = [make_inputs(spec, example_recipe(spec))[i.name] for i in spec.inputs]
    tf_onnx.convert(model, spec, example, tmp_path, layouts=spec.source_layouts("keras"))
    with pytest.raises(CaseError, match="Loop"):
        ov_runtime.Session(tmp_path / "model.onnx", "cpu", None)
