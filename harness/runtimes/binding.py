"""The spec's input or output names matched to a model's, for the runtimes and
sources whose models carry names: the same rule everywhere, so that a model
binds the same way whichever runtime loads it, and an ONNX file or a SavedModel
as a source binds as its conversions do."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from harness.errors import CaseError


def bound_names(wanted: Sequence[str], present: Sequence[str], by_position: bool = True) -> list[str] | None:
    """The model's names for `wanted` (the spec's): `wanted` itself when the
    model has every one of them; else, where `present` is in the model's order
    (`by_position`), the model's own names in that order when none matches and
    the counts agree; None when neither."""
    if set(wanted) <= set(present):
        return list(wanted)
    if by_position and not set(wanted) & set(present) and len(wanted) == len(present):
        return list(present)
    return None


def match_names(kind: str, wanted: Sequence[str], present: Sequence[str]) -> list[str]:
    """`bound_names` for the spec's `kind`s ("input" or "output"), or a
    CaseError saying how to make them match."""
    names = bound_names(wanted, present)
    if names is None:
        raise CaseError("runtime", f"the converted model's {kind}s {list(present)} do not match the spec's "
                                   f"{list(wanted)}: name them alike, or give the same number of {kind}s in the "
                                   "same order")
    return names


def bind_ports(input_names: Sequence[str], input_dtypes: Sequence[str], output_names: Sequence[str],
               inputs: Mapping[str, str | None], outputs: Sequence[str]) -> tuple[list[str], list[str], dict[str, Any]]:
    """The spec's inputs and outputs matched to a model's (`inputs`: its input
    names in order, each with the dtype it takes, None where unknown;
    `outputs`: its output names in order): (input names, output names, the
    record of what was done). An input whose dtype is not the spec's is a
    CaseError."""
    bound_in = match_names("input", input_names, list(inputs))
    bound_out = match_names("output", output_names, list(outputs))
    for spec_name, name, dtype in zip(input_names, bound_in, input_dtypes):
        expected = inputs[name]
        if expected is not None and expected != dtype:
            raise CaseError("runtime", f"the converted model's input {name!r} takes {expected} but the spec's "
                                       f"input {spec_name!r} is {dtype}: fix the input spec or the conversion")
    by_position = list(bound_in) != list(input_names) or list(bound_out) != list(output_names)
    return bound_in, bound_out, {"matched_by": "position" if by_position else "name",
                                 "inputs": dict(zip(input_names, bound_in)),
                                 "outputs": dict(zip(output_names, bound_out))}
