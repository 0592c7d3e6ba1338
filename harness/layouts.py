"""Tensor layouts (orders of named axes) and the permutations between them.

Layouts are declared by specs and by conversion provenance; the harness
transposes explicitly between them and never guesses a layout from a shape.
"""

from __future__ import annotations

import numpy as np

# Each letter names an axis role: N batch, C channels, H/W/D spatial, T time.
# A layout is any order of distinct letters ("NCHW", "NHWC", but also "NWCH",
# what onnx2tf makes of an NHWC ONNX input, or "WNC"); these are the common ones.
AXIS_ROLES = {"N": "batch", "C": "channels", "H": "height", "W": "width", "D": "depth", "T": "time"}
KNOWN_LAYOUTS = ("NC", "NCHW", "NHWC", "NCDHW", "NDHWC", "NTC", "NCT", "TNC", "NT")

# Axes whose sizes the input generator keeps distinct, so a transpose between
# any two of them changes the shape and cannot pass by symmetry.
DISTINCT_AXES = frozenset("CHWDT")


class LayoutError(ValueError):
    """An unknown layout or one that does not fit a tensor."""


def layout_problem(layout: str) -> str | None:
    """Why `layout` is not a layout (None when it is): it must be distinct axis letters."""
    unknown = sorted({a for a in layout if a not in AXIS_ROLES})
    if not layout or unknown:
        letters = ", ".join(f"{k} {v}" for k, v in AXIS_ROLES.items())
        return (f"unknown layout {layout!r}: a layout is an order of distinct axis letters ({letters}), "
                f"e.g. {', '.join(KNOWN_LAYOUTS[:4])}")
    if len(set(layout)) != len(layout):
        return f"layout {layout!r} names an axis twice"
    return None


def check_layout(layout: str, rank: int, where: str = "tensor") -> None:
    problem = layout_problem(layout)
    if problem:
        raise LayoutError(f"{where}: {problem}")
    if len(layout) != rank:
        raise LayoutError(f"{where}: layout {layout} has {len(layout)} axes but the shape has {rank}")


def permutation(src: str, dst: str) -> tuple[int, ...]:
    """The axes order that turns a `src`-laid tensor into a `dst`-laid one,
    for use with `numpy.transpose`."""
    if sorted(src) != sorted(dst):
        raise LayoutError(f"cannot convert layout {src} to {dst}: they name different axes")
    return tuple(src.index(axis) for axis in dst)


def convert_layout(array: np.ndarray, src: str | None, dst: str | None) -> np.ndarray:
    """`array` laid out as `src`, returned laid out as `dst` (contiguous).

    None on either side means "no declared layout": the array passes unchanged.
    """
    if src is None or dst is None:
        return array
    check_layout(src, array.ndim)
    check_layout(dst, array.ndim)
    if src == dst:
        return array
    return np.ascontiguousarray(np.transpose(array, permutation(src, dst)))


def relaid(array: np.ndarray, src: str | None, dst: str | None) -> np.ndarray:
    """`array` moved from layout `src` to `dst`. A tensor whose rank does not fit
    `src` is left as it is, for the comparator to report as a shape mismatch."""
    if src is None or dst is None or src == dst or array.ndim != len(src):
        return array
    return convert_layout(array, src, dst)
