"""TensorFlow/Keras end to end through the plugin: the zoo's Keras models with
their NHWC/NCHW variants and TFLite, users' Keras and TensorFlow files, and the
layout bugs the harness must catch, each beside the correct case that passes."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from harness.converters import tf_onnx  # noqa: E402
from harness.inputs import example_recipe  # noqa: E402
from harness.inputs import make_inputs  # noqa: E402
from harness.layouts import convert_layout  # noqa: E402
from harness.registry import get_model  # noqa: E402
from model_zoo import keras_models  # noqa: E402

KERAS = ("--source=keras",)



def test_zoo_cnn_variants_and_tflite_pass(run_parity):
    run = run_parity("--model=cnn", *KERAS, "--target=onnxruntime,tflite")
    run.result.assert_outcomes(passed=3)
    assert set(run.cases) == {"cnn-keras-onnxruntime-cpu-nhwc", "cnn-keras-onnxruntime-cpu-nchw", "cnn-keras-tflite-cpu"}
    nchw = run.cases["cnn-keras-onnxruntime-cpu-nchw"]["provenance"]
    assert nchw["input_layouts"] == {"image": "NCHW"} and nchw["output_layouts"] == {"features": "NCHW"}
    assert nchw["reference"]["input_layouts"] == {"image": "NHWC"}  # the Keras model's own
    nhwc = run.cases["cnn-keras-onnxruntime-cpu-nhwc"]["provenance"]
    assert nhwc["input_layouts"] == {"image": "NHWC"} and nhwc["layout_variant"] == "nhwc"
    for record in run.cases.values():
        assert record["outputs"]["features"]["error_ratio"] < 1


@pytest.mark.slow  # a published architecture; the zoo's Keras models pass in make test
def test_published_architecture_mobilenet_v2_passes(run_parity):
    run = run_parity("--model=mobilenet_v2", *KERAS, "--target=onnxruntime", examples=3)
    run.result.assert_outcomes(passed=2)


def test_known_tflite_limitation_is_a_skip_with_reason(run_parity):
    run = run_parity("--model=lstm", *KERAS, "--target=tflite")
    run.result.assert_outcomes(skipped=1)
    assert "TensorListReserve" in run.single["message"]


# ------------------------------------------------------------------ users' files


@pytest.fixture(scope="module")
def keras_files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("keras-files")
    cnn = keras_models.build_cnn()
    cnn.save(tmp / "cnn.keras")
    cnn.export(str(tmp / "cnn_saved"), verbose=False)
    tf.train.Checkpoint(model=cnn).write(str(tmp / "cnn_ckpt"))
    data = (tmp / "cnn.keras").read_bytes()
    (tmp / "truncated.keras").write_bytes(data[: len(data) // 2])

    x = keras.Input((None, None, 3), name="image")
    y = keras.layers.Lambda(lambda t: t * 2.0, name="doubler")(keras.layers.Conv2D(4, 3, name="conv")(x))
    keras.Model(x, y).save(tmp / "lambda.h5")

    class NoSignature(tf.Module):
        @tf.function
        def __call__(self, x):
            return x * 2

    module = NoSignature()
    module.__call__.get_concrete_function(tf.TensorSpec([None, 3], tf.float32))
    tf.saved_model.save(module, str(tmp / "no_signature"))

    @tf.function(input_signature=[tf.TensorSpec([None, 5], tf.float32, name="x")])
    def affine(x):
        return tf.identity(tf.matmul(x, tf.constant(np.arange(15, dtype=np.float32).reshape(5, 3) / 10)) + 1.0,
                           name="y")

    graph = affine.get_concrete_function().graph.as_graph_def()
    (tmp / "affine.pb").write_bytes(graph.SerializeToString())
    return tmp


def test_keras_file_with_zoo_architecture_passes(run_parity, keras_files):
    run = run_parity(f"--model=cnn={keras_files / 'cnn.keras'}", *KERAS, "--target=onnxruntime")
    run.result.assert_outcomes(passed=2)


def test_keras_file_with_input_spec_passes(run_parity, keras_files):
    run = run_parity(f"--model={keras_files / 'cnn.keras'}", *KERAS, "--target=tflite", "--output-names=features",
                     "--input-spec=image:float32[N=1..3,H=16..30,W=20..36,3]:NHWC:-3..3")
    run.result.assert_outcomes(passed=1)


def test_saved_model_and_checkpoint_pass(run_parity, keras_files):
    run = run_parity(f"--model=cnn={keras_files / 'cnn_saved'},cnn={keras_files / 'cnn_ckpt'}",
                     "--source=keras,tensorflow", "--target=onnxruntime")
    run.result.assert_outcomes(passed=4)
    assert {r["source"] for r in run.cases.values()} == {"keras", "tensorflow"}


def test_frozen_graph_with_names_passes_and_wrong_name_is_clear(run_parity, keras_files):
    good = run_parity(f"--model={keras_files / 'affine.pb'}", "--source=tensorflow", "--input-spec=x:float32[N=1..4,5]",
                      "--output-names=y", "--target=onnxruntime,tflite")
    good.result.assert_outcomes(passed=2)
    bad = run_parity(f"--model={keras_files / 'affine.pb'}", "--source=tensorflow", "--target=onnxruntime",
                     "--input-spec=x:float32[N=1..4,5]", "--output-names=not_there")
    bad.result.assert_outcomes(errors=1)
    assert "not_there" in bad.single["message"]


def test_bad_tensorflow_files_are_clear_errors(run_parity, keras_files):
    run = run_parity(f"--model=cnn={keras_files / 'no_signature'},cnn={keras_files / 'truncated.keras'},"
                     f"cnn={keras_files / 'lambda.h5'},simple", "--source=keras,tensorflow", "--target=onnxruntime")
    messages = {k: r["message"] for k, r in run.cases.items() if r["status"] == "error"}
    assert any("serving_default" in m for m in messages.values()), messages
    assert any("truncated" in m.lower() or "corrupt" in m.lower() for m in messages.values()), messages
    lambda_error = next(m for m in messages.values() if "doubler" in m)
    assert "Lambda" in lambda_error and "--trust-model-code" in lambda_error
    assert run.cases["simple-keras-onnxruntime-cpu"]["status"] == "passed"  # the others go on
    assert "Traceback" not in run.output


# ------------------------------------------------------------------ planted layout bugs


def _export(keras_model, out_dir, variant=None, layouts=None):
    spec = get_model("cnn")
    source_layouts = layouts or spec.source_layouts("keras")
    example = [convert_layout(make_inputs(spec, example_recipe(spec))["image"], "NCHW", source_layouts[0]["image"])]
    tf_onnx.convert(keras_model, spec, example, out_dir, layouts=source_layouts, layout_variant=variant)
    return out_dir / tf_onnx.FILENAME


@pytest.fixture(scope="module")
def layout_artifacts(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("layouts")
    cnn = keras_models.build_cnn()
    image = keras.Input((None, None, 3), name="image")
    swapped = keras.Model(image, cnn(keras.layers.Permute((2, 1, 3), name="swap_hw")(image)))
    return {
        "nhwc": _export(cnn, tmp / "nhwc"),
        "nchw": _export(cnn, tmp / "nchw", "nchw"),
        "hw-swapped": _export(swapped, tmp / "swapped"),
        # inputs_as_nchw without outputs_as_nchw: the output stays NHWC
        "nchw-no-output-transpose": _export(cnn, tmp / "half", "nchw", ({"image": "NHWC"}, {"features": None})),
    }


def test_user_nchw_conversion_declared_nchw_passes(run_parity, layout_artifacts):
    run = run_parity("--model=cnn", *KERAS, f"--converted={layout_artifacts['nchw']}",
                     "--converted-layouts=image:NCHW,features:NCHW", "--target=onnxruntime")
    run.result.assert_outcomes(passed=1)
    assert run.single["provenance"]["input_layouts"] == {"image": "NCHW"}


def test_h_and_w_swapped_fails(run_parity, layout_artifacts):
    run = run_parity("--model=cnn", *KERAS, f"--converted={layout_artifacts['hw-swapped']}", "--target=onnxruntime")
    run.result.assert_outcomes(failed=1)
    assert "features:" in run.single["message"]


def test_channels_last_model_fed_channels_first_fails(run_parity, layout_artifacts):
    run = run_parity("--model=cnn", *KERAS, f"--converted={layout_artifacts['nhwc']}",
                     "--converted-layouts=image:NCHW,features:NCHW", "--target=onnxruntime")
    run.result.assert_outcomes(failed=1)


def test_nchw_variant_missing_output_transpose_fails(run_parity, layout_artifacts):
    run = run_parity("--model=cnn", *KERAS, f"--converted={layout_artifacts['nchw-no-output-transpose']}",
                     "--converted-layouts=image:NCHW,features:NCHW", "--target=onnxruntime")
    run.result.assert_outcomes(failed=1)
    assert "features:" in run.single["message"]


def test_same_data_reaches_both_sides(layout_artifacts):
    """The NCHW artifact fed the transposed tensor gives the transposed output of
    the Keras model fed the original: one tensor, two declared layouts."""
    import onnxruntime as ort

    spec = get_model("cnn")
    image = make_inputs(spec, example_recipe(spec))["image"]  # NCHW, as the spec says
    reference = keras_models.build_cnn()(convert_layout(image, "NCHW", "NHWC")).numpy()
    session = ort.InferenceSession(str(layout_artifacts["nchw"]), providers=["CPUExecutionProvider"])
    (got,) = session.run(["features"], {"image": image})
    np.testing.assert_allclose(convert_layout(got, "NCHW", "NHWC"), reference, rtol=1e-5, atol=1e-5)

