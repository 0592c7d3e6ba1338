"""Corners first: bugs that show only at large magnitudes, with a batch above 1,
or at the largest shape are caught within the first few examples, each
beside its correct conversion that passes; and the counts say how many
examples were drawn and how many were shrinking steps."""

from __future__ import annotations

import numpy as np
import pytest

from harness.inputs import corner_recipes
from harness.registry import load_model_file
from harness.specs import InputSpec, ModelSpec, OutputSpec
from tests import planted


@pytest.fixture(scope="module")
def corner_models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corners")
    path = folder / "corner_models.py"
    path.write_text(planted.CORNER_MODEL_FILE)
    specs = {spec.name: spec for spec in load_model_file(path)}
    files = {}
    for name, (_, buggy) in planted.CORNER_BUGS.items():
        files[f"{name}-correct"] = planted.export(specs[name].builders["torch"](), specs[name], folder / f"{name}-ok")
        files[f"{name}-buggy"] = planted.export(buggy(), specs[name], folder / f"{name}-bug")
    return path, files


@pytest.mark.parametrize("name", sorted(planted.CORNER_BUGS))
def test_correct_conversion_passes(run_parity, corner_models, name):
    path, files = corner_models
    run = run_parity(f"--model={path}", f"--converted={files[name + '-correct']}", "-k", name, examples=10)
    (record,) = [r for r in run.cases.values() if r["model"] == name]
    assert record["status"] == "passed", record["message"]
    assert record["examples"] == 10 and record["shrink_steps"] == 0 and record["first_failure_at"] is None


@pytest.mark.parametrize("name", sorted(planted.CORNER_BUGS))
def test_bug_at_a_corner_is_caught_in_the_first_examples(run_parity, corner_models, name):
    """dev's budget (10 examples): the corners catch each bug within the first 4."""
    path, files = corner_models
    run = run_parity(f"--model={path}", f"--converted={files[name + '-buggy']}", "-k", name, examples=10)
    (record,) = [r for r in run.cases.values() if r["model"] == name]
    assert record["status"] == "failed", record["message"]
    assert 1 <= record["first_failure_at"] <= len(corner_recipes(load_model_file(path)[0]))
    assert record["first_failure_at"] <= 4


def test_examples_count_draws_and_shrinking_apart(run_parity, corner_models):
    """A failure hypothesis shrinks: `examples` stays within the budget; the
    calls made while shrinking are counted in `shrink_steps`."""
    path, files = corner_models
    run = run_parity(f"--model={path}", f"--converted={files['per_sample-buggy']}", "-k", "per_sample",
                     "--no-parity-corners", examples=10)
    (record,) = run.cases.values()
    assert record["status"] == "failed"
    assert record["corner_examples"] == 0
    assert record["examples"] <= 10 and record["shrink_steps"] >= 1
    assert record["failure"]["corner"] is None and "shrunk failing input" in record["message"]
    summary = run.output[run.output.index("== parity =="):]
    assert f"{record['examples']} +{record['shrink_steps']}" in summary


def test_corner_recipes_cover_the_bounds_and_come_first(corner_models):
    path, _ = corner_models
    spec = {s.name: s for s in load_model_file(path)}["positions"]
    corners = dict(corner_recipes(spec))
    assert corners["smallest shapes"].dims == {"N": 1, "T": 4}
    assert corners["largest shapes"].dims == {"N": 2, "T": planted.MAX_T}
    extremes = corners["large magnitudes and the domain's ends"]
    assert extremes.dims["N"] >= 2 and extremes.special_fraction > 0
    assert set(extremes.distributions.values()) == {"large"}
    assert set(corners["tiny magnitudes"].distributions.values()) == {"tiny"}


def _spec_with_masks():
    dims = {"N": (1, 4), "T": (2, 8)}
    return ModelSpec("masks", (InputSpec("mask", ("N", "T"), dims=dims, dtype="int64", domain=(0, 1)),
                               InputSpec("padding", ("N", "T"), dims=dims, dtype="int64", kind="padding_mask"),
                               InputSpec("flag", ("N",), dims=dims, dtype="bool"),
                               InputSpec("x", ("N", 3), dims=dims, dtype="float16", domain=(-1, 2))),
                     (OutputSpec("y"),))


def test_corners_hold_every_input_at_each_end_of_its_domain():
    """Six corners: the four of shapes and magnitudes, then every integer and bool input at its low end and
    at its high end (a 0/1 mask all zeros; a padding mask keeps one token a row, its shortest legal value);
    float inputs drawn beside them, never constant (a normalization over a constant tensor is ill-conditioned)."""
    from harness.inputs import make_inputs

    spec = _spec_with_masks()
    corners = dict(corner_recipes(spec))
    assert len(corners) == 6
    low = make_inputs(spec, corners["every integer input at its low end"])
    high = make_inputs(spec, corners["every integer input at its high end"])
    assert not low["mask"].any() and high["mask"].all()
    assert (low["padding"].sum(axis=1) == 1).all() and high["padding"].all()
    assert not low["flag"].any() and high["flag"].all()
    assert len(np.unique(low["x"])) > 1 and len(np.unique(high["x"])) > 1 and low["x"].dtype == "float16"


def test_a_spec_of_float_inputs_only_gets_no_end_corners():
    spec = ModelSpec("floats", (InputSpec("x", ("N", 3), dims={"N": (1, 4)}),), (OutputSpec("y"),))
    assert [name for name, _ in corner_recipes(spec)] == [
        "smallest shapes", "largest shapes", "large magnitudes and the domain's ends", "tiny magnitudes"]


def test_a_case_held_to_its_calibration_feed_gets_no_constant_corners():
    assert [name for name, _ in corner_recipes(_spec_with_masks(), ("uniform",))] == [
        "smallest shapes", "largest shapes", "large magnitudes and the domain's ends", "tiny magnitudes"]


def _masked_softmax(path, bug: bool):
    """softmax over x where the 0/1 mask is set; the planted bug zeroes a row whose mask is all zeros
    (as an exported graph that skips fully masked rows does), which 0/1 draws over 16 steps almost never make."""
    import onnx
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Cast", ["mask"], ["keep"], to=TensorProto.BOOL),
             helper.make_node("Where", ["keep", "x", "floor"], ["masked"]),
             helper.make_node("Softmax", ["masked"], ["y" if not bug else "soft"], axis=1)]
    if bug:
        nodes += [helper.make_node("ReduceMax", ["mask"], ["any"], axes=[1], keepdims=1),
                  helper.make_node("Cast", ["any"], ["anyf"], to=TensorProto.FLOAT),
                  helper.make_node("Mul", ["soft", "anyf"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16]),
                                           helper.make_tensor_value_info("mask", TensorProto.INT64, ["N", 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 16])],
                              [helper.make_tensor("floor", TensorProto.FLOAT, [], [-1e4])])
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.mark.parametrize("bug", [False, True])
def test_an_all_zero_mask_row_is_a_corner_that_catches_its_bug(tmp_path, bug):
    """An ONNX file whose --converted twin differs only on a row of no tokens: the mask's domain given by
    --input-spec (the file cannot say 0/1), the low-end corner finds it within dev's 10 examples."""
    from harness import matrix, runner
    from harness.cache import ArtifactCache
    from harness.options import RunOptions, parse_input_spec

    original = _masked_softmax(tmp_path / "model.onnx", bug=False)
    converted = _masked_softmax(tmp_path / "converted" / "model.onnx", bug=bug)
    options = RunOptions(models=(str(original),), sources=("onnx",), targets=("onnxruntime",), devices=("cpu",),
                         input_specs=(parse_input_spec("mask:int64[N=1..3,16]::0..1"),), converted=converted,
                         use_cache=False, examples=10, reports_dir=tmp_path / "reports")
    [case] = matrix.build_cases(options)
    record = runner.run_case(case, options, ArtifactCache(tmp_path / "cache")).to_json()
    assert record["status"] == ("failed" if bug else "passed"), record["message"]
    if bug:
        assert record["failure"]["corner"] == "every integer input at its low end"
