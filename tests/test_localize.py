"""Localization of a failed case (harness/localize): the walk's pieces on small
graphs, then planted bugs end to end, each checked for the node it names (not
only that it ran), beside correct twins that name nothing."""

from __future__ import annotations

import importlib.util
import math
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from harness.localize.graph import load_graph, write_marked
from harness.localize.walk import DEFAULT_BOUND, FLOOR, Bound, first_divergence, tensor_error
from harness.registry import get_model
from tests import planted


def _chain_model(path, scale_middle: float = 1.0):
    """x -> Relu -> Mul(c1) -> Tanh -> y, with c1 = 2 * scale_middle."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])
    c1 = numpy_helper.from_array(np.full((8,), 2.0 * scale_middle, np.float32), "c1")
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"), helper.make_node("Mul", ["r", "c1"], ["m"], name="mul"),
             helper.make_node("Tanh", ["m"], ["y"], name="tanh")]
    graph = helper.make_graph(nodes, "chain", [x], [y], initializer=[c1])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


# --------------------------------------------------------------------------- the pieces

def test_a_graph_whose_shape_inference_stops_is_warned_of_not_passed_over(tmp_path):
    """Once silent: the walk then leaves out every tensor whose type the file does not declare."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        graph = load_graph(_chain_model(tmp_path / "chain.onnx"))
    assert graph.types["m"] == TensorProto.FLOAT   # inferred: the file declares only x and y
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Reshape", ["r"], ["y"])]   # its shape left out
    path = tmp_path / "reshape.onnx"
    onnx.save(helper.make_model(helper.make_graph(nodes, "g", [x], [y]), opset_imports=[helper.make_opsetid("", 17)]),
              str(path))
    with pytest.warns(UserWarning, match=r"reshape\.onnx: ONNX shape inference stopped \(InferenceError: "
                                         r"\[ShapeInferenceError\] \(op_type:Reshape\): Input 1 is out of bounds"):
        graph = load_graph(path)
    assert "r" not in graph.types

def test_the_bound_is_the_output_tolerance_over_its_magnitude():
    comparison = {"ref_dtype": "float32", "max_ref": 10.0, "output_range": None,
                  "tolerance": {"atol": 1e-3, "rtol": 1e-4, "atol_by_max": 0.0, "min_snr_db": 12.0}}
    bound = Bound.from_comparison(comparison)
    assert bound.allowed == pytest.approx(1e-4 + 1e-4) and bound.min_snr_db == 12.0
    # every element NaN/Inf on the reference: its relative parts still hold
    assert Bound.from_comparison({**comparison, "max_ref": 0.0}).allowed == pytest.approx(1e-4)
    # an integer output (an argmax) gives no share of a magnitude
    assert Bound.from_comparison({**comparison, "ref_dtype": "int64"}).allowed == DEFAULT_BOUND
    # never tighter than float32 rounding
    exact = {"ref_dtype": "float32", "max_ref": 1.0, "tolerance": {"atol": 1e-12}}
    assert Bound.from_comparison(exact).allowed == FLOOR


def test_a_tensor_error_is_over_its_own_magnitude_and_counts_nonfinite_values_apart():
    ref = np.array([1.0, -4.0, 2.0], np.float32)
    error = tensor_error(ref, ref + np.float32(0.4))
    assert error.normalized_error == pytest.approx(0.1) and error.nonfinite == 0
    assert not error.diverges(Bound(0.2)) and error.diverges(Bound(0.05))
    nan = tensor_error(np.array([1.0, np.nan]), np.array([1.0, np.nan]))
    assert nan.normalized_error == 0.0     # NaN where the reference has NaN is no error
    apart = tensor_error(np.array([1.0, 2.0]), np.array([1.0, np.inf]))
    assert apart.nonfinite == 1 and math.isinf(apart.normalized_error)
    assert math.isinf(tensor_error(np.zeros((2, 2)), np.zeros(4)).normalized_error)   # shapes apart


def test_the_first_divergence_is_the_first_in_topological_order_upstream_of_the_output(tmp_path):
    import onnxruntime as ort

    graph = load_graph(_chain_model(tmp_path / "good.onnx"))
    bad = load_graph(_chain_model(tmp_path / "bad.onnx", scale_middle=1.5))
    x = np.random.default_rng(0).normal(size=(2, 8)).astype(np.float32) * 0.3
    values = []
    for g, name in ((graph, "good"), (bad, "bad")):
        outputs = write_marked(g, g.order, tmp_path / f"{name}-marked.onnx")
        session = ort.InferenceSession(str(tmp_path / f"{name}-marked.onnx"), providers=["CPUExecutionProvider"])
        values.append(dict(zip(outputs, session.run(outputs, {"x": x}))))
    errors = {t: tensor_error(values[0][t], values[1][t]) for t in graph.order}
    assert first_divergence(graph, errors, "y", Bound(1e-4)) == ["m", "y"]
    assert graph.chain_from_inputs("m") == ["x", "r", "m"] and graph.chain("m", "y") == ["m", "y"]
    assert first_divergence(graph, errors, "r", Bound(1e-4)) == []   # nothing upstream of r diverges


# --------------------------------------------------------------------------- end to end

def _localization(run, case_id=None) -> dict:
    record = run.cases[case_id] if case_id else run.single
    return record.get("localization")


def test_runtime_mode_names_the_batchnorm_the_reference_evaluator_computes_in_float16(run_parity):
    """A finding of the precision matrix, placed: MXNet's CNN lowered to fp16
    is 0.1 of max|ref| off in the reference evaluator (true float16
    arithmetic), 2e-3 on ONNX Runtime (float32 inside). On the same file the
    evaluator first leaves ONNX Runtime at the BatchNormalization, whose inputs
    agree: confirmed on the subgraph cut out up to it, and the one node
    reproduces on its own."""
    if importlib.util.find_spec("mxnet") is None:   # not importorskip: mxnet loads through the harness's shims
        pytest.skip("mxnet is not installed")
    run = run_parity("--model=cnn", "--source=mxnet", "--precision=fp16", "--target=onnx-reference")
    run.result.assert_outcomes(failed=1)
    localization = _localization(run)
    assert localization["status"] == "found" and localization["mode"] == "runtime", localization["message"]
    assert localization["first"]["op_type"] == "BatchNormalization"
    assert "BatchNorm" in localization["first"]["layer"]   # the source's name labels the runtime's walk too
    assert all(i["normalized_error"] is None or float(i["normalized_error"]) <= localization["allowed"]
               for i in localization["first"]["inputs"])
    assert localization["confirmed"] == {**localization["confirmed"], "how": "subgraph up to it, unmarked",
                                         "reproduced": True}
    assert "fusing" in localization["fusion_note"] and localization["repro"]["subgraph"] == "the one node"
    alone = subprocess.run([sys.executable, "-I", "repro.py"], cwd=run.path / localization["repro"]["folder"],
                           capture_output=True, text=True, timeout=120)
    assert alone.returncode == 1 and "onnx-reference" in alone.stdout


def test_converter_mode_names_the_conv_whose_weight_changed_and_its_torch_module(run_parity, tmp_path):
    """The zoo CNN exported, then its second Conv's weight (torch module
    features.4) scaled by 1.5 in the file: the first diverging tensor is that
    Conv's output, named with that module, and everything before it agrees."""
    path = planted.export_zoo("cnn", tmp_path / "export")
    model = onnx.load(str(path))
    conv = [n for n in model.graph.node if n.op_type == "Conv"][1]
    weight = next(t for t in model.graph.initializer if t.name == conv.input[1])
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * np.float32(1.5), weight.name))
    bad = tmp_path / "conv_weight.onnx"
    onnx.save(model, str(bad))
    run = run_parity("--model=cnn", f"--converted={bad}")
    run.result.assert_outcomes(failed=1)
    localization = _localization(run)
    assert localization["status"] == "found" and localization["mode"] == "converter"
    first = localization["first"]
    assert first["tensor"] == conv.output[0] and first["node"] == conv.name and first["op_type"] == "Conv"
    assert first["layer"].startswith("features.4 (Conv2d)"), first["layer"]
    before = [r for r in localization["path"][:-1] if r["tensor"] != first["tensor"]]
    upstream = before[:[r["tensor"] for r in localization["path"]].index(first["tensor"])]
    assert upstream and not any(r["diverged"] for r in upstream)
    assert localization["repro"]["subgraph"] == "the one node"


@pytest.fixture(scope="module")
def transformer_pair(tmp_path_factory):
    """The zoo transformer's correct export, and a copy whose attention Softmax
    takes another axis."""
    folder = tmp_path_factory.mktemp("transformer")
    good = planted.export_zoo("transformer", folder / "good")
    model = onnx.load(str(good))
    softmax = [n for n in model.graph.node if n.op_type == "Softmax"]
    node = softmax[len(softmax) // 2]
    for attribute in node.attribute:
        if attribute.name == "axis":
            attribute.i = 1 if attribute.i in (-1, 2) else -1
    bad = folder / "softmax_axis.onnx"
    onnx.save(model, str(bad))
    return good, bad, node.name


def _input_spec(name: str) -> str:
    (tokens,) = get_model(name).inputs
    dims = ",".join(f"{d}={tokens.dims[d][0]}..{tokens.dims[d][1]}" if isinstance(d, str) else str(d)
                    for d in tokens.shape)
    return f"--input-spec={tokens.name}:{tokens.dtype}[{dims}]"


@pytest.mark.slow  # a transformer pair walked node by node; the conv test localizes in make test
def test_converter_mode_names_the_softmax_whose_axis_changed_in_an_onnx_pair(run_parity, transformer_pair):
    good, bad, changed = transformer_pair
    common = ("--source=onnx", f"--model={good}", _input_spec("transformer"))
    run_parity(*common, f"--converted={good}").result.assert_outcomes(passed=1)
    run = run_parity(*common, f"--converted={bad}")
    run.result.assert_outcomes(failed=1)
    localization = _localization(run)
    assert localization["status"] == "found" and localization["mode"] == "converter"
    assert localization["first"]["node"] == changed and localization["first"]["op_type"] == "Softmax"
    # its input agrees: the Softmax itself is wrong, not what it reads
    assert all(i["normalized_error"] is None or i["normalized_error"] <= localization["allowed"]
               for i in localization["first"]["inputs"])
    assert localization["compared"] > 10 and localization["seconds"] < localization["case_seconds"]
    assert f"localized: the first diverging tensor is {localization['first']['tensor']!r}" in run.output
    # the same file against the torch model it was exported from: the torch side maps the attention's softmax
    torch_run = run_parity("--model=transformer", f"--converted={bad}")
    torch_run.result.assert_outcomes(failed=1)
    against_torch = _localization(torch_run)
    assert against_torch["first"]["node"] == changed and "softmax" in against_torch["first"]["layer"]
    off = run_parity(*common, f"--converted={bad}", "--parity-localize=off")
    off.result.assert_outcomes(failed=1)
    assert "localization" not in off.single and "localized:" not in off.output


def _noisy_copy(good, out, relative: float, seed: int = 0):
    """Every float weight of `good` times (1 + relative * N(0, 1)): a
    correct conversion whose arithmetic differs everywhere, by a little."""
    model = onnx.load(str(good))
    rng = np.random.default_rng(seed)
    for tensor in model.graph.initializer:
        if tensor.data_type == TensorProto.FLOAT and len(tensor.dims) >= 1:
            array = numpy_helper.to_array(tensor)
            noisy = array * (1 + relative * rng.standard_normal(array.shape)).astype(np.float32)
            tensor.CopyFrom(numpy_helper.from_array(noisy.astype(np.float32), tensor.name))
    onnx.save(model, str(out))
    return out


def test_the_localize_command_names_the_softmax_and_writes_its_record_and_reproduction(transformer_pair, tmp_path,
                                                                                        capsys):
    from harness.__main__ import main

    good, bad, changed = transformer_pair
    args = ["localize", "--model", str(good), "--converted", str(bad), _input_spec("transformer"),
            "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache")]
    assert main(args) == 1
    printed = capsys.readouterr().out
    assert f"(Softmax node '{changed}'" in printed and "localized: the first diverging tensor" in printed
    assert "reproduction: " in printed
    (record,) = (tmp_path / "out" / "localize").glob("*.json")
    import json

    localization = json.loads(record.read_text())["localization"]
    assert localization["first"]["node"] == changed
    folder = tmp_path / "out" / "localize" / record.name.replace(".json", ".repro")
    assert (folder / "repro.py").is_file() and main(["replay", str(folder)]) == 1
    # the failure's own input, saved by a run, or arrays by input name
    tokens = np.random.default_rng(1).normal(size=(2, 3, 32)).astype(np.float32)
    np.savez(tmp_path / "input.npz", tokens=tokens)
    assert main([*args, "--input", str(tmp_path / "input.npz")]) == 1
    from harness.results import save_failure

    replay = {"case_id": "some-case", "model_ref": "m", "source": "onnx", "target": "onnxruntime", "device": "cpu",
              "options": {}}
    saved, _ = save_failure(tmp_path / "reports", "some-case", {"tokens": tokens}, replay)
    assert main([*args, "--input", str(saved)]) == 1
    np.savez(tmp_path / "misnamed.npz", x=tokens)
    assert main([*args, "--input", str(tmp_path / "misnamed.npz")]) == 2
    assert "not the model's inputs ['tokens']" in capsys.readouterr().err
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    assert main([*args, "--input", str(tmp_path / "junk.npz")]) == 2
    assert "is not an .npz (zip) archive" in capsys.readouterr().err


def test_large_but_in_tolerance_noise_names_no_node_and_says_the_outputs_agree(transformer_pair, tmp_path, capsys):
    """Every weight off by ~1e-5 of itself (3e-5 fails the case): the
    intermediate tensors differ from the original's, by far more than float32
    rounding, but the outputs stay within their tolerance. The localizer must
    not name a node."""
    import onnxruntime as ort

    from harness.__main__ import main

    good, _, _ = transformer_pair
    noisy = _noisy_copy(good, tmp_path / "noisy.onnx", relative=1e-5)
    tokens = np.random.default_rng(2).normal(size=(2, 4, 32)).astype(np.float32)
    values = []
    for path in (good, noisy):
        graph = load_graph(path)
        outputs = write_marked(graph, graph.float_tensors(), tmp_path / f"{path.stem}-marked.onnx")
        session = ort.InferenceSession(str(tmp_path / f"{path.stem}-marked.onnx"), providers=["CPUExecutionProvider"])
        values.append(dict(zip(outputs, session.run(outputs, {"tokens": tokens}))))
    worst = max(tensor_error(values[0][t], values[1][t]).normalized_error for t in values[0])
    assert worst > 1e-5   # the noise shows inside the graph, far above float32's rounding
    np.savez(tmp_path / "input.npz", tokens=tokens)
    code = main(["localize", "--model", str(good), "--converted", str(noisy), _input_spec("transformer"),
                 "--input", str(tmp_path / "input.npz"), "--out", str(tmp_path / "out"),
                 "--cache-dir", str(tmp_path / "cache")])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "PASSED" in printed and "the outputs agree within their tolerances on this input: no node is named" in printed
    assert "first diverging" not in printed and not list((tmp_path / "out" / "localize").glob("*.repro"))


def test_converter_mode_names_the_keras_batchnorm_whose_epsilon_changed(run_parity, tmp_path):
    """tf2onnx folds a Keras BatchNormalization into a Mul and an Add: with the
    epsilon planted in their constants, the walk names the layer's output, with
    the layer, and lists the Mul whose constant changed among the nodes it
    starts in; the Conv before it agrees."""
    pytest.importorskip("tensorflow")
    from harness.converters import tf_onnx
    from harness.inputs import example_recipe, make_inputs
    from harness.layouts import relaid

    spec = get_model("cnn")
    model = spec.builders["keras"]()
    layouts = spec.source_layouts("keras")
    example = make_inputs(spec, example_recipe(spec))
    inputs = [relaid(example[i.name], i.layout, layouts[0][i.name]) for i in spec.inputs]
    tf_onnx.convert(model, spec, inputs, tmp_path / "export", layouts=layouts, layout_variant="nhwc")
    bad = planted.keras_batchnorm_epsilon(tmp_path / "export" / tf_onnx.FILENAME, model, "bn1", 10.0,
                                          tmp_path / "bn_epsilon.onnx")
    run = run_parity("--model=cnn", "--source=keras", f"--converted={bad}")
    run.result.assert_outcomes(failed=1)
    localization = _localization(run)
    assert localization["status"] == "found" and localization["mode"] == "converter"
    first = localization["first"]
    assert first["layer"] == "bn1 (BatchNormalization)" and "/bn1" in first["node"]
    changed = [r for r in first["region"] if r["node"].endswith("bn1_1/batchnorm/mul_1")]
    assert changed and changed[0]["op_type"] == "Mul"
    conv = [r for r in localization["path"] if r["layer"] == "conv1 (Conv2D)"]
    assert conv and not conv[0]["diverged"]


@pytest.mark.slow  # localizes every output of a failing case
def test_all_localizes_every_failing_output_first_only_the_first(run_parity, tmp_path):
    """two_outputs with its last weight negated: the logits and their argmax
    both fail. `all` localizes each, with a reproduction of its own; the
    integer label is walked with the default bound."""
    path = planted.export_zoo("two_outputs", tmp_path / "export")
    model = onnx.load(str(path))
    weight = [t for t in model.graph.initializer if len(t.dims) == 2][-1]
    weight.CopyFrom(numpy_helper.from_array(-numpy_helper.to_array(weight), weight.name))
    bad = tmp_path / "negated.onnx"
    onnx.save(model, str(bad))
    run = run_parity("--model=two_outputs", f"--converted={bad}", "--parity-localize=all")
    run.result.assert_outcomes(failed=1)
    localization = _localization(run)
    assert localization["output"] == "logits" and [m["output"] for m in localization["more"]] == ["label"]
    label = localization["more"][0]
    assert label["status"] == "found" and label["allowed"] == DEFAULT_BOUND
    assert label["repro"]["folder"] != localization["repro"]["folder"]
    assert all((run.path / loc["repro"]["folder"] / "repro.py").is_file() for loc in (localization, label))
    first = run_parity("--model=two_outputs", f"--converted={bad}")
    assert "more" not in _localization(first)


def test_the_localize_command_takes_the_runtime_and_hop_flags_pytest_takes(transformer_pair, tmp_path, capsys):
    """Made from the same Options declarations as the plugin's flags: a value one does not
    take is a one-line error naming it, as pytest's is."""
    from harness.__main__ import main

    good, bad, _ = transformer_pair
    args = ["localize", "--model", str(good), "--converted", str(bad), _input_spec("transformer"),
            "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache")]
    assert main([*args, "--ort-opt-level=bogus"]) == 2
    assert capsys.readouterr().err == ("python -m harness localize: --ort-opt-level 'bogus': give one of disable, "
                                       "basic, extended, all (default all)\n")
    assert main([*args, "--opset=3"]) == 2
    assert capsys.readouterr().err.startswith("python -m harness localize: --opset 3: no such ONNX opset here")
    # the benign twin: values the flags take, and the walk runs
    assert main([*args, "--ort-opt-level=basic", "--opset=17", "--exporter=torchscript"]) == 1
    assert "localized: the first diverging tensor" in capsys.readouterr().out
