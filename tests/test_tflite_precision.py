"""TFLite at lowered precisions: tf->tflite writing fp16, int8-dynamic and
full-integer int8 files (each read back from the file it wrote), LiteRT running
int8-in/int8-out files (the pure quantize/dequantize against hand-computed
values and against the interpreter's own QUANTIZE kernel), an int8 file whose
input zero point is off by one that must FAIL beside its correct twin that
passes, and the inputs that must be clear errors (a calibration feed that does
not fit the model, an op without a kernel, a truncated file)."""

from __future__ import annotations

import numpy as np
import pytest

from harness.errors import CaseError
from harness.runtimes.tflite import PortQuantization, dequantize, port_quantization, quantize

# ---------------------------------------------------------------- quantize / dequantize, pure


def test_quantize_int8_hand_computed():
    # scale 0.5, zero point -3: x / 0.5 rounded half to even, + (-3), clipped to -128..127
    x = np.array([0.0, 0.25, 0.75, -0.25, -0.75, 1.25, 1.3, 100.0, -100.0, np.inf, -np.inf], dtype=np.float32)
    #              0   0.5->0 1.5->2 -0.5->-0 -1.5->-2 2.5->2 2.6->3  200->clip -200->clip
    expected = np.array([-3, -3, -1, -3, -5, -1, 0, 127, -128, 127, -128], dtype=np.int8)
    got = quantize(x, 0.5, -3, "int8")
    assert got.dtype == np.int8
    np.testing.assert_array_equal(got, expected)


def test_quantize_uint8_and_int16_hand_computed():
    # uint8, scale 1/8, zero point 128: -16 -> 0, 15.875 -> 255, 16 -> 256 clipped to 255
    x = np.array([-16.0, 0.0, 15.875, 16.0, 0.0625, 0.1875, -17.0], dtype=np.float32)
    np.testing.assert_array_equal(quantize(x, 0.125, 128, "uint8"),
                                  np.array([0, 128, 255, 255, 128, 130, 0], dtype=np.uint8))
    # int16, scale 2**-10, zero point 0
    x = np.array([1.0, -40.0, 2.0**-11, 3 * 2.0**-11], dtype=np.float32)
    np.testing.assert_array_equal(quantize(x, 2.0**-10, 0, "int16"), np.array([1024, -32768, 0, 2], dtype=np.int16))


def test_quantize_refuses_nan():
    with pytest.raises(ValueError, match="NaN"):
        quantize(np.array([0.0, np.nan], dtype=np.float32), 0.5, 0, "int8")


def test_dequantize_hand_computed():
    q = np.array([-128, -3, 0, 127], dtype=np.int8)
    got = dequantize(q, 0.5, -3)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, np.array([-62.5, 0.0, 1.5, 65.0], dtype=np.float32))
    np.testing.assert_array_equal(dequantize(np.array([0, 255], dtype=np.uint8), 0.125, 128),
                                  np.array([-16.0, 15.875], dtype=np.float32))


def test_quantize_then_dequantize_is_within_half_a_step():
    x = np.random.default_rng(0).uniform(-3, 3, 1000).astype(np.float32)
    scale, zero_point = 6 / 255, -1
    back = dequantize(quantize(x, scale, zero_point, "int8"), scale, zero_point)
    inside = (x >= (-128 - zero_point) * scale) & (x <= (127 - zero_point) * scale)
    assert np.abs(back - x)[inside].max() <= scale / 2 + 1e-6


def _detail(dtype, scales=(), zero_points=(), axis=0, legacy=(0.0, 0)):
    return {"name": "t", "dtype": dtype, "quantization": legacy,
            "quantization_parameters": {"scales": np.array(scales, np.float32),
                                        "zero_points": np.array(zero_points, np.int32), "quantized_dimension": axis}}


def test_port_quantization_reads_per_tensor_parameters_and_refuses_per_axis():
    assert port_quantization(_detail(np.float32), "input 'x'") is None
    assert port_quantization(_detail(np.int64), "input 'ids'") is None
    assert port_quantization(_detail(np.int8), "input 'x'") is None        # integers that stand for themselves
    assert port_quantization(_detail(np.int8, [0.5], [-3]), "input 'x'") == PortQuantization("int8", 0.5, -3)
    assert port_quantization(_detail(np.uint8, legacy=(0.125, 128)), "x") == PortQuantization("uint8", 0.125, 128)
    with pytest.raises(CaseError) as raised:
        port_quantization(_detail(np.int8, [0.5, 0.25], [0, 0], axis=3), "output 'features' (Identity)")
    assert raised.value.stage == "runtime"
    assert "per axis" in raised.value.message and "'features'" in raised.value.message
    assert "2 scales along axis 3" in raised.value.message


# ---------------------------------------------------------------- with TensorFlow and LiteRT

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")
pytest.importorskip("ai_edge_litert")

from tensorflow.lite.python import schema_py_generated as schema  # noqa: E402
from tensorflow.lite.tools import flatbuffer_utils  # noqa: E402

from harness.converters import tf_tflite  # noqa: E402
from harness.inputs import InputRecipe, example_recipe, make_inputs  # noqa: E402
from harness.layouts import relaid  # noqa: E402
from harness.registry import get_model, load_model_file  # noqa: E402
from harness.runtimes import tflite  # noqa: E402
from harness.sources import keras as keras_source  # noqa: E402
from harness.specs import InputSpec, ModelSpec, OutputSpec  # noqa: E402

CALIBRATION = {"distribution": None, "samples": 32, "seed": 0}   # what the engine passes, resolved below


def _convert(spec: ModelSpec, model, out, precision: str, calibration: dict | None = None) -> dict:
    source_in, source_out = spec.source_layouts("keras")
    tensors = make_inputs(spec, example_recipe(spec))
    example = [relaid(tensors[i.name], i.layout, source_in[i.name]) for i in spec.inputs]
    if calibration is None and precision != "fp32":
        calibration = {**CALIBRATION, "distribution": spec.calibration}
    return tf_tflite.convert(model, spec, example, out, layouts=(source_in, source_out), precision=precision,
                             calibration=calibration)


def _session(path, spec: ModelSpec) -> tflite.Session:
    session = tflite.Session(path, "cpu", None)
    session.bind([i.name for i in spec.inputs], [i.dtype for i in spec.inputs], [o.name for o in spec.outputs])
    return session


def _inputs(spec: ModelSpec, distribution: str, seed: int, dims: dict | None = None) -> list[np.ndarray]:
    source_in, _ = spec.source_layouts("keras")
    recipe = InputRecipe(dims or example_recipe(spec).dims, {i.name: distribution for i in spec.inputs}, 0.0, seed)
    tensors = make_inputs(spec, recipe)
    return [relaid(tensors[i.name], i.layout, source_in[i.name]) for i in spec.inputs]


def _file_tensors(path) -> tuple[list, list]:
    """(every tensor of the file's main graph with its dtype name and whether it holds
    constant data, the names of its ops), read with the flatbuffer schema, not the interpreter."""
    model = flatbuffer_utils.read_model(str(path))
    names = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    graph = model.subgraphs[0]
    tensors = [(names[t.type].lower(), model.buffers[t.buffer].data is not None) for t in graph.tensors]
    ops = [flatbuffer_utils.opcode_to_name(model, op.opcodeIndex) for op in graph.operators]
    return tensors, ops


@pytest.fixture(scope="module")
def cnn():
    spec = get_model("cnn")
    return spec, keras_source.bind(spec.builders["keras"](), spec)


@pytest.fixture(scope="module")
def cnn_files(cnn, tmp_path_factory):
    """The zoo's Keras cnn converted at each precision: precision -> (path, provenance)."""
    spec, model = cnn
    files = {}
    for precision in tf_tflite.PRECISIONS:
        out = tmp_path_factory.mktemp(f"cnn-{precision}")
        files[precision] = (out / tf_tflite.FILENAME, _convert(spec, model, out, precision))
    return files


def _cosine_and_error(got: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    cosine = float((got * ref).sum() / np.linalg.norm(got) / np.linalg.norm(ref))
    return cosine, float(np.abs(got - ref).max() / np.abs(ref).max())


def test_hop_declares_its_precisions_and_options():
    assert tf_tflite.PRECISIONS == ("fp32", "fp16", "int8", "int8-dynamic")
    assert {"precision", "calibration"} <= set(tf_tflite.OPTIONS)


def test_fp32_is_unchanged_float32(cnn_files):
    path, provenance = cnn_files["fp32"]
    tensors, ops = _file_tensors(path)
    assert {dtype for dtype, _ in tensors} <= {"float32", "int32"}
    assert "DEQUANTIZE" not in ops and "QUANTIZE" not in ops
    assert provenance["precision"] == "fp32" and provenance["optimizations"] == []
    assert provenance["calibration"] is None and "calibrated_on" not in provenance
    unquantized = {"dtype": "float32", "scale": None, "zero_point": None}
    assert provenance["io_quantization"] == {"inputs": {"image": unquantized}, "outputs": {"features": unquantized}}


def test_fp16_stores_float16_weights_with_float32_io(cnn, cnn_files):
    spec, model = cnn
    path, provenance = cnn_files["fp16"]
    tensors, ops = _file_tensors(path)
    constants = {dtype for dtype, constant in tensors if constant}
    assert "float16" in constants and "float32" not in constants and "int8" not in constants   # every weight is float16
    assert "DEQUANTIZE" in ops                           # widened to float32 at load
    assert provenance["precision"] == "fp16" and provenance["supported_types"] == ["float16"]
    assert provenance["tensor_dtypes"]["float16"] >= 4
    assert {p["dtype"] for side in provenance["io_quantization"].values() for p in side.values()} == {"float32"}
    session = _session(path, spec)
    assert "quantized_ports" not in session.provenance
    x = _inputs(spec, "normal", 1)
    cosine, error = _cosine_and_error(session.run(x)[0], keras_source.run(model, x, "cpu")[0])
    assert error < 1e-2 and cosine > 0.9999, (error, cosine)


def test_int8_dynamic_stores_int8_weights_with_float32_io(cnn, cnn_files):
    spec, model = cnn
    path, provenance = cnn_files["int8-dynamic"]
    tensors, _ = _file_tensors(path)
    constants = {dtype for dtype, constant in tensors if constant}
    assert "int8" in constants and "float16" not in constants
    assert provenance["precision"] == "int8-dynamic" and provenance["representative_dataset"] is None
    assert provenance["calibration"] is None
    assert {p["dtype"] for side in provenance["io_quantization"].values() for p in side.values()} == {"float32"}
    x = _inputs(spec, "normal", 2)
    cosine, error = _cosine_and_error(_session(path, spec).run(x)[0], keras_source.run(model, x, "cpu")[0])
    assert error < 0.1 and cosine > 0.999, (error, cosine)


def test_int8_has_int8_io_with_the_files_own_scales(cnn, cnn_files):
    spec, model = cnn
    path, provenance = cnn_files["int8"]
    tensors, _ = _file_tensors(path)
    assert {dtype for dtype, _ in tensors} <= {"int8", "int32"}         # no float left in the cnn
    assert provenance["ops_in_float"] == {}
    assert provenance["supported_ops"] == ["TFLITE_BUILTINS_INT8"]
    # the provenance's IO quantization is the file's, as the interpreter reads it back
    interpreter = tf_tflite._interpreter(path.read_bytes())
    runner = interpreter.get_signature_runner("serving_default")
    for side, details in (("inputs", runner.get_input_details()), ("outputs", runner.get_output_details())):
        for name, detail in details.items():
            recorded = provenance["io_quantization"][side][name]
            scales = detail["quantization_parameters"]["scales"]
            assert np.dtype(detail["dtype"]) == np.int8 and recorded["dtype"] == "int8" and len(scales) == 1
            assert recorded["scale"] == pytest.approx(float(scales[0]), rel=1e-7) and recorded["scale"] > 0
            assert recorded["zero_point"] == int(detail["quantization_parameters"]["zero_points"][0])
    # the input's scale spans the calibrated range: the spec's domain (-3..3), normal draws clipped to it
    assert provenance["io_quantization"]["inputs"]["image"]["scale"] * 255 == pytest.approx(6.0, rel=0.02)
    calibration = provenance["calibration"]
    assert calibration["distribution"] == "normal" and calibration["samples"] == 32 == calibration["samples_used"]
    assert calibration["feed_layouts"] == {"image": "NHWC"} and calibration["calibration_s"] >= 0
    assert provenance["calibrated_on"] == "normal"
    # LiteRT runs it on float inputs: quantized with the file's parameters, outputs dequantized
    session = _session(path, spec)
    assert session.provenance["quantized_ports"] == provenance["io_quantization"]
    x = _inputs(spec, "normal", 3)
    got = session.run(x)[0]
    assert got.dtype == np.float32
    cosine, error = _cosine_and_error(got, keras_source.run(model, x, "cpu")[0])
    assert cosine > 0.999 and error < 0.2, (error, cosine)


def test_int8_keeps_integer_inputs_as_integers(tmp_path):
    """Token ids are not quantized: inference_input_type applies to float inputs
    only, so the int8 file takes int64 ids and returns an int8 embedding."""
    spec = get_model("embedding")
    model = keras_source.bind(spec.builders["keras"](), spec)
    provenance = _convert(spec, model, tmp_path, "int8")
    assert provenance["io_quantization"]["inputs"]["token_ids"] == {"dtype": "int64", "scale": None, "zero_point": None}
    assert provenance["io_quantization"]["outputs"]["embedded"]["dtype"] == "int8"
    session = _session(tmp_path / tf_tflite.FILENAME, spec)
    assert list(session.provenance["quantized_ports"]["inputs"]) == []
    x = _inputs(spec, "normal", 4)
    cosine, _ = _cosine_and_error(session.run(x)[0], keras_source.run(model, x, "cpu")[0])
    assert cosine > 0.999
    # a float spec on that int64 port is still refused by bind
    float_spec = tflite.Session(tmp_path / tf_tflite.FILENAME, "cpu", None)
    with pytest.raises(CaseError, match="takes int64 but the spec's input 'token_ids' is float32"):
        float_spec.bind(["token_ids"], ["float32"], ["embedded"])


def test_quantize_matches_the_interpreters_quantize_kernel_at_ties():
    """The pure `quantize` against LiteRT's own QUANTIZE op (as the default
    resolver runs it) on values at exact ties k + 0.5 and around them: an
    identity Dense, float32 in and out, int8 inside."""
    from ai_edge_litert.interpreter import Interpreter

    x = keras.Input((8,), name="x")
    dense = keras.layers.Dense(8, use_bias=False)
    model = keras.Model(x, dense(x))
    dense.set_weights([np.eye(8, dtype=np.float32)])
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([np.random.default_rng(i).uniform(-1, 1, (1, 8)).astype(np.float32)]
                                                for i in range(8))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    interpreter = Interpreter(model_content=converter.convert(), experimental_preserve_all_tensors=True)
    interpreter.allocate_tensors()
    (quantize_op,) = [op for op in interpreter._get_ops_details() if op["op_name"] == "QUANTIZE"]
    (quantized,) = quantize_op["outputs"]
    scale, zero_point = next(d["quantization"] for d in interpreter.get_tensor_details() if d["index"] == quantized)
    step = np.float32(scale)
    values = []
    for k in range(-20, 20):                     # the float32 x whose x / scale is exactly k + 0.5, where one exists
        x_k = np.float32((k + 0.5) * step)
        for _ in range(8):
            ratio = x_k / step
            if ratio == k + 0.5:
                values.append(x_k)
                break
            x_k = np.nextafter(x_k, np.float32(np.inf) if ratio < k + 0.5 else np.float32(-np.inf))
    ties = np.array(values, np.float32)
    assert len(ties) >= 16 and np.any(ties / step == 0.5) and np.any(ties / step == -0.5)
    rng = np.random.default_rng(0)
    others = rng.uniform(-1.2, 1.2, 64).astype(np.float32)        # past the calibrated range too: clipped
    feed = np.concatenate([ties, others, np.float32([0.0, -0.0, 10.0, -10.0])])
    feed = np.concatenate([feed, np.zeros((-len(feed)) % 8, np.float32)]).reshape(-1, 8)
    (input_detail,) = interpreter.get_input_details()
    for row in feed:
        interpreter.set_tensor(input_detail["index"], row[None])
        interpreter.invoke()
        np.testing.assert_array_equal(interpreter.get_tensor(quantized)[0],
                                      quantize(row, scale, zero_point, "int8"), err_msg=f"{row / step}")


def test_unknown_precision_is_refused(cnn, tmp_path):
    spec, model = cnn
    with pytest.raises(CaseError, match="writes fp32, fp16, int8, int8-dynamic, not 'bf16'"):
        _convert(spec, model, tmp_path, "bf16")


def _erf_model():
    x = keras.Input((None, 6), name="x")
    h = keras.layers.Dense(6)(x)
    model = keras.Model(x, keras.ops.erf(h))
    spec = ModelSpec(name="erf_head", inputs=(InputSpec("x", ("N", "T", 6), dims={"N": (1, 3), "T": (2, 5)},
                                                        layout="NTC"),),
                     outputs=(OutputSpec("y"),), builders={"keras": lambda: model})
    return spec, keras_source.bind(model, spec)


def test_an_op_without_a_kernel_is_a_convert_error_naming_op_and_precision(tmp_path):
    spec, model = _erf_model()
    with pytest.raises(CaseError) as raised:
        _convert(spec, model, tmp_path, "int8")
    message = raised.value.message
    assert raised.value.stage == "convert"
    assert "at precision int8 at op tf.Erf" in message, message
    assert "no builtin kernel for this op at any precision" in message and "tf->onnx" in message


def test_int8_lists_the_ops_it_left_in_float(tmp_path):
    """TF 2.21's quantizer keeps an op without an int8 kernel in float32
    (between DEQUANTIZE and QUANTIZE) rather than refusing it under
    TFLITE_BUILTINS_INT8: the provenance names it. A canary: when the
    quantizer starts refusing, this conversion raises instead."""
    x = keras.Input((None, 6), name="x")
    model = keras.Model(x, keras.ops.sin(keras.layers.Dense(6)(x)))
    spec = ModelSpec(name="sin_head", inputs=(InputSpec("x", ("N", "T", 6), dims={"N": (1, 3), "T": (2, 5)},
                                                        layout="NTC"),),
                     outputs=(OutputSpec("y"),), builders={"keras": lambda: model})
    provenance = _convert(spec, keras_source.bind(model, spec), tmp_path, "int8")
    assert provenance["ops_in_float"] == {"SIN": 1}
    assert provenance["io_quantization"]["inputs"]["x"]["dtype"] == "int8"


def test_a_calibration_feed_that_does_not_fit_is_a_clear_error(cnn, tmp_path, monkeypatch):
    spec, model = cnn
    real = tf_tflite.calibration_inputs

    def wrong_rank(spec, calibration, layouts):
        return [{name: array[0] for name, array in sample.items()} for sample in real(spec, calibration, layouts)]

    monkeypatch.setattr(tf_tflite, "calibration_inputs", wrong_rank)
    with pytest.raises(CaseError) as raised:
        _convert(spec, model, tmp_path, "int8")
    message = raised.value.message
    assert raised.value.stage == "convert"
    assert "calibration feed of model 'cnn' does not fit the model: sample 0 gives input 'image' as float32[" in message
    assert "float32[None, None, None, 3]" in message and "layout NHWC" in message, message


# ---------------------------------------------------------------- planted: input zero point off by one

READOUT = '''
"""Four weighted means of 64 features (positive weights, each column summing to 1)
plus a bias: a pooling readout, where an input shifted by one quantization step
moves every output by that step, above int8's own noise."""
import numpy as np

from harness import InputSpec, register_model


def build():
    import keras

    x = keras.Input((64,), name="x")
    dense = keras.layers.Dense(4, name="readout")
    model = keras.Model(x, dense(x))
    weights = np.random.default_rng(7).uniform(0.5, 1.5, (64, 4))
    dense.set_weights([(weights / weights.sum(axis=0)).astype("float32"),
                       np.array([0.5, -0.5, 1.0, -1.0], "float32")])
    return model


register_model("tflite_int8_readout", keras=build, outputs=["y"],
               inputs=[InputSpec("x", ("N", 64), dims={"N": (1, 4)}, layout="NC", domain=(-4.0, 4.0))])
'''


def shift_input_zero_point(source, target, by: int = 1, compensate: bool = True) -> None:
    """Write `source` (an int8 .tflite) to `target` with its input's zero point
    moved by `by`. TFLite's kernels read a tensor's zero point from the tensor
    itself, so that edit alone leaves a self-consistent file computing the same
    function (`compensate=False`). With `compensate`, each first layer's int32
    bias takes `by * sum(weights)` of its output channel, so that the layer keeps
    computing with the old zero point: the file then declares a zero point one
    off from the one it computes with, and every input value reaches the model
    one quantization step too high (what an app quantizing with the wrong zero
    point feeds the correct file)."""
    model = flatbuffer_utils.read_model(str(source))
    graph = model.subgraphs[0]
    (index,) = graph.inputs
    tensor = graph.tensors[index]
    tensor.quantization.zeroPoint = np.asarray(tensor.quantization.zeroPoint, np.int64) + by
    for op in (op for op in graph.operators if compensate and index in list(op.inputs)):
        name = flatbuffer_utils.opcode_to_name(model, op.opcodeIndex)
        assert name in ("FULLY_CONNECTED", "CONV_2D"), f"no bias compensation for a first op {name}"
        weights, bias = graph.tensors[op.inputs[1]], graph.tensors[op.inputs[2]]
        assert not np.any(weights.quantization.zeroPoint)          # int8 weights are symmetric
        w = np.frombuffer(bytes(model.buffers[weights.buffer].data), np.int8).reshape(weights.shape)
        b = np.frombuffer(bytes(model.buffers[bias.buffer].data), "<i4").astype(np.int64)
        b = b + by * w.reshape(w.shape[0], -1).astype(np.int64).sum(axis=1)
        model.buffers[bias.buffer].data = b.astype("<i4").view(np.uint8)
    flatbuffer_utils.write_model(model, str(target))


@pytest.fixture(scope="module")
def readout_files(tmp_path_factory):
    """(model file, correct int8 file, planted int8 file, self-consistent edit)."""
    folder = tmp_path_factory.mktemp("readout")
    model_file = folder / "readout.py"
    model_file.write_text(READOUT)
    (spec,) = load_model_file(model_file)
    model = keras_source.bind(spec.builders["keras"](), spec)
    _convert(spec, model, folder, "int8")
    correct = folder / tf_tflite.FILENAME
    planted, consistent = folder / "zero_point_off_by_one.tflite", folder / "zero_point_edited_alone.tflite"
    shift_input_zero_point(correct, planted)
    shift_input_zero_point(correct, consistent, compensate=False)
    return model_file, correct, planted, consistent, spec, model


def test_zero_point_edit_alone_is_self_consistent_and_the_compensated_one_is_not(readout_files):
    """Why the planted file compensates: the edit alone moves the harness's
    quantization and the kernel's together, so the outputs stay within one
    output step; compensated, the declared zero point is one off."""
    _, correct, planted, consistent, spec, model = readout_files
    x = _inputs(spec, "normal", 5, {"N": 4})
    sessions = {path.name: _session(path, spec) for path in (correct, planted, consistent)}
    outputs = {name: session.run(x)[0] for name, session in sessions.items()}
    step = sessions[correct.name].provenance["quantized_ports"]["outputs"]["y"]["scale"]
    input_zero_point = {name: session.provenance["quantized_ports"]["inputs"]["x"]["zero_point"]
                        for name, session in sessions.items()}
    assert input_zero_point[planted.name] == input_zero_point[consistent.name] == input_zero_point[correct.name] + 1
    assert np.abs(outputs[consistent.name] - outputs[correct.name]).max() <= step * 1.01
    shift = outputs[planted.name] - outputs[correct.name]
    assert np.median(shift) > step                    # every output one input step (~2.3 output steps) up


# Measured (TF 2.21, ai-edge-litert; corners and 40 draws from the calibrated
# distribution, normal): the correct file's error is at most 0.0077 of max|ref|
# (SNR >= 43.5 dB), the off-by-one file's at least 0.031 on every example
# (SNR <= 28.1 dB). 0.015 and 35 dB sit about 2x from each side.
# Between the twins (50 examples each): the correct file at most 0.0083 of max|ref| and at least 43.5 dB,
# the planted one 0.035 and 27.3 dB; the ci profile draws the same examples on every run.
INT8_TOLERANCE = ("--precision=int8", "--atol-by-max=0.02", "--rtol=0", "--atol=0", "--min-snr-db=33",
                  "--hypothesis-profile=ci")


def test_planted_int8_input_zero_point_off_by_one_fails_beside_its_correct_twin(run_parity, readout_files):
    model_file, correct, planted, *_ = readout_files
    common = (f"--model={model_file}", "--source=keras", "--target=tflite", *INT8_TOLERANCE)
    good = run_parity(*common, f"--converted={correct}", examples=8)
    good.result.assert_outcomes(passed=1)
    record = good.single
    assert record["provenance"]["runtime"]["quantized_ports"]["inputs"]["x"]["dtype"] == "int8"
    bad = run_parity(*common, f"--converted={planted}", examples=8)
    bad.result.assert_outcomes(failed=1)
    output = bad.single["outputs"]["y"]
    assert output["normalized_error"] > 0.015, output
    assert "Traceback" not in bad.output


def test_truncated_tflite_is_a_clear_error(run_parity, readout_files, tmp_path):
    model_file, correct, *_ = readout_files
    truncated = tmp_path / "truncated.tflite"
    truncated.write_bytes(correct.read_bytes()[: correct.stat().st_size // 2])
    run = run_parity(f"--model={model_file}", "--source=keras", "--target=tflite", f"--converted={truncated}",
                     *INT8_TOLERANCE)
    run.result.assert_outcomes(errors=1)
    message = run.single["message"]
    assert "could not load" in message and "truncated.tflite" in message, message
    assert "Traceback" not in run.output
