"""Top-1 accuracy on the user's labelled examples (`--parity-labels` with
`--parity-inputs`): each side's accuracy and the drop in the record, and
`--max-accuracy-drop` failing an int8 file whose final bias was shifted while
its correct twin passes; the options refused where they cannot apply."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from harness.accuracy import check_accuracy_options, classifier_output, top1_accuracy
from harness.cache import ArtifactCache
from harness.calibration_settings import Calibration
from harness.converters import onnx_lower
from harness.errors import CaseError, OptionError
from harness.labels import Labels, parse_labels
from harness.matrix import build_cases
from harness.options import RunOptions
from harness.registry import get_model
from harness.report.summary import summary_lines
from harness.runner import run_case
from tests import planted

EXAMPLES = 120


def test_top1_accuracy_and_its_drop():
    labels = np.array([0, 1, 2, 1])
    original = np.eye(3)[[0, 1, 2, 0]]          # 3 of 4 right
    converted = np.eye(3)[[0, 2, 2, 0]]         # 2 of 4 right
    assert top1_accuracy(labels, original, converted) == {"examples": 4, "original_top1": 0.75,
                                                          "converted_top1": 0.5, "drop": 0.25}


def test_the_labelled_output_is_named_or_found():
    assert classifier_output(get_model("mlp"), parse_labels("labels.npy")).name == "logits"   # the one with classes
    assert classifier_output(get_model("cnn"), parse_labels("labels.npy")).name == "features"  # the only output
    assert parse_labels("labels.npy:logits") == Labels(Path("labels.npy"), "logits", "labels.npy:logits")
    with pytest.raises(CaseError) as error:
        classifier_output(get_model("mlp"), parse_labels("labels.npy:probs"))
    assert error.value.message == "--parity-labels labels.npy:probs: model 'mlp' has no output 'probs'; its outputs are ['logits']"


def test_labels_without_the_examples_they_label_are_refused(tmp_path):
    np.save(tmp_path / "labels.npy", np.zeros(3, np.int64))
    labels = parse_labels(str(tmp_path / "labels.npy"))
    with pytest.raises(OptionError, match="give --parity-inputs=PATH too"):
        check_accuracy_options(labels, "", None)
    with pytest.raises(OptionError, match="give --parity-labels=FILE and --parity-inputs=PATH"):
        check_accuracy_options(None, "", 0.01)
    np.save(tmp_path / "floats.npy", np.zeros(3, np.float32))
    with pytest.raises(OptionError, match="holds float32\\[3\\]: give one integer class label per example"):
        check_accuracy_options(parse_labels(str(tmp_path / "floats.npy")), "inputs.npz", None)
    check_accuracy_options(labels, "inputs.npz", 0.01)   # both given: accepted


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """The zoo MLP exported and lowered to int8 by the harness's recipe, a twin whose final bias
    favours class 0, and EXAMPLES inputs labelled by the float model's own top-1 (teacher labels)."""
    import onnxruntime

    folder = tmp_path_factory.mktemp("labelled")
    spec = get_model("mlp")
    fp32 = planted.export_zoo("mlp", folder / "fp32")
    layouts = spec.source_layouts("torch")
    onnx_lower.convert(fp32, spec, [], folder / "int8", layouts=layouts, precision="int8",
                       calibration=Calibration().for_spec(spec).to_json())
    good = folder / "int8" / "model.onnx"
    model = onnx.load(str(fp32))
    bias = [t for t in model.graph.initializer if list(t.dims) == [10]][-1]
    shifted = numpy_helper.to_array(bias).copy()
    shifted[0] += 4.0
    bias.CopyFrom(numpy_helper.from_array(shifted, bias.name))
    onnx.save(model, str(folder / "shifted.onnx"))
    onnx_lower.convert(folder / "shifted.onnx", spec, [], folder / "bad", layouts=layouts, precision="int8",
                       calibration=Calibration().for_spec(spec).to_json())
    x = np.random.default_rng(7).normal(size=(EXAMPLES, 1, 16)).astype(np.float32)
    np.savez(folder / "inputs.npz", x=x)
    session = onnxruntime.InferenceSession(str(fp32), providers=["CPUExecutionProvider"])
    np.save(folder / "labels.npy", session.run(None, {"x": x[:, 0]})[0].argmax(-1).astype(np.int64))
    return folder, good, folder / "bad" / "model.onnx"


def _case(folder, converted, tmp_path) -> dict:
    options = RunOptions(models=("mlp",), sources=("torch",), targets=("onnxruntime",), devices=("cpu",),
                         precisions=("int8",), converted=converted, examples=2,
                         parity_inputs=str(folder / "inputs.npz"),
                         parity_labels=parse_labels(str(folder / "labels.npy")),
                         max_accuracy_drop=0.05, cache_dir=tmp_path / "cache", reports_dir=tmp_path / "reports",
                         localize="off")
    (case,) = build_cases(options)
    return run_case(case, options, ArtifactCache(options.cache_dir)).to_json()


def test_a_correct_int8_build_keeps_its_accuracy(labelled, tmp_path):
    folder, good, _ = labelled
    record = _case(folder, good, tmp_path)
    accuracy = record["accuracy"]
    assert accuracy["examples"] == EXAMPLES and accuracy["original_top1"] == 1.0   # labelled by the float model
    assert accuracy["drop"] <= 0.05 and accuracy["output"] == "logits"
    assert record["status"] == "passed", record["message"]
    assert (f"    top-1 accuracy of 'logits' on {EXAMPLES} labelled examples: original 1.0000, converted "
            f"{accuracy['converted_top1']:.4f}, drop {accuracy['drop']:.4f} <= --max-accuracy-drop 0.05"
            ) in summary_lines([record])


def test_an_int8_build_with_its_final_bias_shifted_fails_the_drop(labelled, tmp_path):
    folder, _, bad = labelled
    record = _case(folder, bad, tmp_path)
    accuracy = record["accuracy"]
    assert accuracy["drop"] > 0.05 and record["status"] == "failed"
    assert (f"top-1 accuracy of 'logits' on {EXAMPLES} labelled examples: original 1.0000, converted "
            f"{accuracy['converted_top1']:.4f}, drop {accuracy['drop']:.4f} > --max-accuracy-drop 0.05"
            ) in record["message"]


def test_the_run_header_keeps_the_labels_as_typed_and_reads_them_back_parsed():
    """RunOptions holds the parsed Labels; parity.json's run header (a worker's, a shard's) the flag's text."""
    options = RunOptions(parity_labels=parse_labels("labels.npy:logits"))
    header = json.loads(json.dumps(options.to_json()))
    assert header["parity_labels"] == "labels.npy:logits"
    assert RunOptions.from_json(header).parity_labels == Labels(Path("labels.npy"), "logits", "labels.npy:logits")
    assert RunOptions.from_json(RunOptions().to_json()).parity_labels is None   # the benign twin: none given
