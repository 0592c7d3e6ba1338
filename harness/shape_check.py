"""Declared shapes of an artifact against the spec, before any example runs.

A converted file says what shapes it takes: an ONNX graph input's dims, a
TFLite tensor's shape signature. Read against the spec laid out as the file
is taken to be, two mistakes show before the first example, with the fix:
- a symbolic dim fixed in the file (a batch exported as 1, a size the exporter
  specialized to the example's), where the spec lets it vary;
- a file laid out otherwise than declared: its static dims fit the spec in
  another order of the same axes (an NHWC file taken to be NCHW).
No framework is imported: the runtimes and converters hand in the dims.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import permutations
from typing import Mapping, Sequence

from harness.layouts import KNOWN_LAYOUTS, permutation
from harness.specs import InputSpec

# A declared dim: a size, or None where the file leaves it open (dim_param, -1, unknown).
Declared = Sequence[int | None]


@dataclass(frozen=True)
class ShapeFinding:
    """One disagreement between a file's declared input shape and the spec."""

    tensor: str
    kind: str          # "fixed_dim", "layout", "rank", "size", "default_bounds" (the spec's, not the file's)
    message: str       # what is wrong and the option or re-export that fixes it
    dim: str | None = None      # fixed_dim: the spec's symbolic dim the file fixes
    value: int | None = None    # fixed_dim: the size it is fixed to

    def to_json(self) -> dict:
        return {"tensor": self.tensor, "kind": self.kind, "message": self.message}


def spec_shape(inp: InputSpec, layout: str | None) -> list[int | str]:
    """The spec's shape of `inp` laid out as `layout` (its own where None)."""
    shape = list(inp.shape)
    if layout and inp.layout and layout != inp.layout:
        shape = [shape[axis] for axis in permutation(inp.layout, layout)]
    return shape


def dims_fit(declared: Declared, expected: Sequence[int | str], bounds: Mapping[str, tuple[int, int]]) -> bool:
    """Every static declared dim is the spec's size, or within its dim's bounds."""
    if len(declared) != len(expected):
        return False
    for got, want in zip(declared, expected):
        if got is None:
            continue
        if isinstance(want, int):
            if got != want:
                return False
        elif not bounds[want][0] <= got <= bounds[want][1]:
            return False
    return True


def input_findings(inputs: Sequence[InputSpec], declared: Mapping[str, Declared],
                   layouts: Mapping[str, str | None], where: str, user_file: bool = False) -> list[ShapeFinding]:
    """What the declared input shapes of an artifact get wrong against the spec.

    declared: artifact input name -> dims, for the spec's inputs (already bound
    to the artifact's names); layouts: each input's layout in the artifact;
    where: how the messages name the artifact ("converted file x.onnx");
    user_file: the artifact is the user's (--converted), whose layouts
    --converted-layouts declares; the harness's own hops record theirs, so
    there the advice names the hop's record, never an option refused without
    --converted."""
    layouts_from = "--converted-layouts" if user_file else "the layouts its conversion recorded"
    findings: list[ShapeFinding] = []
    for position, inp in enumerate(inputs):
        if inp.default_dims:
            findings.append(ShapeFinding(inp.name, "default_bounds", _default_bounds_message(inp, position)))
        dims = declared.get(inp.name)
        if dims is None:
            continue
        layout = layouts.get(inp.name) or inp.layout
        expected = spec_shape(inp, layout)
        shown = show_dims(dims)
        if len(dims) != len(expected):
            findings.append(ShapeFinding(inp.name, "rank", (
                f"{where} declares input {inp.name!r} as {shown}, rank {len(dims)}, but the spec's shape "
                f"{show_dims(expected)} has rank {len(expected)}: check the input spec against the file")))
            continue
        if not dims_fit(dims, expected, inp.dims):
            other = other_layout(inp, dims, layout)
            if other:
                fix = (f"say so with --converted-layouts {inp.name}:{other}" if user_file else
                       f"{layouts_from} are wrong: a bug of the harness's conversion, worth reporting")
                findings.append(ShapeFinding(inp.name, "layout", (
                    f"{where} declares input {inp.name!r} as {shown}, which is the spec laid out as {other} "
                    f"({show_dims(spec_shape(inp, other))}), not as {layout} ({show_dims(expected)}): if the file takes "
                    f"{other}, {fix}")))
                continue
        for axis, (got, want) in enumerate(zip(dims, expected)):
            if got is None:
                continue
            if isinstance(want, int):
                if got != want:
                    findings.append(ShapeFinding(inp.name, "size", (
                        f"{where} declares input {inp.name!r} as {shown}: axis {axis} is {got} where the spec "
                        f"says {want} ({show_dims(expected)}, {layout or 'no layout'}): check the input spec")))
                continue
            low, high = inp.dims[want]
            if not low <= got <= high:
                findings.append(ShapeFinding(inp.name, "size", (
                    f"{where} declares input {inp.name!r} as {shown}: axis {axis} is {got} where the spec "
                    f"({show_dims(expected)}, {layout or 'no layout'}) has {want} in {low}..{high}: the file's layout "
                    f"({layouts_from}) or the input spec is off")))
            elif low != high:
                findings.append(ShapeFinding(inp.name, "fixed_dim", _fixed_message(where, inp, shown, axis, want,
                                                                                  got, low, high), want, got))
    return findings


def _default_bounds_message(inp: InputSpec, position: int) -> str:
    """The warning for an input whose symbolic dims the harness bounded by
    default, with the --input-spec that sets other bounds (by position where
    --input-spec cannot write the input's name)."""
    named = ", ".join(f"{dim} (axis {inp.shape.index(dim)})" for dim in inp.default_dims)
    low, high = inp.dims[inp.default_dims[0]]
    writable = re.fullmatch(r"[^:\[\]]+", inp.name)
    shape = ",".join(f"{d}={inp.dims[d][0]}..{inp.dims[d][1]}" if isinstance(d, str) else str(d) for d in inp.shape)
    option = f"--input-spec '{inp.name if writable else f'input{position}'}:{inp.dtype}[{shape}]'"
    order = "" if writable else " (its name cannot be written there: give one --input-spec per input, in order)"
    pronoun = "it" if len(inp.default_dims) == 1 else "them"
    return (f"input {inp.name!r}: the file lets {named} vary and no --input-spec bounds {pronoun}, so the harness "
            f"drew {pronoun} within {low}..{high}, its default; to check other sizes, pass {option} with the bounds "
            f"your model takes{order}")


def _fixed_message(where: str, inp: InputSpec, shown: str, axis: int, dim: str, got: int, low: int, high: int) -> str:
    narrowed = f"{dim}={got}..{got}"
    batch = inp.layout is not None and inp.layout[list(inp.shape).index(dim)] == "N"
    export = ("re-export with a dynamic batch dim (torch.onnx.export: dynamic_shapes/dynamic_axes; tf2onnx: "
              "None in the input_signature)" if batch else
              f"re-export with {dim} dynamic (torch.onnx.export: dynamic_shapes/dynamic_axes; tf2onnx: None in the "
              "input_signature)")
    state = f"{got}, one value of {low}..{high}"
    return (f"{where} declares input {inp.name!r} as {shown}: axis {axis} ({dim}) is fixed to {state}, while the "
            f"spec lets {dim} range over {low}..{high}; examples with another {dim} will be refused. To fix: "
            f"{export}, or narrow the spec to what the file takes ({narrowed} in --input-spec or the registration)")


def other_layout(inp: InputSpec, dims: Declared, taken: str | None) -> str | None:
    """Another order of the input's axis letters than `taken` in which the
    declared static dims fit the spec: the spec's own layout if it fits, else
    the one common layout (NCHW, NHWC, ...) or the one order that does."""
    if not inp.layout or not any(d is not None for d in dims):
        return None
    fitting = [layout for layout in ("".join(p) for p in permutations(inp.layout))
               if layout != taken and dims_fit(dims, spec_shape(inp, layout), inp.dims)]
    if inp.layout in fitting:
        return inp.layout
    common = [layout for layout in fitting if layout in KNOWN_LAYOUTS]
    if len(common) == 1:
        return common[0]
    return fitting[0] if len(fitting) == 1 else None


def show_dims(dims: Sequence[int | str | None]) -> str:
    """Dims as a message shows them, an unknown one as '?': [1, 3, ?, 224]."""
    return "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"
