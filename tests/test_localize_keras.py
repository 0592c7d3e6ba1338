"""The Keras source's side of a localization (`harness.localize.keras_layers`):
on correct tf2onnx conversions of zoo models, every Keras layer output mapped to
an ONNX tensor equals ONNX Runtime's value of that tensor, and enough are
mapped; on a conversion with one BatchNormalization planted wrong, the first
mapped tensor that differs is that layer's; odd models (nested, Sequential,
shared layers, subclassed) give what they can without raising."""

from __future__ import annotations

import time

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")
pytest.importorskip("tf2onnx")
ort = pytest.importorskip("onnxruntime")

import onnx  # noqa: E402
from onnx import numpy_helper  # noqa: E402

from harness.converters import tf_onnx  # noqa: E402
from harness.inputs import example_recipe, make_inputs  # noqa: E402
from harness.layouts import relaid  # noqa: E402
from harness.localize import keras_layers  # noqa: E402
from harness.localize.graph import load_graph, write_marked  # noqa: E402
from harness.localize.layers import LayerValues  # noqa: E402
from harness.registry import get_model  # noqa: E402
from harness.specs import InputSpec, ModelSpec, OutputSpec  # noqa: E402
from tests import planted  # noqa: E402
from tests.layer_checks import errors, node_share  # noqa: E402

AGREE = 1e-4      # max|keras - ort| / max|ort| of a correct conversion's tensors (measured <= 1.3e-5)
DIFFERS = 1e-2    # ... of the planted layer's


class Converted:
    """A model converted as the harness converts it, with its inputs laid out for each side."""

    def __init__(self, model, spec: ModelSpec, variant: str, folder):
        self.model, self.spec = model, spec
        layouts = spec.source_layouts("keras")
        tensors = make_inputs(spec, example_recipe(spec))
        self.inputs = [relaid(tensors[i.name], i.layout, layouts[0][i.name]) for i in spec.inputs]
        provenance = tf_onnx.convert(model, spec, self.inputs, folder, layouts=layouts, layout_variant=variant)
        self.path = folder / tf_onnx.FILENAME
        self.feed = {i.name: np.ascontiguousarray(relaid(x, layouts[0][i.name], provenance["input_layouts"][i.name]))
                     for i, x in zip(spec.inputs, self.inputs)}

    def layer_values(self, path=None) -> tuple[LayerValues, dict[str, np.ndarray], object]:
        """The Keras layers mapped onto the file at `path` (this conversion's
        by default), ORT's values of every tensor, and the file's graph."""
        graph = load_graph(path or self.path)
        values = keras_layers.layer_values(self.model, self.inputs, graph.model)
        marked = graph.path.with_name("marked.onnx")
        names = write_marked(graph, graph.order, marked)
        session = ort.InferenceSession(str(marked), providers=["CPUExecutionProvider"])
        return values, dict(zip(names, session.run(names, self.feed))), graph


def zoo(name: str, variant: str, tmp_path_factory) -> Converted:
    spec = get_model(name)
    return Converted(spec.builders["keras"](), spec, variant, tmp_path_factory.mktemp(f"{name}-{variant}"))


# ---------------------------------------------------------------- correct conversions agree


@pytest.mark.parametrize("variant", ["nhwc", "nchw"])
def test_cnn_layers_agree_with_onnxruntime(variant, tmp_path_factory):
    converted = zoo("cnn", variant, tmp_path_factory)
    values, ort_values, graph = converted.layer_values()
    found = errors(values, ort_values)
    assert max(found.values()) < AGREE, found
    # Every one of the 7 layers, the BatchNormalizations included (tf2onnx keeps them as Mul + Add)
    assert sorted(values.layers.values()) == sorted([
        "conv1 (Conv2D)", "bn1 (BatchNormalization)", "relu1 (ReLU)", "pool (MaxPooling2D)", "conv2 (Conv2D)",
        "bn2 (BatchNormalization)", "features (ReLU)"])
    assert values.seen == 7
    # tf2onnx computes NCHW inside the graph either way: the values were transposed to fit
    assert values.values["cnn_1/bn1_1/batchnorm/add_1:0"].shape[1] == 8
    print(f"\ncnn {variant}: {len(values.values)} tensors mapped, {node_share(values, graph):.0%} of "
          f"{graph.nodes} ONNX nodes; unmapped layers: {values.unmapped}")


@pytest.mark.parametrize("variant", ["nhwc", "nchw"])
def test_mobilenet_v2_layers_agree_with_onnxruntime(variant, tmp_path_factory):
    converted = zoo("mobilenet_v2", variant, tmp_path_factory)
    start = time.perf_counter()
    graph = load_graph(converted.path)
    values = keras_layers.layer_values(converted.model, converted.inputs, graph.model)
    seconds = time.perf_counter() - start
    _, ort_values, _ = converted.layer_values()
    found = errors(values, ort_values)
    assert max(found.values()) < AGREE, sorted(found.items(), key=lambda kv: -kv[1])[:5]
    share = node_share(values, graph)
    print(f"\nmobilenet_v2 {variant}: {len(values.values)} tensors mapped, {share:.1%} of {graph.nodes} ONNX "
          f"nodes, {values.seen} layers seen, in {seconds:.2f} s; unmapped layers: {values.unmapped}")
    # measured: 118 tensors, 84-85% of 139-140 nodes (the rest: BatchNormalizations' inner Mul, two Convs
    # with the next layer's BatchNormalization folded in that only another fused Conv reads, the input's
    # Transpose, the pooling before its Squeeze, the classifier's MatMul before its bias)
    assert graph.nodes > 100 and len(values.values) >= 110 and share >= 0.8
    # tf2onnx folds a Conv2D and its BatchNormalization into one Conv of its own ("Conv__339"): the
    # BatchNormalization's output is what the next layer's node reads from it
    fused = {t: label for t, label in values.layers.items() if graph.producer[t].name.startswith("Conv__")}
    assert len(fused) >= 30 and all(label.endswith("(BatchNormalization)") for label in fused.values())
    assert values.unmapped.get("output is an earlier layer's tensor") == 1   # the `logits` Identity


# ---------------------------------------------------------------- a planted BatchNormalization


def test_planted_batchnorm_epsilon_is_the_first_layer_that_differs(tmp_path_factory):
    """tf2onnx emits no BatchNormalization node for a Keras 3 BatchNormalization:
    its inference arithmetic is x * scale + shift, scale = gamma / sqrt(var + eps)
    and shift = beta - mean * scale folded into the Mul's and the Add's
    constants. The plant recomputes both constants with epsilon 10.0."""
    converted = zoo("cnn", "nhwc", tmp_path_factory)
    proto = onnx.load(str(converted.path))
    assert not [n for n in proto.graph.node if n.op_type == "BatchNormalization"], \
        "tf2onnx now emits BatchNormalization nodes: plant the epsilon in their attribute instead"
    gamma, _, _, variance = (np.asarray(w, np.float64) for w in converted.model.get_layer("bn1").get_weights())
    epsilon = converted.model.get_layer("bn1").epsilon
    nodes = {n.name: n for n in proto.graph.node}
    weights = {t.name: t for t in proto.graph.initializer}
    scale = weights[nodes["cnn_1/bn1_1/batchnorm/mul_1"].input[1]]
    np.testing.assert_allclose(numpy_helper.to_array(scale).ravel(), gamma / np.sqrt(variance + epsilon), rtol=1e-5)
    path = planted.keras_batchnorm_epsilon(converted.path, converted.model, "bn1", 10.0,
                                           converted.path.with_name("planted.onnx"))

    values, ort_values, graph = converted.layer_values(path)
    found = errors(values, ort_values)
    mapped = [t for t in graph.order if t in found]
    first = next(t for t in mapped if found[t] > AGREE)
    print(f"\nplanted epsilon: first differing {first} ({values.layers[first]}) at {found[first]:.3g}, "
          f"{mapped.index(first)} mapped tensor(s) before it agree")
    assert values.layers[first] == "bn1 (BatchNormalization)"
    assert found[first] > DIFFERS
    assert all(found[t] < AGREE for t in mapped[:mapped.index(first)]) and mapped.index(first) >= 1


# ---------------------------------------------------------------- odd models


def _dense_spec(name: str, width: int, outputs: int = 1) -> ModelSpec:
    return ModelSpec(name=name, inputs=(InputSpec("x", ("N", width), {"N": (1, 4)}, layout="NC"),),
                     outputs=tuple(OutputSpec(f"y{k}") for k in range(outputs)))


def _seeded(model):
    rng = np.random.default_rng(7)
    model.set_weights([rng.normal(0.0, 0.5, w.shape).astype("float32") for w in model.get_weights()])
    return model


def test_nested_sequential_and_shared_layers(tmp_path_factory):
    """A Sequential inside a functional model is one layer; a layer called
    twice gives one output per call; every mapped value agrees."""
    inner = keras.Sequential([keras.Input((6,)), keras.layers.Dense(6, activation="tanh", name="inner_dense")],
                             name="inner")
    shared = keras.layers.Dense(6, name="shared")
    x = keras.Input((6,), name="x")
    h = shared(keras.layers.Dense(6, activation="relu", name="first")(x))
    y = keras.layers.Dense(3, name="head")(shared(inner(h)))
    model = _seeded(keras.Model(x, y, name="nested"))
    converted = Converted(model, _dense_spec("nested", 6), "nhwc", tmp_path_factory.mktemp("nested"))
    values, ort_values, _ = converted.layer_values()
    assert max(errors(values, ort_values).values()) < AGREE
    labels = sorted(values.layers.values())
    assert "inner (Sequential)" in labels and labels.count("shared (Dense)") == 2, labels
    assert not any("inner_dense" in label for label in labels)


def test_sequential_model(tmp_path_factory):
    model = _seeded(keras.Sequential([keras.Input((5,)), keras.layers.Dense(8, activation="relu", name="a"),
                                      keras.layers.Dense(2, name="b")], name="seq"))
    converted = Converted(model, _dense_spec("seq", 5), "nhwc", tmp_path_factory.mktemp("seq"))
    values, ort_values, _ = converted.layer_values()
    assert max(errors(values, ort_values).values()) < AGREE
    assert sorted(values.layers.values()) == ["a (Dense)", "b (Dense)"]


def test_subclassed_model_gives_a_reason_not_an_error():
    class Doubler(keras.Model):
        def call(self, x):
            return x * 2.0

    model = Doubler()
    model(np.zeros((1, 3), np.float32))
    values = keras_layers.layer_values(model, [np.ones((2, 3), np.float32)], onnx.ModelProto())
    assert values.values == {} and "no layer graph" in values.how
    assert values.unmapped == {"model without a layer graph (subclassed)": 1}


@pytest.mark.parametrize("planted", [False, True])
def test_shapes_onnx_cannot_infer_at_the_fed_sizes_are_said_in_how(planted):
    """Once silent: the matcher then holds Keras outputs to the shapes the graph declares."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])
    nodes = [helper.make_node("Relu", ["x"], ["r"])] + ([helper.make_node("Reshape", ["r"], ["y"])] if planted
                                                        else [helper.make_node("Neg", ["r"], ["y"])])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y]), opset_imports=[helper.make_opsetid("", 17)])
    values = LayerValues(how="probed")
    shapes = keras_layers._concrete_shapes(model, [("x", ["N", 3])], [np.zeros((2, 3), np.float32)], values)
    if planted:
        assert values.how == ("probed; shapes as the graph declares them (inference stopped: InferenceError: "
                              "[ShapeInferenceError] (op_type:Reshape): Input 1 is out of bounds.)")
        assert shapes == {"y": None}
    else:
        assert values.how == "probed" and shapes == {"r": [2, 3], "y": [2, 3]}


def test_layout_that_shapes_cannot_tell_is_left_unmapped():
    from harness.localize.keras_layers import onnx_layout

    assert onnx_layout((2, 4, 6, 8), [2, 8, 4, 6]) == ((0, 3, 1, 2), None)
    assert onnx_layout((2, 4, 6, 8), [2, 4, 6, 8]) == ((0, 1, 2, 3), None)
    assert onnx_layout((2, 5, 5, 5), [2, 5, 5, 5])[0] is None          # H == W == C
    assert onnx_layout((2, 4, 6, 8), [2, None, None, None])[0] is None  # dims ONNX could not infer
    assert onnx_layout((2, 1, 1, 8), [2, 1, 1, 8]) == ((0, 1, 2, 3), None)
    assert onnx_layout((2, 1, 1, 8), [2, 8, 1, 1]) == ((0, 3, 1, 2), None)
    assert onnx_layout((2, 4, 6, 8), [2, 4, 8, 6]) == (None, "shape differs from its ONNX tensor's")
