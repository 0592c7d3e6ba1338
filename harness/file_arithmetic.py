"""The arithmetic a case's target computes a lowered file in, where its
runtime declares it wider than the file's types (`COMPUTES`,
`backends.runtime_computes`): the engine records it in the case's provenance,
and `file_precision.py` then checks the file in its own types. Kept apart from
that check, which runs examples through the engine, so that the engine imports
this without a circle. No framework is imported here.
"""

from __future__ import annotations

from harness import backends
from harness.case import Case
from harness.paths import RUNTIME

# a lowered file's precision -> the element type its arithmetic is in
FILE_TYPES = {"fp16": "float16", "bf16": "bfloat16"}


def computed_in(case: Case) -> str | None:
    """What the case's target computes its file's reduced precision in, where
    the runtime declares it wider; None where it computes the file as its types
    say, or lowers the model itself (then the precision is its own setting)."""
    if case.precision not in FILE_TYPES or case.lowered_by == RUNTIME:
        return None
    return backends.runtime_computes(case.target).get((case.device, case.precision))
