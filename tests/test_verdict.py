"""The verdict beyond the elementwise tolerance: the model's own float32 noise,
inconclusive checks, messages that lead to the fix (declared shapes, one
runtime error with its count), and what a case says when it runs out of
memory or lacks a package."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from harness.compare import compare_outputs
from harness.engine import _noise_verdict
from harness.specs import Tolerance
from tests import planted

CONSTANT_MODEL_FILE = '''
import torch
from harness import InputSpec, register_model

class Saturated(torch.nn.Module):
    """A classifier whose softmax is one-hot whatever the input: its bias dwarfs x."""
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 3)
        with torch.no_grad():
            self.linear.weight.mul_(1e-3)
            self.linear.bias.copy_(torch.tensor([60.0, 0.0, -60.0]))
    def forward(self, x):
        return torch.softmax(self.linear(x), dim=-1)

class Informative(Saturated):
    def __init__(self):
        super().__init__()
        with torch.no_grad():
            self.linear.bias.zero_()
            self.linear.weight.mul_(1e3)

register_model("saturated", inputs=[InputSpec("x", ("N", 4), dims={"N": (1, 3)}, layout="NC")],
               outputs=["probs"], torch=Saturated)
register_model("informative", inputs=[InputSpec("x", ("N", 4), dims={"N": (1, 3)}, layout="NC")],
               outputs=["probs"], torch=Informative)
'''

OOM_MODEL_FILE = '''
import torch
from harness import InputSpec, register_model

class HungryAtLargeBatch(torch.nn.Module):
    def forward(self, x):
        if x.shape[0] > 2:
            raise MemoryError("cannot allocate 64 GiB")
        return x * 2

register_model("hungry", inputs=[InputSpec("x", ("N", 5), dims={"N": (1, 4)}, layout="NC")],
               outputs=["y"], torch=HungryAtLargeBatch)
'''

REQUIRES_MODEL_FILE = '''
import torch
from harness import InputSpec, register_model

register_model("needs_a_package", inputs=[InputSpec("x", ("N", 3), dims={"N": (1, 2)})], outputs=["y"],
               torch=lambda: torch.nn.Linear(3, 1), requires=("harness_no_such_package",))
'''


# --- the model's own noise -----------------------------------------------------------


def _out_of_tolerance(multiple: float = 16.0):
    ref = np.linspace(-1, 1, 50, dtype=np.float32)
    got = ref + np.float32(1e-4)
    comparison = compare_outputs("y", ref, got, Tolerance(atol=1e-7, rtol=1e-5, atol_by_max=1e-5,
                                                          noise_multiple=multiple))
    assert not comparison.passed and comparison.error_ratio > 1
    return comparison


def test_error_within_the_noise_multiple_passes():
    comparison = _out_of_tolerance()
    _noise_verdict(comparison, {"noise_max_abs": 2e-5, "error_over_noise": 5.0})
    assert comparison.passed and comparison.accepted_by == "noise"
    assert "5x the original's own float32 error" in comparison.message and "allowed 16x" in comparison.message


def test_error_beyond_the_noise_multiple_fails_and_says_both():
    comparison = _out_of_tolerance()
    _noise_verdict(comparison, {"noise_max_abs": 2e-7, "error_over_noise": 500.0})
    assert not comparison.passed and comparison.accepted_by is None
    assert "out of tolerance" in comparison.message and "500x the original's own float32 error" in comparison.message


def test_noise_multiple_zero_turns_it_off():
    comparison = _out_of_tolerance(multiple=0.0)
    _noise_verdict(comparison, {"noise_max_abs": 1e-3, "error_over_noise": 0.1})
    assert not comparison.passed


def test_noise_never_excuses_a_nan_on_one_side():
    ref = np.array([1.0, 2.0, 3.0], np.float32)
    comparison = compare_outputs("y", ref, np.array([1.0, np.nan, 3.0], np.float32), Tolerance(noise_multiple=16.0))
    _noise_verdict(comparison, {"noise_max_abs": 1.0, "error_over_noise": 0.0})
    assert not comparison.passed


def test_noise_rescues_an_elementwise_failure_never_a_threshold_missed():
    """The noise multiple speaks of float32 rounding; a cosine, SNR or top-k threshold
    is set for errors far beyond it, so missing one is never excused."""
    rescued = _out_of_tolerance()
    assert not rescued.failed_thresholds
    _noise_verdict(rescued, {"noise_max_abs": 2e-5, "error_over_noise": 5.0})
    assert rescued.passed
    ref = np.linspace(-1, 1, 50, dtype=np.float32)
    both = compare_outputs("y", ref, ref + np.float32(1e-4), Tolerance(atol=1e-7, rtol=1e-5, noise_multiple=16.0,
                                                                       min_snr_db=90.0))
    assert not both.passed and both.failed_thresholds == ["min_snr_db"] and both.mismatch_fraction > 0
    _noise_verdict(both, {"noise_max_abs": 2e-5, "error_over_noise": 5.0})
    assert not both.passed and both.accepted_by is None and "min_snr_db 90 dB" in both.message
    threshold_only = compare_outputs("y", ref, 2 * ref, Tolerance(atol_by_max=1.0, noise_multiple=16.0,
                                                                  min_cosine=0.9, min_snr_db=20.0))
    assert not threshold_only.passed and threshold_only.failed_thresholds == ["min_snr_db"]
    _noise_verdict(threshold_only, {"noise_max_abs": 1.0, "error_over_noise": 0.5})
    assert not threshold_only.passed and threshold_only.accepted_by is None


FLOAT32_ONLY_MODEL_FILE = '''
import torch
from harness import InputSpec, register_model

class Tripled(torch.nn.Module):
    def forward(self, x):
        return x * 3

class Float32Only(Tripled):
    """A kernel with no float64 version (a fused custom op's): its float64 twin raises."""
    def forward(self, x):
        if x.dtype == torch.float64:
            raise RuntimeError("no float64 kernel for this op")
        return x * 3

register_model("tripled", inputs=[InputSpec("x", ("N", 4), dims={"N": (1, 2)})], outputs=["y"], torch=Tripled)
register_model("float32_only", inputs=[InputSpec("x", ("N", 4), dims={"N": (1, 2)})], outputs=["y"],
               torch=Float32Only)
'''


@pytest.fixture(scope="module")
def float32_only_models(tmp_path_factory):
    path = tmp_path_factory.mktemp("float32_only") / "float32_only.py"
    path.write_text(FLOAT32_ONLY_MODEL_FILE)
    return path


@pytest.mark.parametrize("model", ["tripled", "float32_only"])
def test_a_float64_twin_that_raises_is_recorded_as_the_noise_floor_unavailable(float32_only_models, tmp_path, model):
    """Once an empty noise record, as if the floor had never been asked for."""
    from harness.cache import ArtifactCache
    from harness.engine import prepare_case, run_example
    from harness.inputs import example_recipe, make_inputs
    from harness.matrix import build_cases
    from harness.options import RunOptions

    options = RunOptions(models=(str(float32_only_models),), sources=("torch",), targets=("onnxruntime",), devices=("cpu",),
                         cache_dir=tmp_path / "cache", reports_dir=tmp_path / "reports", localize="off")
    [case] = [c for c in build_cases(options) if c.model == model]
    assert case.error is None, case.error
    prepared = prepare_case(case, options, ArtifactCache(options.cache_dir))
    outcome = run_example(prepared, make_inputs(case.spec, example_recipe(case.spec)), noise_wanted=lambda c: True)
    assert outcome.passed
    if model == "tripled":
        assert set(outcome.noise["y"]) == {"noise_max_abs", "noise_normalized", "error_over_noise"}
    else:
        assert outcome.noise == {"y": {"unavailable": "the original's float64 twin raised on these inputs: "
                                                      "RuntimeError: no float64 kernel for this op"}}


CLASSIFIER_MODEL_FILE = '''
import torch
from harness import InputSpec, OutputSpec, register_model

register_model("classifier", inputs=[InputSpec("x", ("N", 6), dims={"N": (2, 4)}, layout="NC")],
               outputs=[OutputSpec("logits", class_axis=-1, top_k=3)], torch=lambda: torch.nn.Linear(6, 8))
'''


@pytest.mark.slow  # 9 s; tests/test_compare.py's class-axis tests and test_option_effects' top-k test keep it in make test
def test_the_class_axis_of_a_registered_output_reaches_the_verdict(run_parity, parity_dir):
    (parity_dir / "classifier.py").write_text(CLASSIFIER_MODEL_FILE)
    run = run_parity("--model=classifier.py", "--min-top1=1", "--min-topk-overlap=1", "--min-snr-db=400")
    logits = run.single["outputs"]["logits"]
    assert (logits["top1_agreement"], logits["topk_overlap"], logits["top_k"]) == (1.0, 1.0, 3)
    assert logits["failed_thresholds"] == ["min_snr_db"]   # a float32 conversion's SNR is far below 400 dB
    assert run.single["status"] == "failed" and "< min_snr_db 400 dB" in run.single["message"]


@pytest.mark.slow  # tests/test_planted_bugs.py's weight test fails a perturbed weight in make test
def test_planted_weight_bug_fails_with_the_noise_view_too(run_parity, tmp_path):
    """The perturbed CNN of test_planted_bugs: its error is hundreds of times
    the model's own noise, far beyond the noise multiple."""
    bad = planted.perturbed_weight_onnx("cnn", tmp_path)
    run = run_parity("--model=cnn", f"--converted={bad}", examples=6)
    record = run.single
    assert record["status"] == "failed"
    out = record["outputs"]["features"]
    assert out["noise"]["error_over_noise"] > 100 and out["accepted_by"] is None
    assert "the original's own float32 error (allowed 16x)" in record["message"]


def _recorded(noise_max_abs: float):
    from harness.engine import ExampleOutcome
    from harness.explore import Exploration
    from harness.inputs import InputRecipe

    comparison = _out_of_tolerance()  # max|ref| 1, error 1e-4
    noise = {"noise_max_abs": noise_max_abs, "error_over_noise": comparison.max_abs / noise_max_abs}
    _noise_verdict(comparison, noise)
    assert comparison.passed and comparison.accepted_by == "noise"
    exploration = Exploration(sensitivity={"y": {"inconclusive": False}})
    exploration.record(InputRecipe({}, {}, 0.0, 0), {}, ExampleOutcome([comparison], {"y": noise}))
    return exploration


def test_pass_by_a_noise_multiple_that_allows_almost_any_error_is_inconclusive():
    """float32 itself 5% off: 16x that allows 80% of max|ref|, which no check can call a pass."""
    exploration = _recorded(noise_max_abs=0.05)
    assert exploration.inconclusive == ["y"] and exploration.noise_allowance["y"] == pytest.approx(0.8)


def test_pass_by_a_noise_multiple_of_ordinary_float32_error_is_conclusive():
    exploration = _recorded(noise_max_abs=1e-5)
    assert exploration.inconclusive == []


# --- inconclusive --------------------------------------------------------------------


@pytest.fixture(scope="module")
def constant_models(tmp_path_factory):
    path = tmp_path_factory.mktemp("constant") / "constant_models.py"
    path.write_text(CONSTANT_MODEL_FILE)
    return path


def test_output_that_ignores_its_input_is_inconclusive(run_parity, constant_models):
    run = run_parity(f"--model={constant_models}", "-k", "saturated", examples=5)
    record = run.single
    assert record["status"] == "inconclusive"
    assert record["outputs"]["probs"]["sensitivity"]["inconclusive"] is True
    assert "does not depend on the input" in record["message"] and "--parity-strict" in record["message"]
    assert run.result.ret == 0
    assert "inconclusive" in run.output and "ParityWarning" in run.output


def test_parity_strict_fails_an_inconclusive_case(run_parity, constant_models):
    run = run_parity(f"--model={constant_models}", "-k", "saturated", "--parity-strict", examples=5)
    run.result.assert_outcomes(failed=1)
    assert run.single["status"] == "inconclusive"


def test_output_that_depends_on_its_input_is_conclusive(run_parity, constant_models):
    run = run_parity(f"--model={constant_models}", "-k", "informative", "--parity-strict", examples=5)
    run.result.assert_outcomes(passed=1)
    sensitivity = run.single["outputs"]["probs"]["sensitivity"]
    assert sensitivity["inconclusive"] is False and sensitivity["ratio"] > 100


# --- messages that lead to the fix -----------------------------------------------------


@pytest.fixture(scope="module")
def cnn_file(tmp_path_factory):
    return planted.export_zoo("cnn", tmp_path_factory.mktemp("cnn") / "cnn")


def test_file_laid_out_otherwise_than_declared_says_which_layout(run_parity, cnn_file):
    """An NCHW file declared NHWC: the harness feeds NHWC data, every example
    raises; the message gives the runtime's error once with its count, and the
    fix found from the file's declared shape."""
    run = run_parity("--model=cnn", f"--converted={cnn_file}", "--converted-layouts=image:NHWC", examples=10)
    record = run.single
    assert record["status"] == "failed"
    assert "--converted-layouts image:NCHW" in record["message"]
    assert f"raised on {record['examples'] + record['shrink_steps']} of " in record["message"]
    assert record["message"].count("INVALID_ARGUMENT") == 1
    assert record["worst_error_ratio"] is None  # no ratio from examples that did not raise
    assert record["warnings"][0]["kind"] == "layout"
    failure_text = run.output[run.output.index("FAILURES"):run.output.index("== parity ==")]
    assert len(failure_text.splitlines()) < 20


def test_fixed_batch_file_is_flagged_before_the_run_with_the_fix(run_parity, cnn_file, tmp_path):
    model = onnx.load(str(cnn_file))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1  # batch fixed to 1
    fixed = tmp_path / "cnn_batch1.onnx"
    onnx.save(model, str(fixed))
    run = run_parity("--model=cnn", f"--converted={fixed}", examples=10)
    record = run.single
    (warning,) = record["warnings"]
    assert warning["kind"] == "fixed_dim"
    assert "axis 0 (N) is fixed to 1" in warning["message"] and "N=1..1" in warning["message"]
    assert "dynamic batch" in warning["message"]
    assert record["status"] == "failed" and warning["message"] in record["message"]  # and the consequence shows


def test_file_whose_shapes_fit_the_spec_has_no_warning(run_parity, cnn_file):
    run = run_parity("--model=cnn", f"--converted={cnn_file}", examples=3)
    assert run.single["status"] == "passed" and "warnings" not in run.single


def test_running_out_of_memory_names_the_shape(run_parity, tmp_path):
    path = tmp_path / "hungry.py"
    path.write_text(OOM_MODEL_FILE)
    run = run_parity(f"--model={path}", examples=10)
    record = run.single
    assert record["status"] == "error" and record["stage"] == "inputs"
    assert "ran out of memory on cpu at input shapes x: float32[" in record["message"]
    assert "narrow the input spec" in record["message"]


def test_missing_package_is_a_skip_that_names_it(run_parity, tmp_path):
    path = tmp_path / "needs.py"
    path.write_text(REQUIRES_MODEL_FILE)
    run = run_parity(f"--model={path}")
    run.result.assert_outcomes(skipped=1)
    assert "harness_no_such_package cannot be imported here" in run.single["message"]


def test_unknown_tier_is_a_usage_error(run_parity):
    run = run_parity("--tier=huge")
    assert run.result.ret == pytest.ExitCode.USAGE_ERROR
    assert "--tier: unknown value 'huge'" in "\n".join(run.result.errlines)


# --- NaN and Inf ------------------------------------------------------------------------

NAN_SHAPE = [2, 10]


def _elementwise_file(path, nodes, constants=()):
    """y from x ([2, 10] float) through `nodes`, with `constants` as initializers."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, NAN_SHAPE)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, NAN_SHAPE)],
                              initializer=[onnx.numpy_helper.from_array(np.asarray(v, np.float32), name)
                                           for name, v in constants])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def _plus(path, addend):
    """y = x + addend (a [2, 10] constant: NaN where it is NaN)."""
    from onnx import helper

    return _elementwise_file(path, [helper.make_node("Add", ["x", "c"], ["y"])], [("c", addend)])


def test_a_converted_file_computing_nan_where_the_original_does_not_fails(tmp_path, run_converted):
    from onnx import helper

    # x + 0 * sqrt(x): x where x >= 0, NaN where x < 0.
    converted = _elementwise_file(tmp_path / "converted.onnx", [
        helper.make_node("Sqrt", ["x"], ["root"]), helper.make_node("Mul", ["root", "zero"], ["nan_or_zero"]),
        helper.make_node("Add", ["x", "nan_or_zero"], ["y"])], [("zero", 0.0)])
    record = run_converted(_plus(tmp_path / "model.onnx", np.zeros(NAN_SHAPE)), converted)
    assert record["status"] == "failed"
    assert "NaN/Inf on one side only" in record["message"] and "no tolerance passes that" in record["message"]


def test_nan_at_the_same_positions_of_a_partly_nan_output_passes_with_its_count(tmp_path, run_converted):
    addend = np.zeros(NAN_SHAPE)
    addend[1, 3] = np.nan   # one element in 20: below the share that redraws an example
    record = run_converted(_plus(tmp_path / "model.onnx", addend), _plus(tmp_path / "converted.onnx", addend))
    assert record["status"] == "passed", record["message"]
    assert record["outputs"]["y"]["nonfinite"] == {"examples": record["examples"], "most_nan": 1, "most_inf": 0}
    moved = np.zeros(NAN_SHAPE)
    moved[0, 3] = np.nan
    record = run_converted(_plus(tmp_path / "model.onnx", addend), _plus(tmp_path / "moved.onnx", moved))
    assert record["status"] == "failed" and "NaN/Inf on one side only" in record["message"]


def test_an_output_all_nan_on_both_sides_is_inconclusive_never_a_pass(tmp_path, run_converted):
    everywhere = np.full(NAN_SHAPE, np.nan)
    record = run_converted(_plus(tmp_path / "model.onnx", everywhere), _plus(tmp_path / "converted.onnx", everywhere))
    assert record["status"] == "inconclusive"
    assert record["message"].startswith("passed, but inconclusive: y was NaN/Inf in every element on both sides in "
                                        f"all {record['examples']} examples: no finite value was compared")
    assert record["examples"] >= 4   # the corners at least: not a case that ran nothing


def test_draws_whose_original_is_mostly_nan_are_redrawn_and_the_case_says_so(tmp_path, run_converted):
    from onnx import helper

    # NaN where x < 0.9: nearly every drawn example outside the domain this model means.
    nodes = [helper.make_node("Less", ["x", "edge"], ["low"]), helper.make_node("Where", ["low", "nan", "x"], ["y"])]
    constants = [("edge", 0.9), ("nan", np.nan)]
    record = run_converted(_elementwise_file(tmp_path / "model.onnx", nodes, constants),
                           _elementwise_file(tmp_path / "converted.onnx", nodes, constants), examples=10)
    assert record["status"] == "inconclusive", record["message"]
    assert "drawn examples were redrawn because the original gave NaN/Inf in more than 10% of its elements" in \
        record["message"]


# --- shrinking's time budget ---------------------------------------------------------------


def test_shrinking_stops_at_its_time_budget_and_keeps_a_real_failure(tmp_path, run_converted, monkeypatch):
    """A converted file off by 0.01 where x > 0.5: hypothesis shrinks a failure toward the
    smallest such value for many steps, unless the budget stops it after a step or two;
    either way the failure kept replays as a failure."""
    from onnx import TensorProto, helper

    from harness import explore
    from harness.results import load_failure

    original = _plus(tmp_path / "model.onnx", np.zeros(NAN_SHAPE))
    converted = _elementwise_file(tmp_path / "converted.onnx", [
        helper.make_node("Greater", ["x", "half"], ["above"]),
        helper.make_node("Cast", ["above"], ["above_f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["above_f", "step"], ["off"]), helper.make_node("Add", ["x", "off"], ["y"])],
        [("half", 0.5), ("step", 0.01)])
    record = run_converted(original, converted)
    assert record["status"] == "failed" and record["shrink_steps"] > 2 and "shrink_cut_s" not in record
    monkeypatch.setattr(explore, "SHRINK_SECONDS", 0.0)
    cut = run_converted(original, converted)
    assert cut["status"] == "failed" and cut["shrink_steps"] <= 2 and cut["shrink_cut_s"] == 0.0
    _, inputs = load_failure(tmp_path / "reports" / cut["failure"]["npz"].split("reports/", 1)[1])
    assert (inputs["x"] > 0.5).any()   # a failing input: the converted file differs only there
