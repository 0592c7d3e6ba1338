"""ONNX -> TFLite through onnx2tf (harness/converters/onnx_tflite.py): the torch
zoo on LiteRT, a converted file fed in the wrong layout, and a malformed
source. Skipped where onnx2tf is not installed."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest

from harness.converters import onnx_tflite

pytestmark = pytest.mark.skipif(onnx_tflite.missing() is not None, reason=str(onnx_tflite.missing()))

CORE_TORCH = ("simple", "mlp", "two_outputs", "lstm", "gru", "transformer", "embedding", "cnn", "depthwise")


def test_registered_and_isolated():
    from harness import backends

    assert backends.BUILTIN["hop"]["onnx->tflite"] == "harness.converters.onnx_tflite"
    assert onnx_tflite.READS == ("onnx",) and onnx_tflite.WRITES == "tflite"
    assert onnx_tflite.CHANGES_PROCESS_STATE is True
    assert onnx_tflite.onnx2tf_layout("NCHW") == "NHWC" and onnx_tflite.onnx2tf_layout("NCT") == "NTC"
    assert onnx_tflite.onnx2tf_layout("NC") == "NC"


def test_never_downloads(tmp_path):
    """The options that make onnx2tf fetch sample images stay off, and the child
    refuses sockets and onnx2tf's download function before it converts."""
    command, env = onnx_tflite.child_command(tmp_path / "m.onnx", tmp_path)
    options = json.loads(command[-1])
    for key in ("check_onnx_tf_outputs_elementwise_close", "check_onnx_tf_outputs_elementwise_close_full",
                "output_integer_quantized_tflite", "output_dynamic_range_quantized_tflite"):
        assert options[key] is False
    child = command[2]
    assert "socket.socket.connect" in child and "download_test_image_data = " in child
    assert child.index("_refuse") < child.index("onnx2tf.convert(")
    assert env["HTTPS_PROXY"] == "http://127.0.0.1:9"
    # the refusal works: the child's prelude, run here in a fresh interpreter, blocks a connect
    import subprocess
    import sys

    prelude = child.split("import onnx2tf")[0]
    probe = prelude + "\nimport socket\ntry:\n    socket.create_connection(('github.com', 443), timeout=1)\n" \
                      "except OSError as e:\n    print('REFUSED', e)\n"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert "REFUSED" in done.stdout and "must not download" in done.stdout


def test_malformed_onnx_is_a_case_error(tmp_path):
    from harness.errors import CaseError
    from harness.registry import get_model

    spec = get_model("cnn")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not a protobuf \x00\x01\x02")
    with pytest.raises(CaseError) as caught:
        onnx_tflite.convert(bad, spec, [], tmp_path / "out", layouts=spec.source_layouts("torch"))
    assert caught.value.stage == "convert"
    assert "bad.onnx" in str(caught.value) and "cnn" in str(caught.value)
    assert not (tmp_path / "out" / onnx_tflite.FILENAME).exists()


def test_the_upstream_file_is_never_rewritten(tmp_path):
    """onnx2tf saves its shape-estimated graph over its input where the graph
    holds an Einsum: given the cached export itself, it broke that entry's
    manifest (seen on hf_bert_masked). It is given a copy."""
    import hashlib

    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from harness.specs import InputSpec, ModelSpec

    weight = numpy_helper.from_array(np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("Einsum", ["x", "w"], ["y"], equation="ij,jk->ik")], "einsum",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])], initializer=[weight])
    source = tmp_path / "model.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(source))
    before = hashlib.sha256(source.read_bytes()).hexdigest()
    spec = ModelSpec("einsum", inputs=[InputSpec("x", (2, 8), layout="NC")], outputs=["y"], builders={})
    x = np.random.default_rng(1).normal(size=(2, 8)).astype(np.float32)
    onnx_tflite.convert(source, spec, [x], tmp_path / "out", layouts=({"x": "NC"}, {"y": None}))
    assert (tmp_path / "out" / onnx_tflite.FILENAME).is_file()
    assert hashlib.sha256(source.read_bytes()).hexdigest() == before


def test_a_static_image_model_converts_on_sample_images_made_without_the_network(tmp_path):
    """All inputs 4-D, 3 channels, a fixed batch <= 20: onnx2tf runs such a graph on
    sample images it downloads, whatever its options; refused the network, it failed
    on every classic classifier. The child makes the images itself."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from harness.specs import InputSpec, ModelSpec

    weight = numpy_helper.from_array(np.random.default_rng(0).normal(size=(4, 3, 3, 3)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], "conv",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 24])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 32, 24])],
                              initializer=[weight])
    source = tmp_path / "conv.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(source))
    spec = ModelSpec("conv", inputs=[InputSpec("x", (1, 3, 32, 24), layout="NCHW")], outputs=["y"], builders={})
    x = np.random.default_rng(1).normal(size=(1, 3, 32, 24)).astype(np.float32)
    provenance = onnx_tflite.convert(source, spec, [x], tmp_path / "out", layouts=({"x": "NCHW"}, {"y": "NCHW"}))
    assert (tmp_path / "out" / onnx_tflite.FILENAME).is_file()
    assert provenance["input_layouts"] == {"x": "NHWC"} and provenance["output_layouts"] == {"y": "NHWC"}
    assert provenance["layout_evidence"]["outputs"]["y"]["probe_max_abs_err"] < 1e-4


@pytest.mark.slow  # the torch zoo through onnx2tf; test_converted_file_with_its_layout_passes takes the path in make test
def test_torch_zoo_through_onnx2tf_on_litert(run_parity):
    run = run_parity("--model=cnn,mlp", "--target=tflite", "-p", "no:randomly")
    assert run.result.ret == 0, run.output[-3000:]
    for record in run.cases.values():
        assert record["status"] == "passed", record
    text = json.dumps(run.cases)
    assert "onnx2tf" in text and "NHWC" in text


@pytest.fixture(scope="module")
def cnn_tflite(tmp_path_factory) -> Path:
    """The zoo's cnn exported to ONNX and converted by the hop: an NHWC .tflite."""
    from harness.registry import get_model
    from tests.planted import export_zoo

    tmp = tmp_path_factory.mktemp("onnx2tf-cnn")
    onnx_path = export_zoo("cnn", tmp / "onnx")
    spec = get_model("cnn")
    from harness.inputs import example_recipe, make_inputs

    example = [make_inputs(spec, example_recipe(spec))[i.name] for i in spec.inputs]
    provenance = onnx_tflite.convert(onnx_path, spec, example, tmp / "tflite", layouts=spec.source_layouts("torch"))
    assert provenance["input_layouts"] == {"image": "NHWC"}
    assert provenance["output_layouts"] == {"features": "NHWC"}
    assert provenance["tool_version"] == onnx_tflite.versions()["onnx2tf"]
    target = tmp / "cnn_onnx2tf.tflite"
    (tmp / "tflite" / onnx_tflite.FILENAME).replace(target)
    return target


def test_converted_file_with_its_layout_passes(run_parity, cnn_tflite):
    run = run_parity(f"--converted={cnn_tflite}", "--model=cnn", "--source=torch", "--target=tflite",
                     "--converted-layouts=image:NHWC,features:NHWC")
    assert run.result.ret == 0, run.output[-3000:]
    assert run.single["status"] == "passed"


def test_converted_file_fed_nchw_does_not_pass(run_parity, cnn_tflite):
    """The planted twin: the same file without --converted-layouts is fed NCHW."""
    run = run_parity(f"--converted={cnn_tflite}", "--model=cnn", "--source=torch", "--target=tflite")
    assert run.result.ret != 0
    record = run.single
    assert record["status"] != "passed"
    assert "layout" in json.dumps(record).lower()


@pytest.mark.skipif(not os.environ.get("PARITY_ONNX2TF_TABLE"), reason="measurement: set PARITY_ONNX2TF_TABLE=path")
def test_measure_core_torch_zoo(run_parity):
    """Every core torch zoo model once through onnx2tf; writes a JSON table."""
    run = run_parity(f"--model={','.join(CORE_TORCH)}", "--target=tflite", "-p", "no:randomly")
    Path(os.environ["PARITY_ONNX2TF_TABLE"]).write_text(json.dumps(run.cases, indent=1, default=str))


UNDECLARED_OUTPUT_FILE = '''
import torch
from harness import InputSpec, OutputSpec, register_model

def build_net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU()).eval()

image = InputSpec("image", ("N", 3, "H", "W"), dims={"N": (1, 4), "H": (16, 64), "W": (20, 64)}, layout="NCHW")
register_model("net", inputs=[image], outputs=[OUTPUT], torch=build_net)
'''


@pytest.mark.slow  # two conversions through onnx2tf, followed to a pass
def test_an_output_moved_channels_last_without_a_declared_layout_names_the_declaration_and_it_works(
        run_parity, tmp_path):
    """onnx2tf lays a conv's NCHW output out NHWC: where the spec declares no layout for it, the
    case says which declaration lets the harness lay it back; made, the case passes."""
    path = tmp_path / "my_models.py"
    path.write_text(UNDECLARED_OUTPUT_FILE.replace("OUTPUT", '"features"'))
    record = run_parity(f"--model={path}", "--target=tflite").single
    assert record["status"] == "error" and record["stage"] == "convert"
    advice = "outputs=[OutputSpec('features', layout='NCHW')]"
    assert "channels last" in record["message"] and advice in record["message"]
    path.write_text(UNDECLARED_OUTPUT_FILE.replace("OUTPUT", advice.split("[", 1)[1].rsplit("]", 1)[0]))
    record = run_parity(f"--model={path}", "--target=tflite").single
    assert record["status"] == "passed", record["message"]
