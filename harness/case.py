"""A case: one point of the parity matrix, and the id it goes by.

Apart from the matrix that builds cases (matrix.py), so that what runs a case
(engine, runner, worker, the precision floor) takes one without importing the
case builder, the zoo and the registry of backends with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.specs import ModelSpec

CONVERTED = "converted"   # Case.lowered_by of a user's file that holds its precision itself


@dataclass(frozen=True)
class Case:
    """One point of the matrix; `model_ref` is what the user typed for the model.

    `device` is the target's; the reference (the source) runs on
    `reference_device`, which is the target's device unless given otherwise.
    The id names a precision other than fp32, and a reference device other than
    the target's, at its end, so that the ids of fp32 cases with both sides on
    one device are those of the runs before either axis (saved baselines match)."""

    model: str
    source: str
    target: str
    device: str
    model_ref: str
    spec: ModelSpec | None = field(default=None, compare=False, repr=False)
    variant: str | None = None
    skip: str | None = None
    error: str | None = None
    path: tuple[str, ...] = ()          # the hops from the source to the target's format
    path_label: str | None = None       # how the id names a path other than the target's default
    precision: str = "fp32"             # what the converted model computes in
    # which step lowers it to `precision`: "" (fp32), a hop of `path`, paths.RUNTIME,
    # or CONVERTED (a user's file that is lowered already)
    lowered_by: str = ""
    reference_device: str | None = None   # None when made: the target's `device`
    # The random operators of an ONNX original (random_ops.py): compared by distribution, never elementwise.
    random_ops: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.reference_device is None:
            object.__setattr__(self, "reference_device", self.device)

    @property
    def id(self) -> str:
        parts = (self.model, self.source, self.target, self.device, self.variant, self.path_label,
                 None if self.precision == "fp32" else self.precision,
                 None if self.reference_device == self.device else f"ref-{self.reference_device}")
        return "-".join(p for p in parts if p)
