"""The spec's input or output names matched to a converted model's, for the
runtimes whose models carry names: the same rule everywhere, so that a model
binds the same way whichever runtime loads it."""

from __future__ import annotations

from typing import Sequence

from harness.errors import CaseError


def match_names(kind: str, wanted: Sequence[str], present: Sequence[str]) -> list[str]:
    """The model's names for `wanted` (the spec's `kind`s: "input" or "output"):
    `wanted` itself when the model has every one of them, else the model's own
    names in their order when none matches and the counts agree (by position)."""
    if set(wanted) <= set(present):
        return list(wanted)
    if not set(wanted) & set(present) and len(wanted) == len(present):
        return list(present)
    raise CaseError("runtime", f"the converted model's {kind}s {list(present)} do not match the spec's {list(wanted)}: "
                               f"name them alike, or give the same number of {kind}s in the same order")
