"""harness/qdq_check.py: each Quantize/Dequantize pair of an int8 QDQ file against the tensor it
stands for, in a case: the planted bugs of benchmarks/precision_floor.py fail it, named by their
pair's tensor; correct builds by other recipes pass with every pair recorded."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from benchmarks import precision_floor as pf
from harness.cache import ArtifactCache
from harness.matrix import build_cases
from harness.options import RunOptions
from harness.qdq_check import PAIR_LIMITS, clipped_share, qdq_pairs, represented_range, wasted_bits, weight_fit
from harness.registry import get_model
from harness.runner import run_case

pytest.importorskip("onnxruntime.quantization")


@pytest.fixture(scope="module")
def cnn(tmp_path_factory):
    """The zoo CNN exported in fp32 and the harness's own int8 build of it (the floor's recipe)."""
    folder = tmp_path_factory.mktemp("qdq-cnn")
    model = pf.export_zoo_model("cnn", folder / "fp32")
    return model, pf.build_floor(model, "cnn", "int8", folder / "floor")


def run_int8(model: Path, converted: Path | None, tmp_path: Path, localize: str = "off") -> dict:
    """The fp32 file as an ONNX original at int8 (the zoo CNN's input spec, so that its feed is the
    zoo's), against `converted` given as --converted, or the harness's own lowering where None."""
    options = RunOptions(models=(str(model),), sources=("onnx",), targets=("onnxruntime",), devices=("cpu",),
                         precisions=("int8",), examples=5, converted=converted, input_specs=get_model("cnn").inputs,
                         cache_dir=tmp_path / "cache", reports_dir=tmp_path / "reports", localize=localize)
    (case,) = build_cases(options)
    return run_case(case, options, ArtifactCache(options.cache_dir)).to_json()


def test_an_activation_scale_x4_fails_naming_its_pair(cnn, tmp_path):
    model, floor = cnn
    record = run_int8(model, pf.plant_activation_scale(floor, 4.0, tmp_path / "x4.onnx"), tmp_path)
    assert record["status"] == "failed"
    assert record["message"].startswith("int8 file: the QuantizeLinear/DequantizeLinear pair of tensor 'relu' "
                                        "(nodes 'relu_QuantizeLinear' / 'relu_DequantizeLinear') represents 4.0x")
    worst = record["qdq_pairs"][0]
    assert worst["tensor"] == "relu" and worst["wasted_bits"] > PAIR_LIMITS["max_wasted_bits"] and worst["finding"]


def test_an_activation_scale_x025_fails_as_clipping(cnn, tmp_path):
    model, floor = cnn
    record = run_int8(model, pf.plant_activation_scale(floor, 0.25, tmp_path / "x025.onnx"), tmp_path)
    assert record["status"] == "failed"
    assert "pair of tensor 'relu'" in record["message"] and "of its values are clipped" in record["message"]
    assert record["qdq_pairs"][0]["wasted_bits"] < PAIR_LIMITS["min_wasted_bits"]


def test_one_weight_channel_scale_x2_fails_naming_the_weight(cnn, tmp_path):
    model, floor = cnn
    record = run_int8(model, pf.plant_weight_channel_scale(floor, 2.0, tmp_path / "channel2.onnx"), tmp_path)
    assert record["status"] == "failed"
    assert record["message"].startswith("int8 file: weight 'inner.features.4.weight_quantized' (DequantizeLinear "
                                        "'inner.features.4.weight_DequantizeLinear') stands 63.")
    assert record["qdq_pairs"][0]["original"] == "inner.features.4.weight"


def test_a_dequantizer_reading_another_zero_point_disagrees(cnn, tmp_path):
    model, floor = cnn
    pairs = qdq_pairs(pf.plant_zero_point(floor, 10, tmp_path / "zp.onnx"), model, pf.calibration_feed("cnn"))
    assert not pairs[0]["pair_agrees"] and "disagree" in pairs[0]["finding"]
    assert all(p["pair_agrees"] for p in qdq_pairs(floor, model, pf.calibration_feed("cnn"))
               if p["kind"] == "activation")


@pytest.mark.parametrize("per_channel, method, symmetric, activations", [
    (False, "MinMax", True, "QInt8"), (True, "Percentile", True, "QInt8"),
    (False, "MinMax", False, "QUInt8")])   # ONNX Runtime's default activations: uint8, a zero point near 128
def test_correct_builds_by_other_recipes_pass_with_their_pairs(cnn, tmp_path, per_channel, method, symmetric,
                                                                 activations):
    model, _ = cnn
    build = pf.build_qdq(model, pf.calibration_feed("cnn"), tmp_path / "build.onnx", per_channel=per_channel,
                         calibrate_method=method, symmetric=symmetric, activation_type=activations)
    record = run_int8(model, build, tmp_path)
    assert record["status"] == "passed", record["message"]
    assert record["qdq_check"]["findings"] == [] and record["qdq_check"]["unchecked"] == 0
    kinds = {p["kind"] for p in record["qdq_pairs"]}
    assert kinds == {"activation", "weight"} and all(p["finding"] is None for p in record["qdq_pairs"])


def test_the_harness_own_int8_lowering_passes(cnn, tmp_path):
    model, _ = cnn
    record = run_int8(model, None, tmp_path)
    assert record["status"] == "passed", record["message"]
    assert record["qdq_check"]["fp32_file"] == str(model) and record["qdq_pairs"]


def test_represented_range_and_wasted_bits():
    assert represented_range(0.5, 0) == (-64.0, 63.5)
    assert represented_range(1.0, -128) == (0.0, 255.0)
    # four times the range the tensor takes: two bits wasted; a quarter of it: -2
    assert wasted_bits((-4.0, 4.0), (-1.0, 1.0)) == pytest.approx(2.0)
    assert wasted_bits((-0.25, 0.25), (-1.0, 1.0)) == pytest.approx(-2.0)
    # a ReLU's output under a symmetric range: the unused negative half is no waste
    assert wasted_bits((-1.0, 1.0), (0.0, 1.0)) == pytest.approx(0.0)
    assert wasted_bits((-1.0, 1.0), (0.0, 0.0)) == math.inf


def test_clipped_share_counts_values_past_half_a_step():
    values = np.array([-2.0, -1.0, 0.0, 1.04, 1.2, 3.0])
    assert clipped_share(values, (-1.0, 1.0), 0.1) == pytest.approx(3 / 6)


def test_weight_fit_in_steps_of_the_scale():
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(4, 6)).astype(np.float32)
    scale = np.abs(weight).max(axis=1) / 127
    quantized = np.round(weight / scale[:, None]).astype(np.int8)
    fit = weight_fit(weight, quantized, scale, None, axis=0)
    # a symmetric range over a channel whose values are not: under a bit
    assert fit["weight_steps"] <= 0.5 + 1e-4 and 0 <= fit["wasted_bits"] < 1
    doubled = scale.copy()
    doubled[1] *= 2
    assert weight_fit(weight, quantized, doubled, None, axis=0)["weight_steps"] > 60


def test_a_weight_renamed_is_found_by_the_node_reading_it_and_one_found_nowhere_is_unchecked(cnn, tmp_path):
    import onnx

    model, floor = cnn
    quantized = onnx.load(str(floor))
    for index, tensor in enumerate(quantized.graph.initializer):   # a tool naming its weights otherwise
        if tensor.name.endswith("_quantized"):
            old, tensor.name = tensor.name, f"w{index}"
            for node in quantized.graph.node:
                node.input[:] = [tensor.name if i == old else i for i in node.input]
    onnx.save(quantized, str(tmp_path / "renamed.onnx"))
    feed = pf.calibration_feed("cnn")
    weights = [p for p in qdq_pairs(tmp_path / "renamed.onnx", model, feed) if p["kind"] == "weight"]
    assert sorted(p["original"] for p in weights) == ["inner.features.0.weight", "inner.features.4.weight"]
    other = onnx.load(str(model))   # an fp32 model whose nodes are named otherwise: nothing to match by
    for node in other.graph.node:
        node.name = "other_" + node.name
    onnx.save(other, str(tmp_path / "other.onnx"))
    unmatched = [p for p in qdq_pairs(tmp_path / "renamed.onnx", tmp_path / "other.onnx", feed) if p["kind"] == "weight"]
    assert unmatched and all("unchecked" in p and "finding" not in p for p in unmatched)


@pytest.fixture(scope="module")
def torch_cache(tmp_path_factory):
    """One artifact cache for the torch cases: the floor's export is made once."""
    return tmp_path_factory.mktemp("qdq-torch-cache")


def _run_torch(converted: Path, cache: Path, tmp_path: Path) -> dict:
    """The zoo CNN's torch original at int8 against `converted` given as --converted."""
    options = RunOptions(models=("cnn",), sources=("torch",), targets=("onnxruntime",), devices=("cpu",),
                         precisions=("int8",), examples=5, converted=converted, cache_dir=cache,
                         reports_dir=tmp_path / "reports", localize="off")
    (case,) = build_cases(options)
    return run_case(case, options, ArtifactCache(options.cache_dir)).to_json()


def test_a_converted_qdq_file_of_a_torch_original_is_judged_against_the_floors_fp32_export(cnn, torch_cache, tmp_path):
    # the QDQ file is built from the harness's own torch->onnx export, as the floor's path exports it:
    # its tensors match the floor's fp32 file by name, and the scale x4 (which the outputs hide) fails
    _, floor = cnn
    record = _run_torch(pf.plant_activation_scale(floor, 4.0, tmp_path / "x4.onnx"), torch_cache, tmp_path)
    assert record["status"] == "failed"
    assert record["message"].startswith("int8 file: the QuantizeLinear/DequantizeLinear pair of tensor 'relu' "
                                        "(nodes 'relu_QuantizeLinear' / 'relu_DequantizeLinear') represents 4.0x")
    check = record["qdq_check"]
    assert check["checked"] and check["unchecked"] == 0
    assert check["fp32_from"] == "the floor's fp32 export (tensors matched by name)"
    assert record["qdq_pairs"][0]["tensor"] == "relu"


def test_the_correct_qdq_file_of_a_torch_original_passes_with_its_pairs_checked(cnn, torch_cache, tmp_path):
    _, floor = cnn
    record = _run_torch(floor, torch_cache, tmp_path)
    assert record["status"] == "passed", record["message"]
    assert record["qdq_check"]["checked"] and record["qdq_check"]["findings"] == []
    assert record["qdq_check"]["unchecked"] == 0
    assert {p["kind"] for p in record["qdq_pairs"]} == {"activation", "weight"}
