"""The range of input shapes a runtime that builds for shapes (TensorRT's
optimization profile) must accept: one (min, opt, max) per input, from the
spec alone, in the layout the artifact takes.

min puts every symbolic dim at its lower bound and max at its upper bound, so
that every recipe the harness draws (all within the bounds: `inputs.py`) fits
the profile; opt is the shape the model was exported with
(`inputs.example_recipe`), the one a runtime tunes for. A runtime that sets
`SHAPE_PROFILE = True` gets this as `Session(..., profile=...)`.

Pure: no framework is imported here.
"""

from __future__ import annotations

from typing import Mapping

from harness.inputs import example_recipe
from harness.layouts import permutation
from harness.specs import ModelSpec

Shape = tuple[int, ...]
ShapeRange = tuple[Shape, Shape, Shape]   # (min, opt, max)


def shape_profile(spec: ModelSpec, layouts: Mapping[str, str | None]) -> dict[str, ShapeRange]:
    """{input name: (min shape, opt shape, max shape)} for every input of
    `spec`, each shape moved from the input's spec layout to `layouts[name]`
    (the artifact's; a name missing or None there keeps the spec's order)."""
    bounds = spec.dim_bounds
    low = {dim: lo for dim, (lo, hi) in bounds.items()}
    high = {dim: hi for dim, (lo, hi) in bounds.items()}
    opt = example_recipe(spec).dims
    profile: dict[str, ShapeRange] = {}
    for inp in spec.inputs:
        target = layouts.get(inp.name, inp.layout)
        profile[inp.name] = tuple(_moved(inp.example_shape(values), inp.layout, target)   # type: ignore[assignment]
                                  for values in (low, opt, high))
    return profile


def _moved(shape: Shape, src: str | None, dst: str | None) -> Shape:
    """`shape` of a tensor laid out as `src`, as the same tensor laid out as
    `dst` has it (as `layouts.relaid` moves the tensor itself: no declared
    layout on either side leaves it as it is)."""
    if src is None or dst is None or src == dst:
        return tuple(shape)
    return tuple(shape[axis] for axis in permutation(src, dst))
