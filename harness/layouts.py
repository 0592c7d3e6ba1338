"""Named tensor layouts and the permutations between them.

Layouts are declared by specs and by conversion provenance; the harness
transposes explicitly between them and never guesses a layout from a shape.
"""

from __future__ import annotations

import numpy as np

# Each letter names an axis role: N batch, C channels, H/W/D spatial, T time.
KNOWN_LAYOUTS = ("NC", "NCHW", "NHWC", "NCDHW", "NDHWC", "NTC", "NCT", "TNC", "NT")

# Axes whose sizes the input generator keeps distinct, so a transpose between
# any two of them changes the shape and cannot pass by symmetry.
DISTINCT_AXES = frozenset("CHWDT")


class LayoutError(ValueError):
    """An unknown layout or one that does not fit a tensor."""


def check_layout(layout: str, rank: int, where: str = "tensor") -> None:
    if layout not in KNOWN_LAYOUTS:
        raise LayoutError(f"{where}: unknown layout {layout!r}; known layouts: {', '.join(KNOWN_LAYOUTS)}")
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
