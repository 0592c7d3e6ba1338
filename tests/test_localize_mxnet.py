"""The MXNet source's side of a localization (`harness.localize.mxnet_layers`):
on correct mx2onnx conversions of zoo models, every op output mapped to an
ONNX tensor equals ONNX Runtime's value of it; with one BatchNormalization's
epsilon planted wrong in the file, the first mapped tensor that differs is
that op's."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

# Not pytest.importorskip("mxnet"): mxnet must be imported through
# harness.sources.mxnet.import_mxnet, which shims np.bool and onnx.mapping first.
if importlib.util.find_spec("mxnet") is None:
    pytest.skip("mxnet is not installed", allow_module_level=True)
ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from harness.converters import mxnet_onnx  # noqa: E402
from harness.inputs import example_recipe, make_inputs  # noqa: E402
from harness.layouts import relaid  # noqa: E402
from harness.localize import mxnet_layers  # noqa: E402
from harness.localize.graph import load_graph, write_marked  # noqa: E402
from harness.registry import get_model  # noqa: E402
from harness.sources import mxnet as mxnet_source  # noqa: E402

if mxnet_source.missing("cpu"):
    pytest.skip(mxnet_source.missing("cpu"), allow_module_level=True)

AGREE = 1e-4      # max|mxnet - ort| / max|ort| of a correct conversion's tensors (measured <= 5e-7)
DIFFERS = 1e-2


def convert(name: str, folder):
    spec = get_model(name)
    model = spec.builders["mxnet"]()
    layouts = spec.source_layouts("mxnet")
    tensors = make_inputs(spec, example_recipe(spec))
    inputs = [relaid(tensors[i.name], i.layout, layouts[0][i.name]) for i in spec.inputs]
    mxnet_onnx.convert(model, spec, inputs, folder, layouts=layouts)
    return model, spec, inputs, folder / mxnet_onnx.FILENAME


def compared(model, spec, inputs, path) -> tuple[object, dict[str, float], object]:
    """The layer values on the file at `path`, each one's error against ORT, and the graph."""
    graph = load_graph(path)
    values = mxnet_layers.layer_values(model, inputs, graph.model)
    names = write_marked(graph, graph.order, path.with_name("marked.onnx"))
    session = ort.InferenceSession(str(path.with_name("marked.onnx")), providers=["CPUExecutionProvider"])
    theirs = dict(zip(names, session.run(names, {i.name: x for i, x in zip(spec.inputs, inputs)})))
    errors = {t: float(np.max(np.abs(v - theirs[t])) / max(float(np.max(np.abs(theirs[t]))), 1e-30))
              if v.shape == theirs[t].shape else float("inf") for t, v in values.values.items()}
    return values, errors, graph


@pytest.mark.parametrize("name, at_least", [("cnn", 7), ("depthwise", 16), ("lstm", 7)])
def test_op_outputs_agree_with_onnxruntime(name, at_least, tmp_path):
    values, errors, graph = compared(*convert(name, tmp_path))
    assert max(errors.values()) < AGREE, errors
    # measured: cnn 7 of 7 nodes, depthwise 17 of 18 (all but the Flatten mx2onnx adds before the Gemm);
    # lstm 8 tensors of 55 nodes (the RNN's three outputs, the weights' reshapes)
    assert len(values.values) >= at_least
    print(f"\n{name}: {len(values.values)} tensors mapped of {graph.nodes} ONNX nodes; unmapped: {values.unmapped}")


def test_planted_batchnorm_epsilon_is_the_first_op_that_differs(tmp_path):
    model, spec, inputs, path = convert("cnn", tmp_path)
    proto = onnx.load(str(path))
    (node,) = [n for n in proto.graph.node if n.name == "cnn_batchnorm0_fwd"]
    assert node.op_type == "BatchNormalization"
    (epsilon,) = [a for a in node.attribute if a.name == "epsilon"]
    epsilon.f = 10.0
    planted = tmp_path / "planted.onnx"
    onnx.save(proto, str(planted))
    values, errors, graph = compared(model, spec, inputs, planted)
    mapped = [t for t in graph.order if t in errors]
    first = next(t for t in mapped if errors[t] > AGREE)
    assert values.layers[first] == "cnn_batchnorm0_fwd (BatchNorm)" and errors[first] > DIFFERS
    assert mapped.index(first) >= 1 and all(errors[t] < AGREE for t in mapped[:mapped.index(first)])
