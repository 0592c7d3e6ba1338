"""The spec's input or output names matched to a model's, for the runtimes and
sources whose models carry names: the same rule everywhere, so that a model
binds the same way whichever runtime loads it, and an ONNX file or a SavedModel
as a source binds as its conversions do."""

from __future__ import annotations

from typing import Sequence

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
