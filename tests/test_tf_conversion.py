"""TensorFlow / Keras -> ONNX (tf2onnx) and -> TFLite, and the TFLite runtime:
parity against Keras at two input shapes each (the symbolic dims stay dynamic),
the NCHW layout variant, planted layout bugs that a numpy check must catch, and
canaries for the exporter bugs that the converters work around."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")
pytest.importorskip("tf2onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("ai_edge_litert")

import onnx  # noqa: E402

from harness.converters import tf_onnx, tf_tflite  # noqa: E402
from harness.errors import CaseError  # noqa: E402
from harness.layouts import convert_layout  # noqa: E402
from harness.runtimes import tflite  # noqa: E402
from harness.sources.tensorflow import TFFunctionModel  # noqa: E402
from harness.specs import InputSpec, ModelSpec, OutputSpec  # noqa: E402

MAX_ERRORS: dict[str, tuple[float, float]] = {}  # label -> (max |got - ref|, max |ref| there)


# ---------------------------------------------------------------- models and specs


def _fix_weights(model, seed: int) -> None:
    """Fixed numpy weights (BatchNorm statistics away from their 0/1 defaults)."""
    rng = np.random.default_rng(seed)
    values = []
    for weight in model.weights:
        shape, path = tuple(weight.shape), weight.path
        if path.endswith(("moving_variance", "gamma")):
            values.append(rng.uniform(0.5, 1.5, shape))
        elif path.endswith(("moving_mean", "beta", "bias")):
            values.append(rng.uniform(-0.3, 0.3, shape))
        else:
            values.append(rng.normal(0.0, 0.4, shape))
    model.set_weights([v.astype("float32") for v in values])


def conv_net():
    image = keras.Input((None, None, 3), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same")(image)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.MaxPool2D(2)(x)
    x = keras.layers.Conv2D(5, 1)(x)
    model = keras.Model(image, x)
    _fix_weights(model, 1)
    return model


CONV_SPEC = ModelSpec(
    name="tiny_conv",
    inputs=(InputSpec("image", ("N", 3, "H", "W"), {"N": (1, 4), "H": (4, 16), "W": (4, 16)}, layout="NCHW"),),
    outputs=(OutputSpec("features", layout="NCHW"),),
    layouts={"keras": {"image": "NHWC", "features": "NHWC"}, "tensorflow": {"image": "NHWC", "features": "NHWC"}},
)


def dense_net():
    """Two inputs, two outputs whose layer names sort the other way round from the spec's."""
    x = keras.Input((6,), name="x")
    extra = keras.Input((2,), name="extra")
    h = keras.layers.Dense(16, activation="tanh")(keras.layers.Concatenate()([x, extra]))
    model = keras.Model([x, extra], [keras.layers.Dense(3, name="z_head")(h), keras.layers.Dense(1, name="a_head")(h)])
    _fix_weights(model, 2)
    return model


DENSE_SPEC = ModelSpec(
    name="tiny_dense",
    inputs=(InputSpec("x", ("N", 6), {"N": (1, 8)}, layout="NC"), InputSpec("extra", ("N", 2), {"N": (1, 8)})),
    outputs=(OutputSpec("logits"), OutputSpec("score")),
)


def lstm_net():
    seq = keras.Input((None, 4), name="seq")
    x = keras.layers.LSTM(6, return_sequences=True)(seq)
    model = keras.Model(seq, keras.layers.Dense(3)(x))
    _fix_weights(model, 3)
    return model


def lstm_spec(batch) -> ModelSpec:
    dims = {"T": (2, 12)} | ({"N": (1, 4)} if isinstance(batch, str) else {})
    return ModelSpec(name="tiny_lstm", inputs=(InputSpec("seq", (batch, "T", 4), dims, layout="NTC"),),
                     outputs=(OutputSpec("y", layout="NTC"),))


def sequential_net():
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4, activation="relu"), keras.layers.Dense(2)])
    _fix_weights(model, 4)
    return model


SEQ_SPEC = ModelSpec(name="tiny_seq", inputs=(InputSpec("x", ("N", 5), {"N": (1, 4)}),), outputs=(OutputSpec("y"),))


def normalized_net(adapted: bool):
    """Keras' preprocessing Normalization in front of a conv: its mean and
    variance given (constants that the traced function captures) or adapted
    (non-trainable variables)."""
    image = keras.Input((None, None, 3), name="image")
    if adapted:
        norm = keras.layers.Normalization(name="norm")
        norm.adapt(np.random.default_rng(6).uniform(-2, 2, (8, 6, 7, 3)) * [1.0, 0.5, 2.0] + [0.3, -0.2, 0.1])
    else:
        norm = keras.layers.Normalization(mean=[0.3, -0.2, 0.1], variance=[1.5, 0.4, 5.0], name="norm")
    conv = keras.layers.Conv2D(5, 3, padding="same", name="conv")
    model = keras.Model(image, conv(norm(image)))
    _fix_weights(conv, 6)  # the conv only: the Normalization keeps its statistics
    return model


def grouped_conv_net():
    """A grouped convolution (depthwise, as ConvNeXt writes it: Conv2D with
    groups = input channels), which Keras' TensorFlow backend runs in an
    XLA-compiled function on a CPU."""
    image = keras.Input((None, None, 3), name="image")
    x = keras.layers.Conv2D(6, 3, padding="same", groups=3)(image)
    model = keras.Model(image, keras.layers.Conv2D(5, 1)(x))
    _fix_weights(model, 8)
    return model


def custom_gradient_net():
    """Activations that TensorFlow implements with a custom gradient (swish,
    i.e. silu), beside one that has none (hard swish)."""
    image = keras.Input((None, None, 3), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", activation="swish")(image)
    x = keras.layers.Activation("hard_swish")(x)
    x = keras.layers.Conv2D(5, 1, activation=keras.activations.silu)(x)
    model = keras.Model(image, x)
    _fix_weights(model, 7)
    return model


def saved_model_function(model, folder) -> TFFunctionModel:
    """A TFFunctionModel as the tensorflow source builds one from a SavedModel:
    the serving signature, called with one tensor per input in the spec's order."""
    model.export(str(folder), verbose=False)
    loaded = tf.saved_model.load(str(folder))
    signature = loaded.signatures["serving_default"]
    inputs = sorted(signature.structured_input_signature[1])
    outputs = sorted(signature.structured_outputs)

    def function(*args):
        results = signature(**dict(zip(inputs, args)))
        return [results[k] for k in outputs]

    specs = [signature.structured_input_signature[1][k] for k in inputs]
    return TFFunctionModel(function=function, input_signature=specs, concrete=signature, concrete_inputs=inputs,
                           concrete_outputs=outputs, origin=str(folder), kind="saved_model",
                           extra={"loaded": loaded})  # the signature needs the loaded object alive


def frozen_graph_function(model) -> TFFunctionModel:
    """A TFFunctionModel as the tensorflow source builds one from a frozen GraphDef
    (`tf.compat.v1.wrap_function` + `prune`)."""
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    traced = tf.function(lambda t: model(t, training=False)).get_concrete_function(
        tf.TensorSpec((None, None, None, 3), tf.float32, name="image"))
    frozen = convert_variables_to_constants_v2(traced)
    graph_def = frozen.graph.as_graph_def()
    output = frozen.outputs[0].name
    wrapped = tf.compat.v1.wrap_function(lambda: tf.compat.v1.import_graph_def(graph_def, name=""), [])
    pruned = wrapped.prune(feeds=[wrapped.graph.get_tensor_by_name("image:0")],
                           fetches=[wrapped.graph.get_tensor_by_name(output)])
    return TFFunctionModel(function=lambda *args: list(pruned(*args)),
                           input_signature=[tf.TensorSpec((None, None, None, 3), tf.float32, name="image")],
                           concrete=pruned, concrete_inputs=["image:0"], concrete_outputs=[output],
                           origin="frozen.pb", kind="frozen_graph")


# ---------------------------------------------------------------- helpers


def _inputs(spec: ModelSpec, source: str, values: dict[str, int], seed: int) -> list[np.ndarray]:
    """Inputs laid out as `source` holds the model (what the converters' example is)."""
    rng = np.random.default_rng(seed)
    input_layouts, _ = spec.source_layouts(source)
    arrays = []
    for inp in spec.inputs:
        array = rng.uniform(-2, 2, inp.example_shape(values)).astype(inp.dtype)
        arrays.append(convert_layout(array, inp.layout, input_layouts[inp.name]))
    return arrays


def _keras(model, arrays) -> list[np.ndarray]:
    out = model(arrays[0] if len(arrays) == 1 else list(arrays), training=False)
    return [np.asarray(o) for o in tf.nest.flatten(out)]


def _close(label: str, got: np.ndarray, ref: np.ndarray) -> None:
    assert got.shape == ref.shape, f"{label}: shape {got.shape} != {ref.shape}"
    error = float(np.max(np.abs(got.astype(np.float64) - ref))) if ref.size else 0.0
    bound = 1e-5 * float(np.max(np.abs(ref))) + 1e-6
    MAX_ERRORS[label] = max(MAX_ERRORS.get(label, (0.0, 0.0)), (error, float(np.max(np.abs(ref)))))
    assert error <= bound, f"{label}: max error {error:.3g} > {bound:.3g}"


def _mismatch(got: np.ndarray, ref: np.ndarray) -> bool:
    """The plain numpy check a planted bug must fail."""
    if got.shape != ref.shape:
        return True
    return not np.all(np.abs(got.astype(np.float64) - ref) <= 1e-5 * np.max(np.abs(ref)) + 1e-6)


def _ort(path, spec: ModelSpec, arrays) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run([o.name for o in spec.outputs], {i.name: x for i, x in zip(spec.inputs, arrays)})


def _to_onnx(tmp_path_factory, model, spec: ModelSpec, source: str, variant=None, **kwargs):
    out = tmp_path_factory.mktemp("onnx")
    example = _inputs(spec, source, {d: lo + 1 for d, (lo, hi) in spec.dim_bounds.items()}, 0)
    provenance = tf_onnx.convert(model, spec, example, out, layouts=spec.source_layouts(source),
                                 layout_variant=variant, **kwargs)
    return out / tf_onnx.FILENAME, provenance


def _to_tflite(tmp_path_factory, model, spec: ModelSpec, source: str, **kwargs):
    out = tmp_path_factory.mktemp("tflite")
    example = _inputs(spec, source, {d: lo + 1 for d, (lo, hi) in spec.dim_bounds.items()}, 0)
    provenance = tf_tflite.convert(model, spec, example, out, layouts=spec.source_layouts(source), **kwargs)
    return out / tf_tflite.FILENAME, provenance


def _tflite_session(path, spec: ModelSpec):
    session = tflite.Session(path, "cpu", None)
    binding = session.bind([i.name for i in spec.inputs], [i.dtype for i in spec.inputs], [o.name for o in spec.outputs])
    return session, binding


# Two shapes each: H != W, C distinct from both; batch > 1 in one.
CONV_SHAPES = [{"N": 2, "H": 10, "W": 14}, {"N": 1, "H": 7, "W": 12}]
DENSE_SHAPES = [{"N": 3}, {"N": 1}]
LSTM_SHAPES = [{"N": 2, "T": 7}, {"N": 3, "T": 4}]


@pytest.fixture(scope="module")
def conv():
    return conv_net()


@pytest.fixture(scope="module")
def saved(conv, tmp_path_factory):
    return saved_model_function(conv, tmp_path_factory.mktemp("saved") / "model")


# ---------------------------------------------------------------- tf -> onnx


@pytest.mark.parametrize("source", ["keras", "saved_model", "frozen_graph"])
def test_onnx_nhwc_and_nchw_variants_match_keras(source, conv, saved, tmp_path_factory):
    model = {"keras": conv, "saved_model": saved, "frozen_graph": None}[source]
    if source == "frozen_graph":
        model = frozen_graph_function(conv)
    tf_source = "keras" if source == "keras" else "tensorflow"
    path, provenance = _to_onnx(tmp_path_factory, model, CONV_SPEC, tf_source)
    onnx.checker.check_model(str(path))
    assert provenance["tool"] == "tf2onnx.convert.from_graph_def" and provenance["frozen"]
    assert provenance["opset_requested"] == 17 and provenance["opset"] == 17 and provenance["ir_version"] >= 8
    assert provenance["input_layouts"] == {"image": "NHWC"} and provenance["output_layouts"] == {"features": "NHWC"}
    assert provenance["layout_variant"] == "nhwc" and provenance["inputs_as_nchw"] == []
    graph = onnx.load(str(path)).graph
    assert [v.name for v in graph.input] == ["image"] and [v.name for v in graph.output] == ["features"]
    for seed, values in enumerate(CONV_SHAPES):
        x = _inputs(CONV_SPEC, tf_source, values, seed)
        _close(f"onnx nhwc {source}", _ort(path, CONV_SPEC, x)[0], _keras(conv, x)[0])

    path, provenance = _to_onnx(tmp_path_factory, model, CONV_SPEC, tf_source, "nchw")
    assert provenance["layout_variant"] == "nchw"
    assert provenance["inputs_as_nchw"] == ["image"] and provenance["outputs_as_nchw"] == ["features"]
    assert provenance["input_layouts"] == {"image": "NCHW"} and provenance["output_layouts"] == {"features": "NCHW"}
    for seed, values in enumerate(CONV_SHAPES):
        x = _inputs(CONV_SPEC, tf_source, values, seed)
        got = _ort(path, CONV_SPEC, [convert_layout(x[0], "NHWC", "NCHW")])[0]
        _close(f"onnx nchw {source}", convert_layout(got, "NCHW", "NHWC"), _keras(conv, x)[0])


def test_onnx_nchw_variant_transposes_only_the_nhwc_tensors(tmp_path_factory):
    """An NHWC image in, class scores out: NCHW on the input only."""
    image = keras.Input((None, None, 3), name="image")
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(image))
    model = keras.Model(image, keras.layers.Dense(3)(x))
    _fix_weights(model, 5)
    spec = ModelSpec(name="tiny_classifier", inputs=CONV_SPEC.inputs, outputs=(OutputSpec("logits", layout="NC"),),
                     layouts={"keras": {"image": "NHWC"}})
    path, provenance = _to_onnx(tmp_path_factory, model, spec, "keras", "nchw")
    assert provenance["inputs_as_nchw"] == ["image"] and provenance["outputs_as_nchw"] == []
    assert provenance["input_layouts"] == {"image": "NCHW"} and provenance["output_layouts"] == {"logits": "NC"}
    for seed, values in enumerate(CONV_SHAPES):
        x = _inputs(spec, "keras", values, seed)
        got = _ort(path, spec, [convert_layout(x[0], "NHWC", "NCHW")])[0]
        _close("onnx nchw classifier", got, _keras(model, x)[0])


def test_example_in_the_wrong_layout_is_a_case_error(conv, tmp_path):
    with pytest.raises(CaseError, match="example input 'image' has shape"):
        tf_onnx.convert(conv, CONV_SPEC, [np.zeros((2, 3, 10, 14), np.float32)], tmp_path,
                        layouts=CONV_SPEC.source_layouts("keras"))


def test_onnx_dense_two_inputs_two_outputs_in_spec_order(tmp_path_factory):
    model = dense_net()
    path, provenance = _to_onnx(tmp_path_factory, model, DENSE_SPEC, "keras")
    graph = onnx.load(str(path)).graph
    assert [v.name for v in graph.input] == ["x", "extra"] and [v.name for v in graph.output] == ["logits", "score"]
    assert provenance["input_layouts"] == {"x": "NC", "extra": None}
    for seed, values in enumerate(DENSE_SHAPES):
        x = _inputs(DENSE_SPEC, "keras", values, seed)
        for name, got, ref in zip(["logits", "score"], _ort(path, DENSE_SPEC, x), _keras(model, x)):
            _close(f"onnx dense {name}", got, ref)


def test_onnx_lstm_dynamic_batch_and_time(tmp_path_factory):
    model, spec = lstm_net(), lstm_spec("N")
    path, provenance = _to_onnx(tmp_path_factory, model, spec, "keras")
    assert provenance["input_layouts"] == {"seq": "NTC"}
    for seed, values in enumerate(LSTM_SHAPES):
        x = _inputs(spec, "keras", values, seed)
        _close("onnx lstm", _ort(path, spec, x)[0], _keras(model, x)[0])


def test_onnx_sequential_model(tmp_path_factory):
    model = sequential_net()
    path, _ = _to_onnx(tmp_path_factory, model, SEQ_SPEC, "keras", opset=15)
    assert onnx.load(str(path)).opset_import[0].version == 15
    x = _inputs(SEQ_SPEC, "keras", {"N": 3}, 0)
    _close("onnx sequential", _ort(path, SEQ_SPEC, x)[0], _keras(model, x)[0])


def test_nchw_variant_without_nhwc_tensor_is_a_case_error(tmp_path_factory):
    with pytest.raises(CaseError) as raised:
        _to_onnx(tmp_path_factory, dense_net(), DENSE_SPEC, "keras", "nchw")
    assert raised.value.stage == "convert" and "no" in raised.value.message and "NHWC" in raised.value.message
    with pytest.raises(CaseError, match="layout variant"):
        _to_onnx(tmp_path_factory, dense_net(), DENSE_SPEC, "keras", "nc")


def test_spec_that_does_not_fit_the_model_is_a_case_error(tmp_path_factory):
    # Forgetting that Keras holds the image as NHWC: the signature says 3 at axis 1.
    wrong = ModelSpec(name="wrong", inputs=CONV_SPEC.inputs, outputs=CONV_SPEC.outputs)
    with pytest.raises(CaseError) as raised:
        tf_onnx.convert(conv_net(), wrong, [np.zeros((2, 3, 10, 14), np.float32)], tmp_path_factory.mktemp("x"),
                        layouts=wrong.source_layouts("keras"))
    assert raised.value.stage == "convert" and "axis 3 must be 3" in raised.value.message
    assert "Keras images are NHWC" in raised.value.message


@pytest.mark.parametrize("source", ["given", "adapted", "given-saved_model"])
def test_onnx_normalization_layer_converts_with_the_spec_inputs_only(source, tmp_path_factory):
    """A Normalization's mean and variance, captured constants or variables,
    are folded into the graph: the ONNX file takes exactly the spec's input."""
    model = normalized_net(adapted=source == "adapted")
    tf_source = "tensorflow" if source.endswith("saved_model") else "keras"
    converted = saved_model_function(model, tmp_path_factory.mktemp("saved") / "m") if tf_source == "tensorflow" \
        else model
    for variant in ("nhwc", "nchw"):
        path, _ = _to_onnx(tmp_path_factory, converted, CONV_SPEC, tf_source, variant)
        graph = onnx.load(str(path)).graph
        assert [v.name for v in graph.input] == ["image"] and [v.name for v in graph.output] == ["features"]
        for seed, values in enumerate(CONV_SHAPES):
            x = _inputs(CONV_SPEC, tf_source, values, seed)
            fed = [convert_layout(x[0], "NHWC", "NCHW")] if variant == "nchw" else x
            got = _ort(path, CONV_SPEC, fed)[0]
            got = convert_layout(got, "NCHW", "NHWC") if variant == "nchw" else got
            _close(f"onnx {variant} normalization {source}", got, _keras(model, x)[0])


def test_onnx_grouped_convolution_in_an_xla_function_is_inlined(tmp_path_factory):
    model = grouped_conv_net()
    for variant in ("nhwc", "nchw"):
        path, provenance = _to_onnx(tmp_path_factory, model, CONV_SPEC, "keras", variant)
        assert provenance["xla_calls_inlined"] == 1
        for seed, values in enumerate(CONV_SHAPES):
            x = _inputs(CONV_SPEC, "keras", values, seed)
            fed = [convert_layout(x[0], "NHWC", "NCHW")] if variant == "nchw" else x
            got = _ort(path, CONV_SPEC, fed)[0]
            got = convert_layout(got, "NCHW", "NHWC") if variant == "nchw" else got
            _close(f"onnx {variant} grouped conv", got, _keras(model, x)[0])


def test_planted_xla_call_left_marked_is_refused(tmp_path_factory, monkeypatch):
    """Without the unmarking, tf2onnx leaves the call unconverted: named, refused."""
    monkeypatch.setattr(tf_onnx, "_unmark_xla_functions", lambda graph_def: 0)
    with pytest.raises(CaseError, match=r"could not convert these TensorFlow ops .*StatefulPartitionedCall"):
        _to_onnx(tmp_path_factory, grouped_conv_net(), CONV_SPEC, "keras")


def test_planted_converter_that_adds_inputs_is_refused_by_name(tmp_path_factory, monkeypatch):
    """tf2onnx's own bug planted back (the unfrozen function converted): the
    error names the inputs the converter added and says whose fault it is."""
    import tf2onnx

    model = normalized_net(adapted=False)
    function, signature, _ = tf_onnx.spec_function(model, CONV_SPEC, CONV_SPEC.source_layouts("keras")[0])
    proto, _ = tf2onnx.convert.from_function(function, input_signature=signature, opset=17)
    added = [v.name for v in proto.graph.input if v.name != "image"]
    assert added, "tf2onnx no longer adds inputs: see test_canary_tf2onnx_from_function_makes_captures_inputs"
    monkeypatch.setattr(tf2onnx.convert, "from_graph_def", lambda *args, **kwargs: (proto, None))
    with pytest.raises(CaseError) as raised:
        _to_onnx(tmp_path_factory, model, CONV_SPEC, "keras")
    message = raised.value.message
    assert raised.value.stage == "convert" and "tf2onnx added input(s)" in message and "not a short spec" in message
    assert all(name in message for name in added), message


def test_input_count_checks_say_the_converter_added_or_dropped_them():
    from onnx import TensorProto, helper

    from harness.converters.onnx_names import check_count

    values = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [2]) for name in ("x", "const:0")]
    check_count(values, ["x", "extra"], "input", "tf2onnx")  # as many as the spec: renamed later
    with pytest.raises(CaseError, match=r"tf2onnx added input\(s\) to the converted graph: \['const:0'\]"):
        check_count(values, ["x"], "input", "tf2onnx")
    with pytest.raises(CaseError, match=r"tf2onnx dropped input\(s\).*\['mask'\]"):
        check_count(values, ["x", "const:0", "mask"], "input", "tf2onnx")


# ---------------------------------------------------------------- planted layout bugs


def test_planted_nchw_variant_fed_nhwc_data_is_caught(conv, tmp_path_factory):
    path, _ = _to_onnx(tmp_path_factory, conv, CONV_SPEC, "keras", "nchw")
    # H == C == 3 lets NHWC data through ORT's shape check: only the numbers can tell.
    x = _inputs(CONV_SPEC, "keras", {"N": 2, "H": 3, "W": 8}, 5)
    got = _ort(path, CONV_SPEC, x)[0]  # the bug: NHWC data into the NCHW graph
    assert _mismatch(convert_layout(got, "NCHW", "NHWC"), _keras(conv, x)[0])
    # ... and where the shapes differ, ORT refuses it outright.
    x = _inputs(CONV_SPEC, "keras", {"N": 2, "H": 10, "W": 14}, 6)
    with pytest.raises(Exception):
        _ort(path, CONV_SPEC, x)


def test_planted_nchw_output_not_transposed_is_caught(conv, tmp_path_factory):
    """The nchw variant converted without outputs_as_nchw, but read as NCHW."""
    import tf2onnx

    layouts = CONV_SPEC.source_layouts("keras")
    function, signature, _ = tf_onnx.spec_function(conv, CONV_SPEC, layouts[0])
    proto, _ = tf2onnx.convert.from_function(function, input_signature=signature, opset=17, inputs_as_nchw=["image"])
    path = tmp_path_factory.mktemp("planted") / "model.onnx"
    onnx.save(proto, str(path))
    # 10x10 -> a 5x5x5 output: NHWC read as NCHW keeps the shape, only the numbers differ.
    x = _inputs(CONV_SPEC, "keras", {"N": 2, "H": 10, "W": 10}, 7)
    got = _ort(path, CONV_SPEC, [convert_layout(x[0], "NHWC", "NCHW")])[0]
    ref = _keras(conv, x)[0]
    read = convert_layout(got, "NCHW", "NHWC")
    assert read.shape == ref.shape and _mismatch(read, ref)
    _close("planted control: read as NHWC", got, ref)  # read as what it is, it agrees


def test_planted_outputs_as_nchw_dropped_by_tf2onnx_is_refused(conv, tmp_path_factory, monkeypatch):
    """tf2onnx skips an outputs_as_nchw entry it cannot apply without an error:
    the converter must notice from the declared shapes."""
    import tf2onnx

    original = tf2onnx.convert.from_graph_def
    monkeypatch.setattr(tf2onnx.convert, "from_graph_def",
                        lambda *args, outputs_as_nchw=None, **kwargs: original(*args, **kwargs))
    with pytest.raises(CaseError, match="did not transpose 'features'"):
        _to_onnx(tmp_path_factory, conv, CONV_SPEC, "keras", "nchw")


def test_converter_checks_that_outputs_were_transposed():
    declared = [None, None, None, 5]  # what tf2onnx declares when it skipped outputs_as_nchw
    nhwc = [None, None, None, 5]
    nchw = [nhwc[a] for a in tf_onnx.NHWC_TO_NCHW]
    assert tf_onnx._fits(declared, nchw) and tf_onnx._shows(declared, nhwc) and not tf_onnx._shows(declared, nchw)
    assert tf_onnx._shows([None, 5, None, None], nchw)


def test_rename_maps_uniquified_names_back_by_name_not_position():
    """tf2onnx names an output "logits__1" when a layer already took "logits", and
    the outputs of the traced dict come in sorted-key order ("label" first): the
    rename must go by name, never by the spec's order (that swapped two_outputs)."""
    from onnx import TensorProto, helper

    from harness.converters.onnx_names import rename_values

    graph = helper.make_graph(
        [helper.make_node("Relu", ["in"], ["logits"]), helper.make_node("Neg", ["logits"], ["logits__1"]),
         helper.make_node("Abs", ["in"], ["label"])], "g",
        [helper.make_tensor_value_info("in", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("label", TensorProto.FLOAT, [2]),
         helper.make_tensor_value_info("logits__1", TensorProto.FLOAT, [2])])
    renamed = rename_values(graph, graph.output, ["logits", "label"], "output", "tf2onnx")
    assert renamed == {"logits__1": "logits"}
    assert sorted(v.name for v in graph.output) == ["label", "logits"]
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    logits, label = ort.InferenceSession(model.SerializeToString()).run(["logits", "label"], {"in": np.array([-1, 2], np.float32)})
    np.testing.assert_array_equal(logits, [0, -2])  # Neg(Relu(in)), not the intermediate
    np.testing.assert_array_equal(label, [1, 2])


# ---------------------------------------------------------------- tf -> tflite


@pytest.mark.parametrize("source", ["keras", "saved_model", "frozen_graph"])
def test_tflite_conv_matches_keras_at_two_shapes(source, conv, saved, tmp_path_factory):
    model = {"keras": conv, "saved_model": saved, "frozen_graph": None}[source]
    if source == "frozen_graph":
        model = frozen_graph_function(conv)
    tf_source = "keras" if source == "keras" else "tensorflow"
    path, provenance = _to_tflite(tmp_path_factory, model, CONV_SPEC, tf_source)
    assert provenance["input_layouts"] == {"image": "NHWC"} and provenance["output_layouts"] == {"features": "NHWC"}
    assert provenance["shape_signatures"]["image"] == [-1, -1, -1, 3]
    assert provenance["tensor_names"]["inputs"] == {"image": "serving_default_image:0"}
    assert provenance["optimizations"] == [] and provenance["supported_ops"] == ["TFLITE_BUILTINS"]
    session, binding = _tflite_session(path, CONV_SPEC)
    assert binding["matched_by"] == "signature serving_default"
    for seed, values in enumerate(CONV_SHAPES + CONV_SHAPES[:1]):  # back to the first shape: re-allocated
        x = _inputs(CONV_SPEC, tf_source, values, seed)
        _close(f"tflite {source}", session.run(x)[0], _keras(conv, x)[0])


def test_tflite_dense_outputs_follow_the_spec_not_the_details_order(tmp_path_factory):
    model = dense_net()
    path, provenance = _to_tflite(tmp_path_factory, model, DENSE_SPEC, "keras")
    assert list(provenance["tensor_names"]["outputs"]) == ["logits", "score"]
    session, _ = _tflite_session(path, DENSE_SPEC)
    for seed, values in enumerate(DENSE_SHAPES):
        x = _inputs(DENSE_SPEC, "keras", values, seed)
        for name, got, ref in zip(["logits", "score"], session.run(x), _keras(model, x)):
            _close(f"tflite dense {name}", got, ref)


def test_tflite_lstm(tmp_path_factory):
    model = lstm_net()
    with pytest.raises(CaseError) as raised:  # a symbolic batch dim: TensorList ops cannot be lowered
        _to_tflite(tmp_path_factory, model, lstm_spec("N"), "keras")
    assert "fixed size" in raised.value.message
    spec = lstm_spec(2)
    path, provenance = _to_tflite(tmp_path_factory, model, spec, "keras")
    assert provenance["shape_signatures"]["seq"] == [2, -1, 4]
    session, _ = _tflite_session(path, spec)
    for seed, values in enumerate([{"T": 7}, {"T": 3}]):
        x = _inputs(spec, "keras", values, seed)
        _close("tflite lstm", session.run(x)[0], _keras(model, x)[0])


def test_tflite_model_with_custom_gradients_matches_keras(tmp_path_factory):
    model = custom_gradient_net()
    path, provenance = _to_tflite(tmp_path_factory, model, CONV_SPEC, "keras")
    assert provenance["tool"] == "tf.lite.TFLiteConverter.from_saved_model"
    saved = provenance["saved_model"]
    assert saved["experimental_custom_gradients"] is False and saved["custom_gradients_not_saved"] >= 2
    session, binding = _tflite_session(path, CONV_SPEC)
    assert binding["matched_by"] == "signature serving_default"
    for seed, values in enumerate(CONV_SHAPES):
        x = _inputs(CONV_SPEC, "keras", values, seed)
        _close("tflite custom gradients", session.run(x)[0], _keras(model, x)[0])


def test_tflite_refuses_layout_variants_and_opsets(conv, tmp_path_factory):
    with pytest.raises(CaseError, match="keeps the source's layouts"):
        _to_tflite(tmp_path_factory, conv, CONV_SPEC, "keras", layout_variant="nchw")
    with pytest.raises(CaseError, match="no opset"):
        _to_tflite(tmp_path_factory, conv, CONV_SPEC, "keras", opset=17)


# ---------------------------------------------------------------- the TFLite runtime


def test_tflite_runtime_refuses_corrupt_and_empty_files(tmp_path):
    corrupt = tmp_path / "corrupt.tflite"
    corrupt.write_bytes(b"TFL3" + bytes(range(256)) * 4)
    empty = tmp_path / "empty.tflite"
    empty.write_bytes(b"")
    for path in (corrupt, empty, tmp_path / "absent.tflite"):
        with pytest.raises(CaseError) as raised:
            tflite.Session(path, "cpu", None)
        assert raised.value.stage == "runtime" and str(path) in raised.value.message


def test_tflite_runtime_missing_and_versions():
    assert tflite.missing("cpu") is None
    assert "GPU delegates are not set up" in tflite.missing("cuda")
    assert tflite.versions()["ai_edge_litert"]


def test_tflite_name_matching_without_signature():
    details = [{"name": "serving_default_image_mask:0"}, {"name": "serving_default_image:0"}]
    chosen, how = tflite._match("input", ["image", "image_mask"], details)
    assert how == "name" and [d["name"] for d in chosen] == ["serving_default_image:0", "serving_default_image_mask:0"]
    chosen, how = tflite._match("output", ["logits"], [{"name": "StatefulPartitionedCall:0"}])
    assert how == "position" and chosen[0]["name"] == "StatefulPartitionedCall:0"
    with pytest.raises(CaseError, match="do not match"):
        tflite._match("output", ["a", "b"], [{"name": "StatefulPartitionedCall:0"}])


# ---------------------------------------------------------------- canaries


def test_canary_tf2onnx_from_keras_fails_on_sequential():
    """When this fails, tf2onnx.convert.from_keras handles Keras 3 Sequential
    models and tf_onnx could use it again (see its docstring)."""
    import tf2onnx

    with pytest.raises(KeyError):
        tf2onnx.convert.from_keras(sequential_net(), input_signature=[tf.TensorSpec((None, 5), tf.float32, name="x")],
                                   opset=17)


def test_canary_tflite_from_concrete_functions_keeps_variables():
    """When this fails, TFLiteConverter freezes a Keras 3 model's variables by
    itself and tf_tflite's freezing step could go (see its docstring)."""
    model = sequential_net()
    function = tf.function(lambda x: model(x, training=False), input_signature=[tf.TensorSpec((None, 5), tf.float32)])
    data = tf.lite.TFLiteConverter.from_concrete_functions([function.get_concrete_function()], model).convert()
    ops = {op["op_name"] for op in tf_tflite._interpreter(data)._get_ops_details()}
    assert "READ_VARIABLE" in ops


def test_canary_tf2onnx_from_function_makes_captures_inputs():
    """When this fails, tf2onnx's from_function no longer makes the constants a
    traced function captures (a Normalization's mean and variance) graph
    inputs, and tf_onnx could hand it the traced function unfrozen again (see
    its docstring)."""
    import tf2onnx

    function, signature, _ = tf_onnx.spec_function(normalized_net(adapted=False), CONV_SPEC,
                                                   CONV_SPEC.source_layouts("keras")[0])
    proto, _ = tf2onnx.convert.from_function(function, input_signature=signature, opset=17)
    assert len(proto.graph.input) == 3  # image, and the captured mean and variance


def test_canary_keras_runs_grouped_convolutions_in_an_xla_function():
    """When this fails, Keras' TensorFlow backend no longer wraps a grouped
    convolution on a CPU in a `tf.function(jit_compile=True)` and tf_onnx's
    `_unmark_xla_functions` has nothing left to do (see its docstring)."""
    function, _, _ = tf_onnx.spec_function(grouped_conv_net(), CONV_SPEC, CONV_SPEC.source_layouts("keras")[0])
    graph_def = function.get_concrete_function().graph.as_graph_def()
    nodes = list(graph_def.node) + [n for f in graph_def.library.function for n in f.node_def]
    assert any("_XlaMustCompile" in node.attr for node in nodes)


def test_canary_tflite_from_concrete_functions_drops_the_signature_on_custom_gradients():
    """When this fails, TFLiteConverter.from_concrete_functions saves a function
    with custom gradients (or says it cannot) instead of silently writing a
    model without signature, and tf_tflite could leave the SavedModel to it
    again (see its docstring). The harness refuses such a file."""
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    model = custom_gradient_net()
    signature = [tf.TensorSpec((None, None, None, 3), tf.float32, name="image")]
    traced = tf.function(lambda image: {"features": model(image, training=False)}, input_signature=signature)
    frozen = convert_variables_to_constants_v2(traced.get_concrete_function())
    named = tf.function(lambda image: {"features": frozen(image)[0]}, input_signature=signature)
    data = tf.lite.TFLiteConverter.from_concrete_functions([named.get_concrete_function()], tf.Module()).convert()
    assert tf_tflite._interpreter(data).get_signature_list() == {}
    with pytest.raises(CaseError, match="no 'serving_default' signature"):
        tf_tflite._inspect(data, CONV_SPEC, signature)


def test_report_max_errors():
    """Prints the largest errors seen (run with -s); the bounds were checked where they were measured."""
    for label, (error, scale) in sorted(MAX_ERRORS.items()):
        print(f"max |got - ref| {label}: {error:.3g} (max |ref| {scale:.3g})")
