"""Top-1 accuracy on the user's labelled examples (`--parity-labels=FILE[:OUTPUT]`
with `--parity-inputs=PATH`), the figure quantization users report: each
side's accuracy over the labelled examples and their difference, in the record
(`record["accuracy"]`) and the summary; `--max-accuracy-drop` fails a case
whose converted model loses more than that.

The labels are integer class ids, one per row of the classifier output's
predictions over the examples of --parity-inputs in their order (one per
example where each holds a batch of one), in a `.npy` or a `.txt` with one
label per line. The classifier output is the one named after the colon, else
the one whose OutputSpec has a `class_axis`, else the model's only output.
No framework is imported here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import CaseError
from harness.layouts import relaid
from harness.model_file import not_a_file
from harness.options import OptionError
from harness.specs import ModelSpec, OutputSpec

OPTION = "--parity-labels"
LABEL_SUFFIXES = (".npy", ".txt")


def parse_labels(text: str) -> tuple[Path, str | None]:
    """`FILE[:OUTPUT]` -> (the labels file, the output it labels or None)."""
    file, output = text, None
    if Path(text).suffix not in LABEL_SUFFIXES and ":" in text:
        file, output = text.rsplit(":", 1)
    if Path(file).suffix not in LABEL_SUFFIXES or output == "":
        raise OptionError(f"{OPTION} {text}: expected FILE[:OUTPUT] with FILE a .npy or .txt of integer class "
                          "labels, e.g. labels.npy:logits")
    return Path(file), output


def read_labels(path: Path) -> np.ndarray:
    """The labels in `path` as a 1-D int64 array; OptionError, one line, for anything else."""
    if not path.is_file():
        raise OptionError(f"{OPTION} {path} {not_a_file(path)}: give a .npy or a .txt of integer class labels")
    try:
        labels = (np.load(path, allow_pickle=False) if path.suffix == ".npy"
                  else np.loadtxt(path, dtype=np.int64, ndmin=1))
    except (OSError, ValueError) as error:
        first = (str(error).strip().splitlines() or [""])[0][:200]
        raise OptionError(f"{OPTION} {path} cannot be read as integer labels ({first}): save them with "
                          "numpy.save(path, labels.astype('int64')) or one integer per line") from None
    if labels.ndim != 1 or labels.dtype.kind not in "iu" or not labels.size:
        raise OptionError(f"{OPTION} {path} holds {labels.dtype}{list(labels.shape)}: give one integer class label "
                          "per example, a 1-D integer array")
    return labels.astype(np.int64)


def check_accuracy_options(parity_labels: str, parity_inputs: str, max_accuracy_drop: float | None) -> None:
    """Refuse, before any case, labels without the examples they label and a
    drop bound without labels or outside 0..1."""
    if parity_labels:
        read_labels(parse_labels(parity_labels)[0])
        if not parity_inputs:
            raise OptionError(f"{OPTION} {parity_labels}: the labels name the examples of --parity-inputs; give "
                              "--parity-inputs=PATH too")
    if max_accuracy_drop is not None:
        if not parity_labels:
            raise OptionError(f"--max-accuracy-drop {max_accuracy_drop}: a drop in top-1 accuracy needs labels; "
                              "give --parity-labels=FILE and --parity-inputs=PATH")
        if not 0 <= max_accuracy_drop <= 1:
            raise OptionError(f"--max-accuracy-drop {max_accuracy_drop}: a share of the examples in 0..1, e.g. 0.01")


def classifier_output(spec: ModelSpec, named: str | None, option: str) -> OutputSpec:
    """The output the labels are of: `named`, else the one with a class_axis,
    else the only output; CaseError naming the outputs where none is clear."""
    names = [o.name for o in spec.outputs]
    if named is not None:
        if named not in names:
            raise CaseError("inputs", f"{OPTION} {option}: model {spec.name!r} has no output {named!r}; its "
                                      f"outputs are {names}")
        return spec.outputs[names.index(named)]
    classifiers = [o for o in spec.outputs if o.class_axis is not None]
    if len(classifiers) == 1:
        return classifiers[0]
    if len(spec.outputs) == 1:
        return spec.outputs[0]
    raise CaseError("inputs", f"{OPTION} {option}: model {spec.name!r} has the outputs {names}; name the one the "
                              f"labels are of, e.g. {OPTION}={parse_labels(option)[0]}:{names[0]}")


def top1_accuracy(labels: np.ndarray, original: np.ndarray, converted: np.ndarray) -> dict[str, Any]:
    """Each side's top-1 accuracy on `labels` and the drop from the original's
    to the converted's; `original` and `converted` are class scores [rows,
    classes], one row per label."""
    predicted = [np.asarray(scores).argmax(-1) for scores in (original, converted)]
    if not len(labels) == len(predicted[0]) == len(predicted[1]):
        raise ValueError(f"{len(labels)} labels for {len(predicted[0])} and {len(predicted[1])} predictions")
    original_top1, converted_top1 = (float(np.mean(p == labels)) for p in predicted)
    return {"examples": int(len(labels)), "original_top1": original_top1, "converted_top1": converted_top1,
            "drop": original_top1 - converted_top1}


def add_accuracy(record: dict[str, Any], prepared: Any, options: Any) -> None:
    """The labelled examples of --parity-inputs through both sides: the record's
    `accuracy`, and a failed case where the drop exceeds --max-accuracy-drop.
    prepared: engine.PreparedCase; options: options.RunOptions."""
    from harness.engine import run_example   # not at configure time, where the plugin imports this module

    path, named = parse_labels(options.parity_labels)
    labels = read_labels(path)
    spec = prepared.spec
    output = classifier_output(spec, named, options.parity_labels)
    index = [o.name for o in spec.outputs].index(output.name)
    class_axis = -1 if output.class_axis is None else output.class_axis
    source_out = prepared.source_layouts[1][output.name]
    rows: dict[str, list[np.ndarray]] = {"original": [], "converted": []}
    examples = prepared.user_inputs.examples
    for example in examples:
        outcome = run_example(prepared, example.inputs, elementwise=False)
        if outcome.error:
            raise CaseError("run", f"{OPTION}: the converted model cannot run user example {example.name}: "
                                   f"{outcome.error}")
        for side, value in (("original", outcome.reference[index]), ("converted", outcome.converted[index])):
            scores = relaid(np.asarray(value), source_out, output.layout)   # the spec's layout: class_axis's
            rows[side].append(np.moveaxis(scores, class_axis, -1).reshape(-1, scores.shape[class_axis]))
    original, converted = (np.concatenate(side) for side in rows.values())
    if len(original) != len(labels):
        raise CaseError("inputs", f"{OPTION} {path} holds {len(labels)} labels, but the {len(examples)} examples of "
                                  f"--parity-inputs {options.parity_inputs} give {len(original)} predictions of "
                                  f"{output.name!r}: give one label per prediction, in the examples' order")
    entry = {"labels": str(path), "output": output.name, **top1_accuracy(labels, original, converted),
             "max_drop": options.max_accuracy_drop}
    record["accuracy"] = entry
    if options.max_accuracy_drop is not None and entry["drop"] > options.max_accuracy_drop:
        failure = accuracy_line(entry)
        record["message"] = failure if record["status"] != "failed" else f"{failure}\n{record['message']}"
        record["status"] = "failed"


def accuracy_line(entry: dict[str, Any]) -> str:
    """The accuracy entry in one line, for the case's message and the summary."""
    bound = entry.get("max_drop")
    verdict = "" if bound is None else (f" > --max-accuracy-drop {bound}" if entry["drop"] > bound
                                        else f" <= --max-accuracy-drop {bound}")
    return (f"top-1 accuracy of {entry['output']!r} on {entry['examples']} labelled examples: original "
            f"{entry['original_top1']:.4f}, converted {entry['converted_top1']:.4f}, drop "
            f"{entry['drop']:.4f}{verdict}")
