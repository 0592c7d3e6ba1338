"""A reduced-precision TFLite file's floor is TFLite's own build of the same
model (the `tf->tflite` hop, which declares itself the standard build of TFLite
files), run in LiteRT: a file by another TFLite recipe passes, a file calibrated
on the input domain x4 (an activation scale x4, which the looser ONNX floor
passes) fails, and the harness's own tf->tflite build is its own floor. In
process, at the dev profile's 10 examples, on the zoo's Keras cnn."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from harness.matrix import build_cases
from harness.options import RunOptions
from harness.precision_floor import FLOOR_MULTIPLE, floor_case, standard_build, why_no_floor

DEV_EXAMPLES = 10   # the dev profile's budget


def test_each_lowering_hop_declares_the_format_it_is_the_standard_build_of():
    tflite, onnx = standard_build("tflite"), standard_build("onnx")
    assert (tflite.hop, tflite.runtime, tflite.device) == ("tf->tflite", "tflite", "cpu")
    assert tflite.recipe.format(precision="int8") == "TFLite's own int8 build"
    assert (onnx.hop, onnx.runtime, onnx.device) == ("onnx->onnx-lowered", "onnxruntime", "cpu")
    assert standard_build("openvino-ir") is None   # a format with none of its own: the ONNX floor


def _cases(target: str, converted: Path | None = None, path: str = "shortest") -> dict:
    options = RunOptions(models=("cnn",), sources=("keras",), targets=(target,), devices=("cpu",),
                         precisions=("int8",), converted=converted, path=path)
    return {case.id: case for case in build_cases(options)}


def test_a_tflite_file_by_another_path_gets_tflites_floor_and_other_formats_the_onnx_one():
    onnx2tf = _cases("tflite", path="onnx,onnx,tflite")
    assert onnx2tf, "no onnx2tf path to LiteRT at int8"
    for case in onnx2tf.values():   # lowered by onnx-lower, then onnx2tf: a TFLite file, not TFLite's own build
        floor = floor_case(case)
        assert (floor.path, floor.target, floor.device) == (("tf->tflite",), "tflite", "cpu"), case.id
    (converted,) = _cases("tflite", Path("user.tflite")).values()
    assert floor_case(converted, Path("user.tflite")).path == ("tf->tflite",)
    # the benign twin: an OpenVINO IR of the user's keeps the ONNX floor, on ONNX Runtime
    (ir,) = _cases("openvino", Path("user.xml")).values()
    assert floor_case(ir, Path("user.xml")).target == "onnxruntime"


def test_the_harness_own_tflite_int8_build_is_its_own_floor():
    (own,) = _cases("tflite").values()
    assert own.lowered_by == "tf->tflite" and floor_case(own) is None
    assert why_no_floor(own) == ("the artifact is the harness's own standard int8 build (tf->tflite): it is the "
                                 "floor; held to the fixed thresholds")


# ---------------------------------------------------------------- TFLite files made other ways, through the harness

@pytest.fixture(scope="module")
def cnn_tflite_builds(tmp_path_factory) -> dict[str, Path]:
    """The zoo's Keras cnn as int8 TFLite files by TFLite's converter with other settings than the
    harness's hop: name -> file. The hop converts; its converter gets the settings as it converts."""
    pytest.importorskip("tensorflow")
    pytest.importorskip("ai_edge_litert")
    import tensorflow as tf

    from harness.converters import tf_tflite
    from harness.inputs import example_recipe, make_inputs
    from harness.layouts import relaid
    from harness.registry import get_model
    from harness.sources import keras as keras_source

    spec = get_model("cnn")
    model = keras_source.bind(spec.builders["keras"](), spec)
    (image,) = spec.inputs
    source_in, source_out = spec.source_layouts("keras")
    example = [relaid(make_inputs(spec, example_recipe(spec))[image.name], image.layout, source_in[image.name])]
    low, high = image.domain

    def uniform_feed(low: float, high: float, samples: int, seed: int):
        rng = np.random.default_rng(seed)

        def feed():
            for _ in range(samples):
                yield {image.name: rng.uniform(low, high, example[0].shape).astype(np.float32)}
        return feed

    def convert(name: str, **settings) -> Path:
        real = tf.lite.TFLiteConverter.from_saved_model

        def with_settings(*args, **kwargs):
            converter = real(*args, **kwargs)
            convert_now = converter.convert

            def convert_with_settings():
                for key, value in settings.items():
                    setattr(converter, key, value)
                return convert_now()
            converter.convert = convert_with_settings
            return converter

        out = tmp_path_factory.mktemp(name)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(tf.lite.TFLiteConverter, "from_saved_model", with_settings)
            tf_tflite.convert(model, spec, example, out, layouts=(source_in, source_out), precision="int8",
                              calibration=None)
        return out / tf_tflite.FILENAME

    return {"8 samples": convert("eight", representative_dataset=uniform_feed(low, high, 8, 11)),
            "per-tensor": convert("per-tensor", _experimental_disable_per_channel=True),
            "domain x4": convert("domain-x4", representative_dataset=uniform_feed(4 * low, 4 * high, 32, 13))}


def run_cnn(tmp_path: Path, converted: Path | None, cache: Path) -> dict:
    """The Keras cnn's one int8 case on LiteRT (with `converted`, that file), as a run records it."""
    from harness.cache import ArtifactCache
    from harness.runner import run_case

    options = RunOptions(models=("cnn",), sources=("keras",), targets=("tflite",), devices=("cpu",),
                         examples=DEV_EXAMPLES, precisions=("int8",), converted=converted, cache_dir=cache,
                         reports_dir=tmp_path / "reports", localize="off")
    (case,) = build_cases(options)
    return run_case(case, options, ArtifactCache(cache)).to_json()


@pytest.mark.parametrize("build", ["8 samples", "per-tensor"])
def test_a_correct_tflite_int8_file_by_another_recipe_passes_against_tflites_own_build(
        tmp_path, shared_cache, cnn_tflite_builds, build):
    record = run_cnn(tmp_path, cnn_tflite_builds[build], shared_cache)
    assert record["status"] == "passed", record["message"]
    assert record["message"] == (f"all outputs within tolerance; within {FLOOR_MULTIPLE:g}x the error of TFLite's "
                                 "own int8 build of the same model (features)")
    built = record["provenance"]["floor"]
    assert built["built"] and built["path"] == ["tf->tflite"] and built["runs_on"] == "tflite cpu"
    assert built["recipe"] == "TFLite's own int8 build" and built["calibration"]["samples"] == 32
    assert built["io_quantization"]["inputs"]["image"]["dtype"] == "int8"
    assert record["outputs"]["features"]["floor"]["passed"]


def test_a_tflite_file_calibrated_on_the_domain_x4_fails_against_tflites_own_build(
        tmp_path, shared_cache, cnn_tflite_builds):
    """Measured at 10 examples: 5.1x TFLite's floor; against the ONNX floor (ONNX Runtime's int8
    build, whose own error on this model is 2.8x TFLite's) 1.8x, which passed."""
    record = run_cnn(tmp_path, cnn_tflite_builds["domain x4"], shared_cache)
    assert record["status"] == "failed", record["message"]
    assert (f"x the floor's (TFLite's own int8 build of the same model), allowed {FLOOR_MULTIPLE:g}x"
            in record["message"])
    floor = record["outputs"]["features"]["floor"]
    assert not floor["passed"] and floor["rms_over_floor"] > FLOOR_MULTIPLE


def test_the_harness_own_tflite_int8_case_records_that_it_is_the_floor(tmp_path, shared_cache):
    pytest.importorskip("ai_edge_litert")
    record = run_cnn(tmp_path, None, shared_cache)
    assert record["status"] == "passed", record["message"]
    assert record["provenance"]["floor"] == {
        "built": False, "reason": "the artifact is the harness's own standard int8 build (tf->tflite): "
                                  "it is the floor; held to the fixed thresholds"}
    assert record["outputs"]["features"]["floor"] is None
