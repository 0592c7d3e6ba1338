"""Random operators found in an ONNX graph (random_ops.py), and such a case
compared by distribution, never elementwise (explore.py, compare.compare_distributions)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from harness.cache import ArtifactCache
from harness.matrix import build_cases
from harness.options import RunOptions
from harness.random_ops import random_ops
from harness.registry import get_model, load_model_file
from harness.runner import run_case
from tests.planted import export

SHAPE = [2, 3, 40]


def _save(nodes: list, path: Path, initializers: tuple = (), opset: int = 17) -> Path:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, SHAPE)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, SHAPE)],
                              initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def uniform_noise(path: Path, high: float = 1.0, seed: float | None = None) -> Path:
    """y = x + U(0, high), drawn anew on every run (or from `seed`)."""
    attributes = {"low": 0.0, "high": high, **({"seed": seed} if seed is not None else {})}
    return _save([helper.make_node("RandomUniformLike", ["x"], ["u"], **attributes),
                  helper.make_node("Add", ["x", "u"], ["y"])], path)


def fixed_offset(path: Path) -> Path:
    """y = x + 0.5: uniform_noise's mean, its randomness lost."""
    return _save([helper.make_node("Add", ["x", "half"], ["y"])], path,
                 [helper.make_tensor("half", TensorProto.FLOAT, [], [0.5])])


def dropout(path: Path, training: bool | None) -> Path:
    inputs, initializers = ["x"], []
    if training is not None:
        inputs += ["ratio", "training"]
        initializers = [helper.make_tensor("ratio", TensorProto.FLOAT, [], [0.5]),
                        helper.make_tensor("training", TensorProto.BOOL, [], [training])]
    return _save([helper.make_node("Dropout", inputs, ["y"])], path, initializers)


def test_random_operators_are_found_in_the_graph_and_its_subgraphs(tmp_path):
    assert random_ops(uniform_noise(tmp_path / "u.onnx")) == ("RandomUniformLike",)
    assert random_ops(dropout(tmp_path / "train.onnx", True)) == ("Dropout(training_mode)",)
    branch = helper.make_graph([helper.make_node("Bernoulli", ["x"], ["b"])], "then", [],
                               [helper.make_tensor_value_info("b", TensorProto.FLOAT, SHAPE)])
    other = helper.make_graph([helper.make_node("Identity", ["x"], ["i"])], "else", [],
                              [helper.make_tensor_value_info("i", TensorProto.FLOAT, SHAPE)])
    cond = helper.make_tensor("cond", TensorProto.BOOL, [], [True])
    nested = _save([helper.make_node("If", ["cond"], ["y"], then_branch=branch, else_branch=other)],
                   tmp_path / "if.onnx", [cond])
    assert random_ops(nested) == ("Bernoulli",)


def test_dropout_in_inference_mode_is_not_random(tmp_path):
    assert random_ops(dropout(tmp_path / "eval.onnx", False)) == ()
    assert random_ops(dropout(tmp_path / "plain.onnx", None)) == ()


def test_a_random_op_drawing_from_a_wider_range_fails_by_distribution(tmp_path, run_converted):
    record = run_converted(uniform_noise(tmp_path / "model.onnx"), uniform_noise(tmp_path / "wide.onnx", high=2.0))
    assert record["status"] == "failed" and record["random_ops"] == ["RandomUniformLike"]
    assert "y: the converted model draws from another distribution than the original over 20 draws" in \
        record["message"]
    assert record["outputs"]["y"]["extra"]["distribution"]["converted"]["max"] > 2.0


def test_a_random_op_drawing_from_the_same_range_passes_by_distribution(tmp_path, run_converted):
    record = run_converted(uniform_noise(tmp_path / "model.onnx"), uniform_noise(tmp_path / "same.onnx"))
    assert record["status"] == "passed", record["message"]
    assert record["provenance"]["random_ops_found"] == [
        {"file": str(tmp_path / name), "ops": ["RandomUniformLike"]} for name in ("model.onnx", "same.onnx")]
    assert record["message"].startswith("random operators in the graph (RandomUniformLike): compared by distribution")
    assert record["outputs"]["y"]["accepted_by"] == "distribution" and record["examples"] == 20


def test_sessions_drawing_the_same_seeded_numbers_are_not_an_elementwise_pass(tmp_path, run_converted):
    record = run_converted(uniform_noise(tmp_path / "model.onnx", seed=3.0),
                           uniform_noise(tmp_path / "seeded.onnx", seed=3.0))
    assert record["random_ops"] == ["RandomUniformLike"]
    assert record["outputs"]["y"]["accepted_by"] == "distribution"
    assert np.isfinite(record["outputs"]["y"]["extra"]["distribution"]["original"]["mean"])


def test_a_converted_file_that_lost_the_randomness_fails_by_its_spread_over_draws(tmp_path, run_converted):
    record = run_converted(uniform_noise(tmp_path / "model.onnx"), fixed_offset(tmp_path / "fixed.onnx"))
    assert record["status"] == "failed" and record["random_ops"] == ["RandomUniformLike"]
    assert "y: the converted model gives the same values on every draw where the original's vary (per-position " \
           "spread over 20 draws of the same inputs: original 0.29, converted 0): it lost the randomness" in \
        record["message"]
    assert record["outputs"]["y"]["extra"]["distribution"]["ratios"]["mean"] < 1   # pooled, it looked alike


def test_a_converted_file_drawing_anew_states_its_spread_over_draws_and_passes(tmp_path, run_converted):
    record = run_converted(uniform_noise(tmp_path / "model.onnx"), uniform_noise(tmp_path / "same.onnx"))
    assert record["status"] == "passed", record["message"]
    stated = record["outputs"]["y"]["extra"]["distribution"]
    assert stated["converted"]["draw_variance"] > 0 and stated["ratios"]["draw_variance"] < 1
    assert 0 < stated["bounds"]["draw_variance"] < stated["original"]["draw_variance"]


# --- random operators outside an ONNX original: found on the conversion path, or by running the original twice ---

RANDOM_TORCH_MODEL_FILE = '''
import torch
from harness import InputSpec, register_model

class Noisy(torch.nn.Module):
    """y = x + U(0, 1): torch.rand_like, which the exporter writes as RandomUniformLike."""
    def forward(self, x):
        return x + torch.rand_like(x)

class Affine(torch.nn.Module):
    def forward(self, x):
        return 2 * x + 1

SPEC = dict(inputs=[InputSpec("x", ("N", 40), dims={"N": (1, 3)}, layout="NC")], outputs=["y"])
register_model("noisy", torch=Noisy, **SPEC)
register_model("affine", torch=Affine, **SPEC)
'''


class WiderNoise(torch.nn.Module):
    """The planted bug: y = x + 2 U(0, 1), a mean and a range off."""

    def forward(self, x):
        return x + 2 * torch.rand_like(x)


@pytest.fixture(scope="module")
def torch_models(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("random-models") / "random_models.py"
    path.write_text(RANDOM_TORCH_MODEL_FILE)
    return path


@pytest.fixture(scope="module")
def run_torch(torch_models, tmp_path_factory):
    """One torch case of `torch_models` in this process; returns its record and options."""
    folder = tmp_path_factory.mktemp("random-runs")

    def run(model: str, target: str = "onnxruntime", converted: Path | None = None, path: str = "shortest"
            ) -> tuple[dict, RunOptions]:
        options = RunOptions(models=(str(torch_models),), sources=("torch",), targets=(target,), devices=("cpu",),
                             examples=5, converted=converted, path=path, cache_dir=folder / "cache",
                             reports_dir=folder / "reports", localize="off")
        (case,) = [c for c in build_cases(options) if c.model == model]
        return run_case(case, options, ArtifactCache(options.cache_dir)).to_json(), options

    return run


def wider_noise_onnx(torch_models: Path, out: Path) -> Path:
    """WiderNoise as a user's converted ONNX file (torch's TorchScript-based exporter: the quicker one)."""
    load_model_file(torch_models)
    return export(WiderNoise(), get_model("noisy"), out, exporter="torchscript")


def test_a_random_op_in_a_torch_forward_is_found_in_the_exported_file_and_compared_by_distribution(run_torch):
    record, _ = run_torch("noisy")
    assert record["status"] == "passed", record["message"]
    assert record["message"].startswith("random operators in the graph (RandomUniformLike): compared by distribution")
    assert record["outputs"]["y"]["accepted_by"] == "distribution" and record["examples"] == 20
    (found,) = record["provenance"]["random_ops_found"]
    assert found["ops"] == ["RandomUniformLike"] and found["file"].startswith("model.onnx written by torch->onnx")


def test_a_torch_model_drawing_from_a_wider_range_fails_by_distribution(run_torch, torch_models, tmp_path):
    record, _ = run_torch("noisy", converted=wider_noise_onnx(torch_models, tmp_path / "wide"))
    assert record["status"] == "failed"
    assert "y: the converted model draws from another distribution than the original over 20 draws" in \
        record["message"]
    assert record["provenance"]["random_ops_found"] == [{"file": str(tmp_path / "wide" / "model.onnx"),
                                                         "ops": ["RandomUniformLike"]}]


class HalfOffset(torch.nn.Module):
    """The planted bug: y = x + 0.5, the mean of U(0, 1) with the randomness lost."""

    def forward(self, x):
        return x + 0.5


def test_a_converted_file_that_lost_a_torch_models_randomness_fails_by_its_spread(run_torch, torch_models, tmp_path):
    """No file on the path holds a random op, but the torch original, run twice, differs: still random."""
    load_model_file(torch_models)
    fixed = export(HalfOffset(), get_model("noisy"), tmp_path / "fixed", exporter="torchscript")
    record, _ = run_torch("noisy", converted=fixed)
    assert record["status"] == "failed", record["message"]
    assert "it lost the randomness" in record["message"]
    assert record["provenance"]["random_ops_found"][0]["ops"] == ["torch original: two runs of one input differ"]


def test_a_deterministic_torch_model_is_still_compared_elementwise(run_torch):
    record, _ = run_torch("affine")
    assert record["status"] == "passed" and record["message"] == "all outputs within tolerance"
    assert "random_ops_found" not in record["provenance"] and record["outputs"]["y"]["accepted_by"] != "distribution"


def test_a_path_without_onnx_finds_randomness_by_running_the_original_twice(run_torch):
    """torch -> OpenVINO IR directly: no graph to read, so the original runs twice on one input."""
    record, _ = run_torch("noisy", target="openvino", path="openvino-ir")
    assert record["status"] == "passed", record["message"]
    assert record["outputs"]["y"]["accepted_by"] == "distribution"
    assert record["provenance"]["random_ops_found"][0]["ops"] == ["torch original: two runs of one input differ"]
    deterministic, _ = run_torch("affine", target="openvino", path="openvino-ir")
    assert deterministic["status"] == "passed" and "random_ops_found" not in deterministic["provenance"]


def test_replaying_a_random_op_failure_compares_by_distribution_again(run_torch, torch_models, tmp_path, capsys):
    from harness.__main__ import replay

    wide = wider_noise_onnx(torch_models, tmp_path / "wide")
    record, options = run_torch("noisy", converted=wide)
    saved = Path(record["failure"]["npz"])
    assert replay(saved, str(torch_models), wide, False, options.cache_dir) == 1
    printed = capsys.readouterr().out
    assert "compared by distribution over 20 runs of this input, never elementwise" in printed
    assert "y: the converted model draws from another distribution than the original over 20 draws" in printed
    # the benign twin: the same failing input replayed against a file that draws as the original does
    same = export(get_model("noisy").builders["torch"](), get_model("noisy"), tmp_path / "same", exporter="torchscript")
    assert replay(saved, str(torch_models), same, False, options.cache_dir) == 0, capsys.readouterr().out
    assert "y: same distribution over 20 draws" in capsys.readouterr().out


def test_random_ops_found_as_a_torch_case_is_prepared_are_in_its_record(run_torch):
    """The matrix knows the random operators of an ONNX original only; a torch model's are found in its
    exported file, and the record's top-level random_ops lacked them."""
    record, _ = run_torch("noisy")
    assert record["random_ops"] == ["RandomUniformLike"], record["message"]
    deterministic, _ = run_torch("affine")
    assert "random_ops" not in deterministic


def test_a_random_op_failure_saves_its_number_of_draws_and_no_shrunk_input(tmp_path, run_converted):
    from harness.results import load_failure

    record = run_converted(uniform_noise(tmp_path / "model.onnx"), uniform_noise(tmp_path / "wide.onnx", high=2.0))
    assert record["status"] == "failed" and record["examples"] == 20
    info, _ = load_failure(record["failure"]["npz"])
    assert info["draws"] == 20
    assert f"\nfailing input: {record['failure']['npz']}\n" in record["message"]   # one input, run 20 times
    # the twin: a deterministic failure is replayed as one example, and says no number of draws
    shifted = [helper.make_node("Add", ["x", "one"], ["y"])]
    one = helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])
    record = run_converted(_save([helper.make_node("Identity", ["x"], ["y"])], tmp_path / "identity.onnx"),
                           _save(shifted, tmp_path / "shifted.onnx", (one,)))
    assert record["status"] == "failed" and "draws" not in load_failure(record["failure"]["npz"])[0]


def test_a_random_op_failure_replays_over_the_runs_own_number_of_draws(tmp_path, run_converted, capsys):
    from harness.__main__ import replay
    from harness.results import load_failure, save_failure

    original, wide = uniform_noise(tmp_path / "model.onnx"), uniform_noise(tmp_path / "wide.onnx", high=2.0)
    record = run_converted(original, wide, examples=30)
    assert record["status"] == "failed" and record["examples"] == 30
    npz = record["failure"]["npz"]
    assert replay(Path(npz), str(original), wide, False, tmp_path / "cache") == 1
    assert "compared by distribution over 30 runs of this input" in capsys.readouterr().out
    # a replay entry whose draws no run could have saved: refused in one line, the model never runs
    info, inputs = load_failure(npz)
    bad, _ = save_failure(tmp_path / "edited", info["case_id"], inputs, {**info, "draws": "many"})
    assert replay(bad, str(original), wide, False, tmp_path / "cache") == 2
    assert "its replay entry's draws 'many' is not a whole number from 3 to 100000: it is not a file this " \
           "harness wrote; run the case again to save a new one" in capsys.readouterr().err


def test_a_random_op_failure_is_not_walked_element_by_element(tmp_path):
    """Localization compares tensors elementwise: on a random graph it would name a 'diverging' tensor that is
    only another draw. The twin: a deterministic failure is still localized."""
    from harness.cache import ArtifactCache
    from harness.matrix import build_cases
    from harness.runner import run_case

    def run(original: Path, converted: Path) -> dict:
        options = RunOptions(models=(str(original),), sources=("onnx",), targets=("onnxruntime",), devices=("cpu",),
                             examples=5, converted=converted, cache_dir=tmp_path / "cache",
                             reports_dir=tmp_path / "reports")
        (case,) = build_cases(options)
        return run_case(case, options, ArtifactCache(options.cache_dir)).to_json()

    record = run(uniform_noise(tmp_path / "model.onnx"), uniform_noise(tmp_path / "wide.onnx", high=2.0))
    assert record["status"] == "failed" and record["localization"]["status"] == "unavailable"
    assert "random operators: compared by distribution" in record["localization"]["message"]
    one = helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])
    record = run(_save([helper.make_node("Identity", ["x"], ["y"])], tmp_path / "identity.onnx"),
                 _save([helper.make_node("Add", ["x", "one"], ["y"])], tmp_path / "shifted.onnx", (one,)))
    assert record["status"] == "failed" and record["localization"]["status"] != "unavailable"
