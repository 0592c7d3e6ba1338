"""What a model is to the harness: plain dataclasses, no framework imports.

A `ModelSpec` names a model, holds one builder per source framework, and declares
its inputs and outputs. Symbolic dimensions carry bounds so that inputs can vary
within them; layouts are declared, never guessed from shapes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

Dim = int | str

FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")
INT_DTYPES = ("int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64", "bool")
# What an input's values mean beyond their range (see InputSpec.kind).
INPUT_KINDS = (None, "padding_mask")
# Selections of the zoo: "core", the small models written for the harness (the
# default), and "real", published architectures built from their libraries' code.
TIERS = ("core", "real")
# How input values are drawn; ordered from plain to harsh: hypothesis shrinks toward the first entry.
DISTRIBUTIONS = ("normal", "uniform", "large", "tiny")


# Every field of a Tolerance, and those that are fractions in [0, 1].
TOLERANCE_FIELDS = ("atol", "rtol", "atol_by_max", "atol_by_range", "max_mismatch", "noise_multiple",
                    "min_cosine", "min_snr_db", "min_top1", "min_topk_overlap")
FRACTION_FIELDS = ("max_mismatch", "min_cosine", "min_top1", "min_topk_overlap")


class SpecError(ValueError):
    """A model or input spec that cannot be used as written."""


@dataclass(frozen=True)
class Tolerance:
    """An element passes when
    |got - ref| <= atol + atol_by_max * max|ref| + atol_by_range * range + rtol * |ref|.

    `atol_by_max` scales the absolute tolerance with the output's magnitude: on
    CUDA (TF32) the error grows with the size of the values, and a fixed atol
    would be either meaningless for large outputs or impossible for small ones.
    `atol_by_range` scales it with the output's range: its largest magnitude
    over the calibration feed (`PreparedCase.output_ranges`), this example's
    max|ref| where none was measured. A quantized model's error is a share of
    the ranges it was calibrated on, whatever one example's values: an output
    near 0 on one example is still off by a step of that range.
    `max_mismatch` is the fraction of elements allowed outside the bound.
    `noise_multiple`: an output out of that bound still passes when its largest
    error is at most this multiple of the source model's own float32 error (its
    float64 twin against itself on the same inputs); 0 turns that off.

    Whole-output thresholds, for reduced precision (an int8 model is off by a
    quantization step everywhere, which no elementwise bound tells from a bug);
    each 0 is off, and a float output passes only when every one set is met:
    `min_cosine`, the cosine similarity of got and ref; `min_snr_db`,
    10*log10(sum ref^2 / sum (got-ref)^2); and, for an output whose spec names
    a `class_axis`, `min_top1` (the fraction of positions whose top class
    agrees) and `min_topk_overlap` (the mean share of the top-k classes both
    sides have). The noise multiple never passes an output below one of them.
    """

    atol: float = 0.0
    rtol: float = 0.0
    atol_by_max: float = 0.0
    atol_by_range: float = 0.0
    max_mismatch: float = 0.0
    noise_multiple: float = 0.0
    min_cosine: float = 0.0
    min_snr_db: float = 0.0
    min_top1: float = 0.0
    min_topk_overlap: float = 0.0

    def __post_init__(self) -> None:
        for name in TOLERANCE_FIELDS:
            value = getattr(self, name)
            if not value >= 0:
                raise SpecError(f"tolerance {name} must be >= 0, got {value!r}")
            if math.isinf(value):
                # An infinite bound passes every finite error: a check that cannot fail.
                raise SpecError(f"tolerance {name} must be finite, got {value!r}")
        for name in FRACTION_FIELDS:
            if getattr(self, name) > 1:
                raise SpecError(f"{name} is a fraction in [0, 1], got {getattr(self, name)}")

    @property
    def top_k_thresholds(self) -> list[str]:
        """The thresholds set that need the output's class axis."""
        return [name for name in ("min_top1", "min_topk_overlap") if getattr(self, name)]

    def merged(self, **overrides: float | None) -> "Tolerance":
        """A copy with the given fields replaced; None leaves a field as it is."""
        values = {k: v for k, v in overrides.items() if v is not None}
        return Tolerance(**{**self.__dict__, **values})


@dataclass(frozen=True)
class InputSpec:
    """One model input.

    shape: ints for fixed dims, names for symbolic ones, e.g. ("N", 3, "H", "W").
    dims: bounds (inclusive) of each symbolic dim used in `shape`.
    layout: a name from `harness.layouts` (NCHW, NHWC, NTC, ...) or None.
    domain: the inclusive range of valid values (token ids: (0, vocab - 1)).
    kind: what the values mean where a range does not say it: "padding_mask" is
        an attention mask over [N, T] as tokenizers make it, ones for each
        sequence's tokens then zeros for its padding, every sequence at least one
        token long (a row of zeros is no sequence: models answer it with values
        that mean nothing, and eager and exported graphs differ there).
    default_dims: the symbolic dims of `shape` whose bounds neither the model
        nor the user gave, the harness's default: every case warns of them.
    """

    name: str
    shape: tuple[Dim, ...]
    dims: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    dtype: str = "float32"
    layout: str | None = None
    domain: tuple[float, float] = (-4.0, 4.0)
    kind: str | None = None
    default_dims: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(self.shape))
        object.__setattr__(self, "default_dims", tuple(self.default_dims))
        if self.kind not in INPUT_KINDS:
            raise SpecError(f"input {self.name!r}: unknown kind {self.kind!r}; known: {', '.join(map(str, INPUT_KINDS))}")
        if self.kind == "padding_mask" and (len(self.shape) != 2 or self.dtype not in INT_DTYPES):
            raise SpecError(f"input {self.name!r}: a padding_mask is [N, T] of an integer or bool dtype")
        object.__setattr__(self, "dims", dict(self.dims))
        if self.dtype not in FLOAT_DTYPES + INT_DTYPES:
            raise SpecError(f"input {self.name!r}: unknown dtype {self.dtype!r}")
        for dim in self.shape:
            if isinstance(dim, str):
                if dim not in self.dims:
                    raise SpecError(f"input {self.name!r}: symbolic dim {dim!r} has no bounds")
                low, high = self.dims[dim]
                if not 1 <= low <= high:
                    raise SpecError(f"input {self.name!r}: bounds of {dim!r} must satisfy 1 <= min <= max, got {low}..{high}")
            elif not (isinstance(dim, int) and dim >= 0):
                # 0 is a fixed size like any other (an empty `axes` input of a Reduce): a symbolic dim never is
                raise SpecError(f"input {self.name!r}: dim {dim!r} is neither an int >= 0 nor a name")
        low, high = self.domain
        if not low <= high:
            raise SpecError(f"input {self.name!r}: domain {self.domain} is empty")
        if self.is_float:
            _check_float_domain(self.name, self.dtype, low, high)
        if self.dtype in INT_DTYPES and self.dtype != "bool":
            import numpy as np

            info = np.iinfo(self.dtype)
            if low < info.min or high > info.max:
                raise SpecError(f"input {self.name!r}: domain {self.domain} does not fit {self.dtype} "
                                f"({info.min}..{info.max}); give domain=(low, high) within it")
        if self.layout is not None:
            from harness.layouts import check_layout

            check_layout(self.layout, len(self.shape), where=f"input {self.name!r}")

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOAT_DTYPES

    def example_shape(self, values: Mapping[str, int]) -> tuple[int, ...]:
        """The concrete shape for given values of the symbolic dims."""
        return tuple(values[d] if isinstance(d, str) else d for d in self.shape)


def _float_range(dtype: str) -> tuple[float, float]:
    """The finite values of a float dtype, as (lowest, highest)."""
    import numpy as np

    if dtype == "bfloat16":
        import ml_dtypes

        highest = float(ml_dtypes.finfo(ml_dtypes.bfloat16).max)
    else:
        highest = float(np.finfo(dtype).max)
    return -highest, highest


def _check_float_domain(name: str, dtype: str, low: float, high: float) -> None:
    """Refuse a domain whose values, or whose width, are not finite where the
    inputs are made: its tensors would be all inf or NaN, and a NaN compared
    with a NaN passes. Inputs are drawn in float64 for float64 and in float32
    otherwise (`inputs._float_tensor` scales by high - low), then cast."""
    lowest, highest = _float_range(dtype)
    if not (lowest <= low and high <= highest):
        raise SpecError(f"input {name!r}: domain ({low:g}, {high:g}) is not finite in {dtype}, whose finite values "
                        f"are {lowest:g}..{highest:g}; give a domain within them")
    work = "float64" if dtype == "float64" else "float32"
    if high - low > _float_range(work)[1]:
        raise SpecError(f"input {name!r}: domain ({low:g}, {high:g}) spans {high - low:g}, more than {work} "
                        f"(in which {dtype} inputs are drawn) holds ({_float_range(work)[1]:g}); give a narrower domain")


@dataclass(frozen=True)
class OutputSpec:
    """One model output; `tolerance` overrides the dtype/device default for it,
    `target_tolerances` overrides per target runtime (e.g. {"tensorrt": Tolerance(...)}).

    class_axis: the axis that holds class scores (-1 for logits [N, classes]),
        for the top-1 agreement and top-k overlap; None: not a classifier's output.
    top_k: the k of the top-k overlap (clipped to the class axis' length).
    """

    name: str
    tolerance: Tolerance | None = None
    target_tolerances: Mapping[str, Tolerance] = field(default_factory=dict)
    layout: str | None = None
    class_axis: int | None = None
    top_k: int = 5

    def __post_init__(self) -> None:
        if self.class_axis is not None and (isinstance(self.class_axis, bool) or not isinstance(self.class_axis, int)):
            raise SpecError(f"output {self.name!r}: class_axis is an axis (an int, -1 for the last), "
                            f"got {self.class_axis!r}")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 1:
            raise SpecError(f"output {self.name!r}: top_k is an int >= 1, got {self.top_k!r}")
        if self.class_axis is None:
            # A top-k threshold on an output without classes could never be checked.
            for key, tolerance in [("", self.tolerance), *self.target_tolerances.items()]:
                if tolerance is not None and tolerance.top_k_thresholds:
                    where = f" for {key}" if key else ""
                    raise SpecError(f"output {self.name!r}: {', '.join(tolerance.top_k_thresholds)}{where} needs "
                                    "the output's class_axis (e.g. class_axis=-1 for logits [N, classes])")


@dataclass
class ModelSpec:
    """One model of the zoo or of a user's file.

    builders: source framework name -> zero-argument callable returning the model.
    layouts: source framework name -> {input or output name: layout} where that
        framework's model lays a tensor out differently from the spec (a Keras
        CNN takes NHWC images where the spec, like torch, says NCHW). The harness
        transposes explicitly between the two; tensors not named keep the spec's.
    origin: where it came from ("zoo", a user file path, ...), for messages.
    unsupported: "source->target" -> why that conversion path cannot work for
        this model (a known converter limitation), or a precision ("int8") ->
        why no conversion to it can be judged; those cases are skipped with
        the reason instead of failing every run.
    tier: which selection of the zoo the model belongs to: "core" (small models
        written for the harness, the quick default) or "real" (published
        architectures built from their libraries' code, slower); `--tier` picks.
    requires: Python packages the builders need beyond the source framework
        ("transformers", "torchvision"): where one is missing or does not
        import, the model's cases are skipped with the import's error.
    calibration: the distribution (of `inputs.DISTRIBUTIONS`) that int8
        quantizers calibrate on: the kind of input the model will see in
        deployment (`--calibration` overrides it for a run).
    declared_by_file: the inputs and outputs are a model file's own
        declarations (an ONNX graph's), not written for it: such a model may
        take no inputs (a graph of constants, whose outputs one run of each
        side compares); a spec written by hand with none is a mistake.
    """

    name: str
    inputs: tuple[InputSpec, ...]
    outputs: tuple[OutputSpec, ...]
    builders: dict[str, Callable[[], Any]] = field(default_factory=dict)
    description: str = ""
    origin: str = "zoo"
    layouts: dict[str, dict[str, str]] = field(default_factory=dict)
    unsupported: dict[str, str] = field(default_factory=dict)
    tier: str = "core"
    requires: tuple[str, ...] = ()
    calibration: str = "normal"
    declared_by_file: bool = False

    def __post_init__(self) -> None:
        if self.calibration not in DISTRIBUTIONS:
            raise SpecError(f"model {self.name!r}: unknown calibration distribution {self.calibration!r}; "
                            f"choose from {', '.join(DISTRIBUTIONS)}")
        if self.tier not in TIERS:
            raise SpecError(f"model {self.name!r}: unknown tier {self.tier!r}; choose from {', '.join(TIERS)}")
        self.inputs = tuple(self.inputs)
        self.outputs = tuple(OutputSpec(o) if isinstance(o, str) else o for o in self.outputs)
        if not self.inputs and not self.declared_by_file:
            raise SpecError(f"model {self.name!r} declares no inputs")
        if not self.outputs:
            raise SpecError(f"model {self.name!r} declares no outputs")
        for kind, names in (("input", [i.name for i in self.inputs]), ("output", [o.name for o in self.outputs])):
            if len(set(names)) != len(names):
                raise SpecError(f"model {self.name!r}: duplicate {kind} names {names}")
        names = {i.name for i in self.inputs} | {o.name for o in self.outputs}
        for source, layouts in self.layouts.items():
            unknown = set(layouts) - names
            if unknown:
                raise SpecError(f"model {self.name!r}: layouts for {source} name unknown tensors {sorted(unknown)}")
        for inp in self.inputs:
            for source, layouts in self.layouts.items():
                if inp.name in layouts:
                    from harness.layouts import check_layout, permutation

                    check_layout(layouts[inp.name], len(inp.shape), where=f"{source} layout of input {inp.name!r}")
                    if inp.layout is None:
                        raise SpecError(f"model {self.name!r}: input {inp.name!r} needs a layout of its own "
                                        f"to be transposed to {source}'s {layouts[inp.name]}")
                    permutation(inp.layout, layouts[inp.name])
        bounds: dict[str, tuple[int, int]] = {}
        for spec in self.inputs:
            for dim, bound in spec.dims.items():
                if bounds.setdefault(dim, tuple(bound)) != tuple(bound):
                    raise SpecError(f"model {self.name!r}: dim {dim!r} has different bounds on different inputs")

    def source_layouts(self, source: str) -> tuple[dict[str, str | None], dict[str, str | None]]:
        """(input layouts, output layouts) of the model as `source` holds it."""
        own = self.layouts.get(source, {})
        return ({i.name: own.get(i.name, i.layout) for i in self.inputs},
                {o.name: own.get(o.name, o.layout) for o in self.outputs})

    @property
    def dim_bounds(self) -> dict[str, tuple[int, int]]:
        """Every symbolic dim of every input with its bounds; a dim shared by
        two inputs is one dim (one value per example)."""
        bounds: dict[str, tuple[int, int]] = {}
        for spec in self.inputs:
            for dim in spec.shape:
                if isinstance(dim, str):
                    bounds[dim] = tuple(spec.dims[dim])
        return bounds

    def output(self, name: str) -> OutputSpec:
        for out in self.outputs:
            if out.name == name:
                return out
        raise KeyError(name)
