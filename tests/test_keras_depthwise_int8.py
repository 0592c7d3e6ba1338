"""The zoo's Keras depthwise classifier at int8 is a test that can fail: its logits move with
its input by more than int8's allowed error (model_zoo/keras_models.py _calibrate_depthwise), so
its correct int8 builds pass conclusively on LiteRT and ONNX Runtime and a planted bad scale
fails. ONNX Runtime quantizes a ReLU6's input with its Clip's range (0..6 on a symmetric int8
scale): the Q/DQ pair check holds such a pair to the values the Clip keeps."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from harness.cache import ArtifactCache
from harness.matrix import build_cases
from harness.options import RunOptions
from harness.runner import run_case

pytest.importorskip("tf2onnx")
pytest.importorskip("ai_edge_litert")


def run_depthwise(cache: Path, reports: Path, precision: str, target: str, converted: Path | None = None
                  ) -> dict[str, dict]:
    """Every case of the Keras depthwise classifier at `precision` on `target`, by id, at the dev profile's
    10 examples."""
    options = RunOptions(models=("depthwise",), sources=("keras",), targets=(target,), devices=("cpu",),
                         precisions=(precision,), examples=10, converted=converted, cache_dir=cache,
                         reports_dir=reports, localize="off")
    return {case.id: run_case(case, options, ArtifactCache(cache)).to_json() for case in build_cases(options)}


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def onnxruntime_int8(cache, tmp_path_factory) -> dict[str, dict]:
    return run_depthwise(cache, tmp_path_factory.mktemp("reports"), "int8", "onnxruntime")


@pytest.mark.parametrize("target", ["tflite", "onnxruntime"])
def test_its_fp32_cases_pass(cache, tmp_path, target):
    records = run_depthwise(cache, tmp_path, "fp32", target)
    assert records and all(r["status"] == "passed" for r in records.values()), records


def test_its_int8_cases_pass_conclusively(cache, tmp_path, onnxruntime_int8):
    records = {**run_depthwise(cache, tmp_path, "int8", "tflite"), **onnxruntime_int8}
    assert sorted(records) == ["depthwise-keras-onnxruntime-cpu-nchw-int8", "depthwise-keras-onnxruntime-cpu-nhwc-int8",
                               "depthwise-keras-tflite-cpu-int8"]
    for case_id, record in records.items():
        assert record["status"] == "passed", (case_id, record["message"])
        assert record["outputs"]["logits"]["sensitivity"]["ratio"] > 1.5, (case_id, record["outputs"]["logits"])


def _clip_read_quantizer(path: Path) -> str:
    """The tensor of the first activation pair of the QDQ file at `path` whose dequantized value only a Clip reads,
    among those named after a Keras layer (the pairs of a converted file are matched to the floor's own export
    by name, and tf2onnx numbers the nodes it makes, Conv__62, differently in each export)."""
    model = onnx.load(str(path))
    readers: dict[str, list[str]] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node.op_type)
    dequantized = {n.input[0]: n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    return next(n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear"
                and readers.get(dequantized.get(n.output[0], ""), []) == ["Clip"] and "__" not in n.input[0])


@pytest.mark.parametrize("factor, says", [(4.0, "represents 4.0x the range"), (0.25, "represents 0.25x the range")])
def test_a_planted_scale_on_a_relu6_input_fails_where_the_correct_build_passes(cache, tmp_path, onnxruntime_int8,
                                                                                factor, says):
    from benchmarks import precision_floor as pf

    own = onnxruntime_int8["depthwise-keras-onnxruntime-cpu-nhwc-int8"]
    key = Path(own["qdq_check"]["file"]).parent.name   # the cache entry the case ran a copy of
    built = cache / key[:2] / key / "model.onnx"
    tensor = _clip_read_quantizer(built)
    # the correct build: its ReLU6 inputs quantized to the Clip's 0..6, the values past it lost to the Clip
    (pair,) = [p for p in own["qdq_pairs"] if p["tensor"] == tensor]
    assert pair["clipped"] == 0 and pair["finding"] is None, pair
    planted = pf.plant_activation_scale(built, factor, tmp_path / "planted.onnx", tensor=tensor)
    (record,) = run_depthwise(cache, tmp_path, "int8", "onnxruntime", converted=planted).values()
    assert record["status"] == "failed"
    assert record["message"].startswith(f"int8 file: the QuantizeLinear/DequantizeLinear pair of tensor {tensor!r}")
    assert says in record["message"].splitlines()[0], record["message"]
