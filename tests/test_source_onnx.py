"""ONNX files as a source (harness/sources/onnx.py): the spec from the file, the
reference and its float64 twin, golden examples, and the files it refuses.
Every file is made in the test; the measurement over ONNX's own test data
reads the folders that ship inside the onnx package and the node cases it
ships as code (written out in ONNX's test-data layout here)."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import warnings
from collections import Counter, defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from harness import matrix
from harness.cache import ArtifactCache
from harness.compare import compare_outputs
from harness.errors import CaseError, OptionError
from harness.inputs import example_recipe
from harness.inputs import make_inputs
from harness.options import RunOptions, parse_input_spec
from harness.runner import run_case
from harness.runtimes import onnxruntime as ort_runtime
from harness.shape_check import input_findings
from harness.sources import onnx as onnx_source
from harness.specs import ModelSpec, SpecError
from harness.tolerances import default_tolerance

ONNX_TEST_DATA = Path(onnx.__file__).parent / "backend" / "test" / "data"
SHIPPED_KINDS = ("node", "simple", "pytorch-converted", "pytorch-operator")
ONNX_BACKEND_TOLERANCE = {"rtol": 1e-3, "atol": 1e-7}  # what onnx's own backend tests allow


# ---------------------------------------------------------------- small files made here

def _save(path: Path, nodes, inputs, outputs, initializers=(), opset: int = 18, domains=()) -> Path:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    opsets = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, 1) for d in domains]
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(helper.make_model(graph, opset_imports=opsets), str(path))
    return path


def _value(name: str, shape, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


def _relu(path: Path, shape=("batch", 3)) -> Path:
    return _save(path, [helper.make_node("Relu", ["x"], ["y"])], [_value("x", list(shape))], [_value("y", list(shape))])


def _spec(path: Path, *input_specs: str) -> ModelSpec:
    inputs, outputs = onnx_source.spec_from_file(path, [parse_input_spec(s) for s in input_specs])
    return ModelSpec(path.stem, inputs, outputs)


def _loaded(path: Path, *input_specs: str):
    spec = _spec(path, *input_specs)
    return spec, onnx_source.bind(onnx_source.load_file(path), spec)


def _golden_folder(folder: Path, model: Path, inputs: list[np.ndarray], outputs: list[np.ndarray]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.onnx").write_bytes(model.read_bytes())
    data = folder / "test_data_set_0"
    data.mkdir(exist_ok=True)
    for kind, arrays in (("input", inputs), ("output", outputs)):
        for index, array in enumerate(arrays):
            (data / f"{kind}_{index}.pb").write_bytes(numpy_helper.from_array(array).SerializeToString())
    return folder


def _golden_verdict(model, example) -> tuple[str, str]:
    """("match" | "mismatch", why) for one golden set, under the harness's
    default float32 tolerance on the CPU (exact for other dtypes)."""
    feed, expected, _ = example
    got = onnx_source.run(model, [feed[name] for name in model.feeds], "cpu")
    for name, want, have in zip(model.fetches, expected, got):
        want, have = np.asarray(want), np.asarray(have)
        if want.dtype.kind in "OUSb" or have.dtype.kind in "OUSb":
            if want.shape != have.shape or not np.array_equal(want, have):
                return "mismatch", "not equal (strings or bools)"
            continue
        comparison = compare_outputs(name, want, have, default_tolerance(str(want.dtype), "cpu"))
        if not comparison.passed:
            if want.shape != have.shape:
                return "mismatch", "shape"
            if want.dtype != have.dtype:
                return "mismatch", f"dtype (stored {want.dtype}, computed {have.dtype})"
            within_onnx = np.allclose(have.astype(np.float64) if have.dtype.kind == "f" else have,
                                      want.astype(np.float64) if want.dtype.kind == "f" else want,
                                      equal_nan=True, **ONNX_BACKEND_TOLERANCE)
            return "mismatch", ("values: within onnx's backend tolerance (rtol 1e-3), not the harness's float32 default"
                                if within_onnx else "values: beyond onnx's backend tolerance too")
    return "match", ""


# ---------------------------------------------------------------- a zoo model exported to ONNX

@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, Path]:
    from tests.planted import export_zoo

    root = tmp_path_factory.mktemp("onnx-source")
    return {name: export_zoo(name, root / name) for name in ("cnn",)}


CNN_SPEC = "image:float32[N=1..4,3,H=16..40,W=20..48]"


@pytest.mark.slow
def test_an_exported_zoo_model_is_a_source_held_to_onnxruntime_with_optimizations(exported):
    path = exported["cnn"]
    options = RunOptions(models=(str(path),), input_specs=(parse_input_spec(CNN_SPEC),))
    [(_, spec, error)] = matrix.resolve_models(options)
    assert error is None and set(spec.builders) == {"onnx"}
    assert [(i.name, i.shape, i.dims, i.dtype) for i in spec.inputs] == [
        ("image", ("N", 3, "H", "W"), {"N": (1, 4), "H": (16, 40), "W": (20, 48)}, "float32")]
    assert [o.name for o in spec.outputs] == ["features"]

    model = onnx_source.bind(onnx_source.build(spec.builders["onnx"]), spec)
    target = ort_runtime.Session(path, "cpu", RunOptions())
    target.bind([i.name for i in spec.inputs], [i.dtype for i in spec.inputs], [o.name for o in spec.outputs])
    twin = onnx_source.float64_copy(model)
    assert twin is not None and twin.runner == "onnx.reference"  # ORT has no float64 Conv
    assert "Conv" in onnx_source.float64_status(model)
    for seed in range(3):
        example = make_inputs(spec, replace(example_recipe(spec), seed=seed))
        inputs = [example[i.name] for i in spec.inputs]
        [reference] = onnx_source.run(model, inputs, "cpu")
        [converted] = target.run(inputs)
        assert compare_outputs("features", reference, converted, default_tolerance("float32", "cpu")).passed
        [exact] = onnx_source.run(twin, inputs, "cpu", float64=True)
        assert exact.dtype == np.float64
        noise = np.abs(reference.astype(np.float64) - exact).max() / np.abs(exact).max()
        assert 0 < noise < 1e-5


def test_the_float64_twin_runs_in_onnxruntime_where_every_op_has_a_float64_kernel(tmp_path):
    rng = np.random.default_rng(3)
    weight = numpy_helper.from_array(rng.standard_normal((16, 8)).astype(np.float32), "w")
    bias = numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "b")
    path = _save(tmp_path / "m.onnx", [helper.make_node("Gemm", ["x", "w", "b"], ["h"]),
                                       helper.make_node("Tanh", ["h"], ["t"]),
                                       helper.make_node("Softmax", ["t"], ["y"])],
                 [_value("x", ["N", 16])], [_value("y", ["N", 8])], initializers=[weight, bias])
    spec, model = _loaded(path, "x:float32[N=1..4,16]")
    twin = onnx_source.float64_copy(model)
    assert twin.runner == "onnxruntime"
    assert onnx_source.float64_status(model).startswith("float64 twin run in onnxruntime")
    x = rng.standard_normal((3, 16)).astype(np.float32)
    [ref32], [ref64] = onnx_source.run(model, [x], "cpu"), onnx_source.run(twin, [x], "cpu", float64=True)
    assert ref64.dtype == np.float64 and 0 < np.abs(ref32 - ref64).max() < 1e-5 * np.abs(ref64).max()


@pytest.mark.slow
def test_the_source_fingerprints_and_hands_on_the_file_itself(exported):
    path = exported["cnn"]
    model = onnx_source.load_file(path)
    import hashlib

    assert onnx_source.fingerprint(model) == hashlib.sha256(path.read_bytes()).hexdigest()
    assert os.fspath(model) == str(path)
    artifact, provenance = onnx_source.artifact(model)
    assert artifact == path and provenance["sha256"] == model.sha256 and provenance["opset"] == 18
    flags = onnx_source.configure_device("cuda", strict_cuda=False)
    assert flags["device"] == "cpu" and flags["graph_optimization_level"] == "disable" and "cuda" in flags["note"]


@pytest.mark.slow
def test_an_onnx_file_runs_end_to_end_on_the_empty_path(exported, tmp_path):
    """ONNX Runtime runs the file itself: no hop, no conversion."""
    from harness import engine
    from harness.cache import ArtifactCache

    options = RunOptions(models=(str(exported["cnn"]),), sources=("onnx",), targets=("onnxruntime",),
                         devices=("cpu",), input_specs=(parse_input_spec(CNN_SPEC),), use_cache=False)
    [case] = matrix.build_cases(options)
    assert (case.id, case.path, case.skip, case.error) == ("model-onnx-onnxruntime-cpu", (), None, None)
    prepared = engine.prepare_case(case, options, ArtifactCache(tmp_path / "cache"))
    assert prepared.provenance["converter"] == "none" and prepared.provenance["reference"]["device"] == "cpu"
    assert prepared.model64 is not None
    outcome = engine.run_example(prepared, make_inputs(case.spec, example_recipe(case.spec)))
    assert [c.passed for c in outcome.comparisons] == [True]


# ---------------------------------------------------------------- the spec from the file

def _default_bounds_warnings(inputs) -> list[str]:
    """What every case of these inputs warns of their default bounds (the engine's shape findings)."""
    return [f.message for f in input_findings(inputs, {}, {}, "the converted file") if f.kind == "default_bounds"]


def test_a_symbolic_dim_without_bounds_is_bounded_by_default_and_warned_of_with_the_option(tmp_path):
    """Once refused until --input-spec bounded it; now drawn within 1..4, each such dim named in a
    warning whose --input-spec, given back, bounds it as the user says."""
    path = _save(tmp_path / "m.onnx", [helper.make_node("Add", ["image", "bias"], ["y"])],
                 [_value("image", ["batch", 3, None]), _value("bias", [1, 3, 1])], [_value("y", ["batch", 3, None])])
    inputs, outputs = onnx_source.spec_from_file(path)
    assert [(i.shape, i.dims, i.default_dims) for i in inputs] == [
        (("batch", 3, "image_dim2"), {"batch": (1, 4), "image_dim2": (1, 4)}, ("batch", "image_dim2")),
        ((1, 3, 1), {}, ())]
    [message] = _default_bounds_warnings(inputs)   # fixed dims need nothing: no word of 'bias'
    assert message == ("input 'image': the file lets batch (axis 0), image_dim2 (axis 2) vary and no --input-spec "
                       "bounds them, so the harness drew them within 1..4, its default; to check other sizes, pass "
                       "--input-spec 'image:float32[batch=1..4,3,image_dim2=1..4]' with the bounds your model takes")
    option = re.search(r"--input-spec '([^']+)'", message)[1].replace("1..4,3", "2..6,3")
    inputs, outputs = onnx_source.spec_from_file(path, [parse_input_spec(option)])
    assert [(i.dims, i.default_dims) for i in inputs] == [({"batch": (2, 6), "image_dim2": (1, 4)}, ()), ({}, ())]
    assert _default_bounds_warnings(inputs) == [] and outputs == ("y",)


def test_a_case_with_default_bounds_passes_and_its_record_carries_the_warning(tmp_path):
    path = _relu(tmp_path / "m.onnx", shape=("batch", 3))
    options = RunOptions(models=(str(path),), targets=("onnxruntime",), devices=("cpu",), use_cache=False,
                         examples=5, reports_dir=tmp_path / "reports")
    [case] = matrix.build_cases(options)
    record = run_case(case, options, ArtifactCache(tmp_path / "cache")).to_json()
    assert record["status"] == "passed", record["message"]
    assert [(w["tensor"], w["kind"]) for w in record["warnings"]] == [("x", "default_bounds")]
    assert "--input-spec 'x:float32[batch=1..4,3]'" in record["warnings"][0]["message"]


def test_a_model_that_rejects_the_default_bounds_is_told_to_give_input_spec(tmp_path):
    """A graph that takes a batch of 2 only (a Reshape to a fixed shape): the check that runs the original
    on spec-built inputs says so, naming --input-spec, and the bounds it asks for, given, make it pass."""
    path = _save(tmp_path / "m.onnx", [helper.make_node("Reshape", ["x", "shape"], ["y"])],
                 [_value("x", ["batch", 3])], [_value("y", [6])],
                 [numpy_helper.from_array(np.array([6], np.int64), "shape")])
    options = RunOptions(models=(str(path),), targets=("onnxruntime",), devices=("cpu",), use_cache=False,
                         examples=5, reports_dir=tmp_path / "reports")
    [case] = matrix.build_cases(options)
    record = run_case(case, options, ArtifactCache(tmp_path / "cache")).to_json()
    assert record["status"] == "error" and "--input-spec" in record["message"], record["message"]
    options = replace(options, input_specs=(parse_input_spec("x:float32[batch=2..2,3]"),))
    [case] = matrix.build_cases(options)
    assert run_case(case, options, ArtifactCache(tmp_path / "cache")).status == "passed"


def test_bounds_for_a_dim_the_file_names_twice_are_given_once(tmp_path):
    path = _save(tmp_path / "m.onnx", [helper.make_node("Add", ["a", "b"], ["y"])],
                 [_value("a", ["n", 3]), _value("b", ["n", 3])], [_value("y", ["n", 3])])
    inputs, _ = onnx_source.spec_from_file(path, [parse_input_spec("a:float32[N=1..5,3]")])
    assert [(i.name, i.shape, i.dims) for i in inputs] == [("a", ("N", 3), {"N": (1, 5)}),
                                                           ("b", ("N", 3), {"N": (1, 5)})]


@pytest.mark.parametrize("options, complaint", [
    (["x:float32[N=1..4,4]"], "fixes it at 3"),
    (["x:int64[N=1..4,3]"], "declares float32"),
    (["x:float32[N=1..4]"], "declares 2"),
])
def test_an_input_spec_that_contradicts_the_file_is_refused(tmp_path, options, complaint):
    path = _relu(tmp_path / "m.onnx", shape=("batch", 3))
    with pytest.raises(SpecError, match=re.escape(complaint)):
        onnx_source.spec_from_file(path, [parse_input_spec(option) for option in options])


def test_an_input_spec_for_no_input_of_the_file_is_the_run_s_option_error(tmp_path):
    """Not the model's SpecError (one error case): the command line's, a usage error (tests/test_options.py)."""
    path = _relu(tmp_path / "m.onnx", shape=("batch", 3))
    with pytest.raises(OptionError, match=re.escape("--input-spec names ['z'], which ONNX file")):
        _spec(path, "x:float32[N=1..4,3]", "z:float32[N=1..4,3]")


def test_an_input_name_input_spec_cannot_write_is_given_by_position(tmp_path):
    path = _save(tmp_path / "m.onnx", [helper.make_node("Relu", ["x:0"], ["y:0"])],
                 [_value("x:0", ["N", 2])], [_value("y:0", ["N", 2])])
    [message] = _default_bounds_warnings(onnx_source.spec_from_file(path)[0])
    assert "--input-spec 'input0:float32[N=1..4,2]' with the bounds your model takes (its name cannot be written" \
        in message
    spec, model = _loaded(path, "input0:float32[N=1..4,2]")
    assert model.feeds == ("x:0",) and spec.inputs[0].name == "input0"
    [y] = onnx_source.run(model, [np.array([[-1, 2]], np.float32)], "cpu")
    assert y.tolist() == [[0, 2]]


def test_output_names_pick_among_the_files_outputs(tmp_path):
    path = _save(tmp_path / "m.onnx", [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Neg", ["x"], ["b"])],
                 [_value("x", [2])], [_value("a", [2]), _value("b", [2])])
    assert onnx_source.spec_from_file(path, (), ["b"])[1] == ("b",)
    with pytest.raises(SpecError, match=re.escape("its outputs are ['a', 'b']")):
        onnx_source.spec_from_file(path, (), ["c"])


def test_matrix_routes_onnx_files_and_test_data_folders_to_the_onnx_source(tmp_path):
    path = _relu(tmp_path / "m.onnx", shape=(2, 3))
    folder = _golden_folder(tmp_path / "case", path, [np.ones((2, 3), np.float32)], [np.ones((2, 3), np.float32)])
    assert matrix._file_source(path) == "onnx" and matrix._file_source(folder) == "onnx"
    assert onnx_source.sniff(folder) and not onnx_source.sniff(tmp_path / "case" / "test_data_set_0")
    [(_, spec, error)] = matrix.resolve_models(RunOptions(models=(str(folder),)))
    assert error is None and spec.inputs[0].shape == (2, 3)
    assert onnx_source.build(spec.builders["onnx"]).path == folder / "model.onnx"


# ---------------------------------------------------------------- golden examples

def test_golden_examples_match_and_a_stored_output_off_by_1e_3_does_not(tmp_path):
    path = _relu(tmp_path / "relu.onnx", shape=(4, 5))
    x = np.random.default_rng(1).standard_normal((4, 5)).astype(np.float32)
    y = np.maximum(x, 0)
    good = _golden_folder(tmp_path / "good", path, [x], [y])
    off = y.copy()
    index = np.unravel_index(np.argmax(np.abs(off)), off.shape)
    off[index] *= np.float32(1 + 1e-3)
    planted = _golden_folder(tmp_path / "planted", path, [x], [off])
    for folder, verdict in ((good, "match"), (planted, "mismatch")):
        model = onnx_source.load_file(folder)
        [example] = onnx_source.golden_examples(folder)
        assert example[2] == "test_data_set_0" and list(example[0]) == ["x"]
        assert _golden_verdict(model, example)[0] == verdict


def test_golden_tensors_that_keep_their_data_elsewhere_are_refused(tmp_path):
    folder = _golden_folder(tmp_path / "case", _relu(tmp_path / "relu.onnx", (2,)), [np.ones(2, np.float32)],
                            [np.ones(2, np.float32)])
    tensor = numpy_helper.from_array(np.ones(2, np.float32), "x")
    onnx.external_data_helper.set_external_data(tensor, "../../secret")
    tensor.ClearField("raw_data")
    (folder / "test_data_set_0" / "input_0.pb").write_bytes(tensor.SerializeToString())
    with pytest.raises(CaseError, match="golden tensors must hold their data themselves"):
        onnx_source.golden_examples(folder)


# ---------------------------------------------------------------- files of any name, folders, case ids

def _linear(path: Path) -> Path:
    """y = x @ w + b at a fixed x [2, 4]: runs with no --input-spec."""
    rng = np.random.default_rng(3)
    return _save(path, [helper.make_node("Gemm", ["x", "w", "b"], ["y"])], [_value("x", [2, 4])], [_value("y", [2, 3])],
                 [numpy_helper.from_array(rng.standard_normal((4, 3)).astype(np.float32), "w"),
                  numpy_helper.from_array(rng.standard_normal(3).astype(np.float32), "b")])


@pytest.mark.parametrize("name, case_id", [("linear.onnx", "linear-onnx-onnxruntime-cpu"),
                                           ("resnet-v2.1.onnx", "resnet_v2.1-onnx-onnxruntime-cpu"),
                                           ("model.onnx", "model-onnx-onnxruntime-cpu")])
def test_an_onnx_file_of_any_name_runs_end_to_end(run_parity, parity_dir, name, case_id):
    """Before, a file not named model.onnx failed every case: its folder was read as a test-data folder."""
    _linear(parity_dir / name)
    run = run_parity(f"--model={name}", "--source=onnx")
    assert run.cases[case_id]["status"] == "passed", run.output
    assert "golden" not in run.cases[case_id]


def test_stored_sets_belong_to_the_folders_model_onnx_not_to_a_file_of_another_name(tmp_path):
    """The choice the README states: test_data_set_N/ beside model.onnx are its golden examples, also when
    model.onnx is given by name; a file of another name beside them (a model_fp16.onnx) has none."""
    model = _linear(tmp_path / "linear.onnx")
    x = np.ones((2, 4), np.float32)
    folder = _golden_folder(tmp_path / "case", model, [x], [onnx_source.load_file(model).session.run(None, {"x": x})[0]])
    shutil.copy(model, folder / "linear.onnx")
    assert onnx_source.golden_examples(folder / "linear.onnx") == []
    assert [s[2] for s in onnx_source.golden_examples(folder / "model.onnx")] == ["test_data_set_0"]
    assert [s[2] for s in onnx_source.golden_examples(folder)] == ["test_data_set_0"]
    assert onnx_source.model_file(folder) == folder / "model.onnx"  # the other file beside it changes nothing


def test_a_folder_of_onnx_files_without_model_onnx_is_refused_naming_them(run_parity, parity_dir):
    for name in ("resnet-v2.1.onnx", "linear.onnx"):
        _linear(parity_dir / "exports" / name)
    run = run_parity("--model=exports", "--source=onnx")
    message = run.cases["exports"]["message"]
    assert message == ("folder exports holds linear.onnx, resnet-v2.1.onnx but no model.onnx: a folder is read as "
                       "ONNX's test-data layout (model.onnx beside test_data_set_N/); name one of them, e.g. "
                       "--model=exports/linear.onnx"), run.output
    followed = run_parity(re.search(r"--model=\S+$", message)[0], "--source=onnx")
    assert followed.cases["linear-onnx-onnxruntime-cpu"]["status"] == "passed", followed.output


def _case_models(*refs: str, sources=("onnx",)) -> list[str]:
    options = RunOptions(models=refs, sources=sources, targets=("onnxruntime",), devices=("cpu",))
    return [case.model for case in matrix.build_cases(options)]


def test_a_case_id_names_the_file_or_folder_never_the_path_to_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shipped = ONNX_TEST_DATA / "pytorch-converted" / "test_Conv2d"
    made = _golden_folder(tmp_path / "home" / "me" / "models" / "conv.v2", _relu(tmp_path / "relu.onnx", (2, 3)),
                          [np.ones((2, 3), np.float32)], [np.ones((2, 3), np.float32)])
    _linear(tmp_path / "linear.onnx")
    assert _case_models(str(shipped), str(made), "linear.onnx", "./relu.onnx") == [
        "test_Conv2d", "conv.v2", "linear", "relu"]
    assert matrix.model_name(".") == tmp_path.name


def test_models_of_one_name_are_told_apart_by_their_folders_and_zoo_names_stay(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for folder in ("a", "b", "x/c", "y/c", "nets"):
        _linear(tmp_path / folder / ("mlp.onnx" if folder == "nets" else "model.onnx"))
    _linear(tmp_path / "model.onnx")
    assert _case_models("a/model.onnx", str(tmp_path / "b" / "model.onnx"), "x/c/model.onnx", "y/c/model.onnx",
                        "model.onnx") == ["a.model", "b.model", "x.c.model", "y.c.model", f"{tmp_path.name}.model"]
    # a zoo model keeps its name; the file beside it takes its folder's
    assert set(_case_models("mlp", "nets/mlp.onnx", sources=("onnx", "torch"))) == {"mlp", "nets.mlp"}
    # one file by two paths cannot be told apart by folders
    assert _case_models("a/model.onnx", "./a/model.onnx") == ["model", "model_2"]
    assert _case_models("a/model.onnx") == ["model"]  # alone, a name needs nothing added


def test_replay_finds_a_case_whose_name_its_run_took_from_the_folder(tmp_path, monkeypatch, capsys):
    """A failure saved as a.model-... (told apart from b/model.onnx) replays with --model a/model.onnx alone."""
    from harness.__main__ import main
    from harness.results import save_failure

    monkeypatch.chdir(tmp_path)
    for folder in ("a", "b"):
        _linear(tmp_path / folder / "model.onnx")
    options = RunOptions(models=("a/model.onnx", "b/model.onnx"), sources=("onnx",), targets=("onnxruntime",),
                         devices=("cpu",))
    [case, _] = matrix.build_cases(options)
    assert case.id == "a.model-onnx-onnxruntime-cpu"
    replay = {"case_id": case.id, "model_ref": case.model_ref, "source": case.source, "target": case.target,
              "device": case.device, "options": options.to_json()}
    npz, _ = save_failure(tmp_path / "reports", case.id, {"x": np.ones((2, 4), np.float32)}, replay)
    cache = ["--cache-dir", str(tmp_path / "cache")]
    assert main(["replay", str(npz), "--model", "a/model.onnx", *cache]) == 0, capsys.readouterr().err
    assert "model-onnx-onnxruntime-cpu on x[2, 4]: PASSED" in capsys.readouterr().out
    # a name the run did not change is found as it is
    alone = dict(replay, case_id="model-onnx-onnxruntime-cpu")
    npz, _ = save_failure(tmp_path / "reports", alone["case_id"], {"x": np.ones((2, 4), np.float32)}, alone)
    assert main(["replay", str(npz), "--model", "a/model.onnx", *cache]) == 0, capsys.readouterr().err


# ---------------------------------------------------------------- bad input

def test_bytes_that_are_no_onnx_model_are_refused(tmp_path):
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not an onnx model \xff\xfe" * 8)
    with pytest.raises(CaseError, match=r"garbage.onnx does not parse as an ONNX model: it is truncated or corrupt"):
        onnx_source.load_file(garbage)
    no_graph = tmp_path / "no_graph.onnx"
    no_graph.write_bytes(b"\x08\x07")  # ir_version 7, nothing else: valid protobuf, no model
    with pytest.raises(CaseError, match="parses but has no graph"):
        onnx_source.load_file(no_graph)
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(CaseError, match=r"empty \(0 bytes\)"):
        onnx_source.load_file(empty)
    with pytest.raises(CaseError, match="holds empty.onnx, garbage.onnx, no_graph.onnx but no model.onnx"):
        onnx_source.load_file(tmp_path)
    (tmp_path / "empty-folder").mkdir()
    with pytest.raises(CaseError, match="holds no model.onnx"):
        onnx_source.load_file(tmp_path / "empty-folder")


def test_a_truncated_file_is_refused(tmp_path):
    whole = _relu(tmp_path / "whole.onnx")
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(CaseError, match="truncated"):
        onnx_source.load_file(truncated)
    with pytest.raises(SpecError, match="truncated"):
        onnx_source.spec_from_file(truncated)


def test_a_file_that_fails_the_checker_says_which_check(tmp_path):
    path = _save(tmp_path / "m.onnx", [helper.make_node("NoSuchOp", ["x"], ["y"])],
                 [_value("x", [2])], [_value("y", [2])])
    with pytest.raises(CaseError) as caught:
        onnx_source.load_file(path)
    message = str(caught.value)
    assert "fails onnx.checker" in message and "No Op registered for NoSuchOp" in message and str(path) in message


_OPENED: list[str] | None = None


def _record_opens(event: str, args) -> None:
    if event == "open" and _OPENED is not None:
        _OPENED.append(os.fspath(args[0]) if isinstance(args[0], (str, bytes, os.PathLike)) else str(args[0]))


@pytest.fixture
def opened_files():
    """The files Python opens during the test (audit hook "open"; the hook,
    once added, stays for the process and records only within this fixture)."""
    global _OPENED
    if not getattr(sys, "_onnx_source_test_hook", False):
        sys.addaudithook(_record_opens)
        sys._onnx_source_test_hook = True
    _OPENED = []
    yield _OPENED
    _OPENED = None


def _with_external_weight(folder: Path, location: str) -> Path:
    """y = x + w, with w (4 floats) kept in external data at `location`."""
    weight = numpy_helper.from_array(np.arange(4, dtype=np.float32), "w")
    onnx.external_data_helper.set_external_data(weight, location)
    weight.ClearField("raw_data")
    return _save(folder / "model.onnx", [helper.make_node("Add", ["x", "w"], ["y"])],
                 [_value("x", [4])], [_value("y", [4])], initializers=[weight])


@pytest.mark.parametrize("where", ["parent", "absolute", "symlink"])
def test_external_data_outside_the_models_folder_is_refused_unread(tmp_path, opened_files, where):
    secret = tmp_path / "secret"
    secret.write_bytes(np.arange(4, dtype=np.float32).tobytes())  # would load as w, were it read
    folder = tmp_path / "model"
    folder.mkdir()
    location = {"parent": "../secret", "absolute": str(secret), "symlink": "weights.bin"}[where]
    if where == "symlink":
        (folder / "weights.bin").symlink_to(secret)
    path = _with_external_weight(folder, location)
    opened_files.clear()
    with pytest.raises(CaseError) as caught:
        onnx_source.load_file(path)
    message = str(caught.value)
    assert str(path) in message and "'w'" in message and "refused" in message
    with pytest.raises(SpecError, match="refused"):
        onnx_source.spec_from_file(path)
    opened = {os.path.realpath(p) for p in opened_files}
    assert str(path.resolve()) in opened  # the hook sees the harness's reads
    assert str(secret.resolve()) not in opened


def test_external_data_inside_the_folder_loads_and_enters_the_fingerprint(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    data = folder / "weights.bin"
    data.write_bytes(np.arange(4, dtype=np.float32).tobytes())
    path = _with_external_weight(folder, "weights.bin")
    spec, model = _loaded(path)
    assert onnx_source.run(model, [np.ones(4, np.float32)], "cpu")[0].tolist() == [1, 2, 3, 4]
    before = onnx_source.fingerprint(model)
    data.write_bytes(np.arange(1, 5, dtype=np.float32).tobytes())
    assert onnx_source.fingerprint(onnx_source.load_file(path)) != before
    data.write_bytes(data.read_bytes()[:8])
    with pytest.raises(CaseError, match="truncated"):
        onnx_source.load_file(path)
    data.unlink()
    with pytest.raises(CaseError, match="does not exist"):
        onnx_source.load_file(path)


def test_files_load_without_trust_model_code_and_bind_checks_the_dtype(tmp_path):
    path = _relu(tmp_path / "m.onnx", shape=(2,))
    model = onnx_source.load_file(path, None, trust_model_code=False)
    spec = ModelSpec("m", (parse_input_spec("x:int64[2]"),), ("y",))
    with pytest.raises(CaseError, match="takes input 'x' as float32 but the spec says int64"):
        onnx_source.bind(model, spec)
    with pytest.raises(CaseError, match=r"has outputs \['y'\]"):
        onnx_source.bind(model, ModelSpec("m", (parse_input_spec("x:float32[2]"),), ("a", "b")))


# ---------------------------------------------------------------- the float64 twin where it cannot be made

def test_no_float64_twin_where_neither_onnxruntime_nor_onnx_reference_runs_it(tmp_path):
    # com.microsoft's Gelu: ORT expands it into Erf, which has no float64 kernel;
    # onnx.reference knows no com.microsoft op
    path = _save(tmp_path / "m.onnx", [helper.make_node("Gelu", ["x"], ["y"], domain="com.microsoft")],
                 [_value("x", [2, 3])], [_value("y", [2, 3])], domains=["com.microsoft"])
    spec, model = _loaded(path)
    assert onnx_source.float64_copy(model) is None
    status = onnx_source.float64_status(model)
    assert status.startswith("no noise floor: onnxruntime cannot run the float64 twin")
    assert "Erf" in status and "onnx.reference cannot either" in status and "com.microsoft" in status
    assert onnx_source.run(model, [np.ones((2, 3), np.float32)], "cpu")[0].shape == (2, 3)  # the reference still runs


def test_a_model_without_float32_has_no_twin_and_says_why(tmp_path):
    path = _relu(tmp_path / "m.onnx", shape=(2,))
    model = onnx.load(str(path))
    for value in list(model.graph.input) + list(model.graph.output):
        value.type.tensor_type.elem_type = TensorProto.INT32
    onnx.save(model, str(path))
    spec, loaded = _loaded(path)
    assert onnx_source.float64_copy(loaded) is None
    assert onnx_source.float64_status(loaded) == "no noise floor: the model holds no float32 tensor to widen to float64"


def test_an_input_the_ops_schema_keeps_in_float32_stays_float32_in_the_twin(tmp_path):
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    path = _save(tmp_path / "m.onnx", [helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="linear")],
                 [_value("x", [1, 2, 4, 4])], [_value("y", [1, 2, 8, 8])], initializers=[scales])
    spec, model = _loaded(path)
    twin = onnx_source.float64_copy(model)
    assert "Resize input 'scales'" in onnx_source.float64_status(model)
    x = np.random.default_rng(2).standard_normal((1, 2, 4, 4)).astype(np.float32)
    [y32], [y64] = onnx_source.run(model, [x], "cpu"), onnx_source.run(twin, [x], "cpu", float64=True)
    assert y64.dtype == np.float64 and np.abs(y32 - y64).max() < 1e-5


# ---------------------------------------------------------------- ONNX's own test data: a measurement

def _write_node_cases(root: Path) -> int:
    """ONNX's node test cases (shipped as code in onnx.backend.test.case.node)
    written out in the test-data layout, as onnx's cmd_tools does; the count
    of cases that could not be written."""
    from onnx.backend.test.case import node

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = node.collect_testcases()
    unwritable = 0
    for case in cases:
        folder = root / case.name
        try:
            blobs = {"model.onnx": case.model.SerializeToString()}
            for index, (inputs, outputs) in enumerate(case.data_sets):
                for kind, values, declared in (("input", inputs, case.model.graph.input),
                                               ("output", outputs, case.model.graph.output)):
                    for position, value in enumerate(values):
                        tensor = _serialized(value, declared[position])
                        blobs[f"test_data_set_{index}/{kind}_{position}.pb"] = tensor.SerializeToString()
        except Exception:
            unwritable += 1
            continue
        for name, blob in blobs.items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(blob)
    return unwritable


def _serialized(value, declared):
    kind = declared.type.WhichOneof("value")
    if kind == "map_type":
        return numpy_helper.from_dict(value, declared.name)
    if kind == "sequence_type":
        return numpy_helper.from_list(value, declared.name)
    if kind == "optional_type":
        return numpy_helper.from_optional(value, declared.name)
    return value if isinstance(value, TensorProto) else numpy_helper.from_array(value, declared.name)


def _reason(text: str) -> str:
    """A failure's message with its names and numbers taken out, to group alike ones."""
    text = str(text).splitlines()[0]
    text = re.sub(r"/\S+", "PATH", text)
    text = re.sub(r"(?<!\w)'[^']*'|\"[^\"]*\"", "'…'", text)
    text = re.sub(r"\(\d+\)|(?<!\w)\d+", "N", text)
    return text[:200]


def measure(folders: list[Path]) -> dict:
    """Each folder's model through the source and its golden sets against
    the reference: counts and grouped reasons."""
    counts: Counter = Counter()
    reasons: dict[str, Counter] = defaultdict(Counter)
    verdicts: dict[str, str] = {}
    for folder in folders:
        counts["models"] += 1
        try:
            model = onnx_source.load_file(folder)
            examples = onnx_source.golden_examples(folder)
        except (CaseError, SpecError) as error:
            counts["failed_to_load"] += 1
            reasons["failed_to_load"][_reason(getattr(error, "message", error))] += 1
            verdicts[folder.name] = "failed_to_load"
            continue
        counts["loaded"] += 1
        try:
            onnx_source.spec_from_file(folder)
        except SpecError as error:
            counts["no_spec_without_input_spec"] += 1
            reasons["no_spec_without_input_spec"][_reason(error)] += 1
        outcome = "match"
        for example in examples:
            counts["golden_sets"] += 1
            try:
                verdict, why = _golden_verdict(model, example)
            except Exception as error:
                verdict, why = "failed_to_run", _reason(f"{type(error).__name__}: {error}")
            counts[f"sets_{verdict}"] += 1
            if why:
                reasons[f"sets_{verdict}"][why] += 1
            if verdict != "match":
                outcome = verdict
        counts[f"models_{outcome}"] += 1
        verdicts[folder.name] = outcome
    return {"counts": dict(counts), "reasons": {k: dict(v.most_common()) for k, v in reasons.items()},
            "verdicts": verdicts}


@pytest.mark.slow
def test_onnx_test_data_through_the_source(tmp_path, capsys):
    node_root = tmp_path / "node"
    unwritable = _write_node_cases(node_root)
    folders = {"node": sorted(p for p in node_root.iterdir() if p.is_dir())}
    for kind in SHIPPED_KINDS[1:]:
        folders[kind] = sorted(p for p in (ONNX_TEST_DATA / kind).iterdir() if p.is_dir()) \
            if (ONNX_TEST_DATA / kind).is_dir() else []
    report = {kind: measure(found) for kind, found in folders.items()}
    report["node"]["counts"]["unwritable_cases"] = unwritable
    (tmp_path / "onnx_test_data.json").write_text(json.dumps(report, indent=1))
    with capsys.disabled():
        print(f"\nONNX test data through the onnx source (onnx {onnx.__version__}); full report: "
              f"{tmp_path / 'onnx_test_data.json'}")
        for kind, found in report.items():
            print(f"  {kind}: {json.dumps(found['counts'])}")
            for group, grouped in found["reasons"].items():
                for why, count in list(grouped.items())[:8]:
                    print(f"    {group}: {count} x {why}")
    node_verdicts = report["node"]["verdicts"]
    for known_good in ("test_abs", "test_add", "test_relu"):
        assert node_verdicts[known_good] == "match", known_good
    # the planted twin: test_abs with its largest stored output element off by 1e-3 relative
    planted = tmp_path / "planted" / "test_abs"
    shutil.copytree(node_root / "test_abs", planted)
    stored = planted / "test_data_set_0" / "output_0.pb"
    output = numpy_helper.to_array(TensorProto.FromString(stored.read_bytes())).copy()
    output.flat[np.argmax(np.abs(output))] *= np.float32(1 + 1e-3)
    stored.write_bytes(numpy_helper.from_array(output, "y").SerializeToString())
    assert measure([planted])["verdicts"] == {"test_abs": "mismatch"}
    for found in report.values():
        counts = found["counts"]
        assert counts.get("loaded", 0) + counts.get("failed_to_load", 0) == counts.get("models", 0)
