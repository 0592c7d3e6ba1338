"""Top-1 accuracy on the user's labelled examples (`--parity-labels=FILE[:OUTPUT]`
with `--parity-inputs=PATH`), the figure quantization users report: each
side's accuracy over the labelled examples and their difference, in the record
(its `accuracy`) and the summary; `--max-accuracy-drop` fails a case
whose converted model loses more than that.

The labels are integer class ids, one per row of the classifier output's
predictions over the examples of --parity-inputs in their order (one per
example where each holds a batch of one), in a `.npy` or a `.txt` with one
label per line. The classifier output is the one named after the colon, else
the one whose OutputSpec has a `class_axis`, else the model's only output.
No framework is imported here.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from harness.case_record import CaseRecord
from harness.errors import CaseError, OptionError
from harness.labels import OPTION, Labels, read_labels
from harness.layouts import relaid
from harness.specs import ModelSpec, OutputSpec

def check_accuracy_options(labels: Labels | None, parity_inputs: str, max_accuracy_drop: float | None) -> None:
    """Refuse, before any case, labels without the examples they label and a
    drop bound without labels or outside 0..1."""
    if labels is not None:
        read_labels(labels.file)
        if not parity_inputs:
            raise OptionError(f"{OPTION} {labels.text}: the labels name the examples of --parity-inputs; give "
                              "--parity-inputs=PATH too")
    if max_accuracy_drop is not None:
        if labels is None:
            raise OptionError(f"--max-accuracy-drop {max_accuracy_drop}: a drop in top-1 accuracy needs labels; "
                              "give --parity-labels=FILE and --parity-inputs=PATH")
        if not 0 <= max_accuracy_drop <= 1:
            raise OptionError(f"--max-accuracy-drop {max_accuracy_drop}: a share of the examples in 0..1, e.g. 0.01")


def classifier_output(spec: ModelSpec, labels: Labels) -> OutputSpec:
    """The output the labels are of: the one they name, else the one with a class_axis,
    else the only output; CaseError naming the outputs where none is clear."""
    names = [o.name for o in spec.outputs]
    if labels.output is not None:
        if labels.output not in names:
            raise CaseError("inputs", f"{OPTION} {labels.text}: model {spec.name!r} has no output "
                                      f"{labels.output!r}; its outputs are {names}")
        return spec.outputs[names.index(labels.output)]
    classifiers = [o for o in spec.outputs if o.class_axis is not None]
    if len(classifiers) == 1:
        return classifiers[0]
    if len(spec.outputs) == 1:
        return spec.outputs[0]
    raise CaseError("inputs", f"{OPTION} {labels.text}: model {spec.name!r} has the outputs {names}; name the one "
                              f"the labels are of, e.g. {OPTION}={labels.file}:{names[0]}")


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


def add_accuracy(record: CaseRecord, prepared: Any, options: Any) -> None:
    """The labelled examples of --parity-inputs through both sides: the record's
    `accuracy`, and a failed case where the drop exceeds --max-accuracy-drop.
    prepared: engine.PreparedCase; options: options.RunOptions."""
    from harness.engine import run_example   # not at configure time, where the plugin imports this module

    path = options.parity_labels.file
    labels = read_labels(path)
    spec = prepared.spec
    output = classifier_output(spec, options.parity_labels)
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
    record.accuracy = entry
    if options.max_accuracy_drop is not None and entry["drop"] > options.max_accuracy_drop:
        record.set_status("failed", accuracy_line(entry))


def accuracy_line(entry: dict[str, Any]) -> str:
    """The accuracy entry in one line, for the case's message and the summary."""
    bound = entry.get("max_drop")
    verdict = "" if bound is None else (f" > --max-accuracy-drop {bound}" if entry["drop"] > bound
                                        else f" <= --max-accuracy-drop {bound}")
    return (f"top-1 accuracy of {entry['output']!r} on {entry['examples']} labelled examples: original "
            f"{entry['original_top1']:.4f}, converted {entry['converted_top1']:.4f}, drop "
            f"{entry['drop']:.4f}{verdict}")
