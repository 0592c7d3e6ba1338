"""Hypothesis strategies that turn input specs into dense numpy tensors.

Hypothesis draws a small *recipe* (concrete dims, a distribution per input, a
fraction of special values, a seed) and numpy makes the tensors from it. This
keeps tensors dense and varied (hypothesis' own array strategy yields
near-constant tensors that hide layout bugs) and generation fast, while
shrinking still works on the recipe: toward the smallest shapes, the plain
normal distribution, no special values and seed 0.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Iterable, Mapping

import numpy as np
from hypothesis import strategies as st

from harness.errors import CaseError
from harness.layouts import DISTINCT_AXES
from harness.specs import DISTRIBUTIONS, InputSpec, ModelSpec

SPECIAL_FRACTIONS = (0.0, 0.01, 0.1)
# Corner-only distributions (hypothesis never draws them): every element at the domain's low or high end.
DOMAIN_ENDS = ("low end", "high end")
TINY_SCALE = 1e-4


@dataclass(frozen=True)
class InputRecipe:
    """Everything needed to rebuild one example's tensors bit for bit."""

    dims: Mapping[str, int]
    distributions: Mapping[str, str]
    special_fraction: float
    seed: int

    def to_json(self) -> dict:
        return asdict(self) | {"dims": dict(self.dims), "distributions": dict(self.distributions)}

    @classmethod
    def from_json(cls, data: Mapping) -> "InputRecipe":
        return cls(dict(data["dims"]), dict(data["distributions"]), float(data["special_fraction"]), int(data["seed"]))


@dataclass(frozen=True)
class FreeValues:
    """The values of low..high that no peer has taken, in order, held as the
    bounds and the exclusions: a dim bound of 10**12 costs no list of sizes."""

    low: int
    high: int
    taken: tuple[int, ...]   # sorted, each within low..high

    @property
    def count(self) -> int:
        return max(0, self.high - self.low + 1 - len(self.taken))

    def __bool__(self) -> bool:
        return self.count > 0

    def __getitem__(self, index: int) -> int:
        """The index-th free value (negative: from the end), found by stepping
        over the taken values below it."""
        if not -self.count <= index < self.count:
            raise IndexError(f"index {index} out of {self.count} free values")
        value = self.low + (index if index >= 0 else index + self.count)
        for taken in self.taken:
            if taken > value:
                break
            value += 1
        return value

    def at_least(self, floor: int) -> "FreeValues":
        """The free values from `floor` up."""
        return free_values(max(self.low, floor), self.high, self.taken)


def free_values(low: int, high: int, taken: Iterable[object]) -> FreeValues:
    """The values of low..high not in `taken`, which may hold the names of peer dims not drawn yet (ignored)."""
    return FreeValues(low, high, tuple(sorted({t for t in taken if isinstance(t, int) and low <= t <= high})))


def _distinct_peers(spec: ModelSpec) -> dict[str, set]:
    """For each symbolic dim, the other dims (names or fixed sizes) it must differ
    from: those on C/H/W/D/T axes of the same input, so that no two of them can
    be swapped by a wrong transpose without changing the shape."""
    peers: dict[str, set] = {}
    for inp in spec.inputs:
        if inp.layout is None:
            continue
        guarded = [d for d, axis in zip(inp.shape, inp.layout) if axis in DISTINCT_AXES]
        for d in guarded:
            if isinstance(d, str):
                peers.setdefault(d, set()).update(p for p in guarded if p != d)
    return peers


@st.composite
def concrete_dims(draw, spec: ModelSpec) -> dict[str, int]:
    """Values for every symbolic dim, within bounds, keeping layout axes of
    different roles different in size where the bounds allow it."""
    peers = _distinct_peers(spec)
    values: dict[str, int] = {}
    # Narrowest ranges first: they have the fewest values to avoid clashes with.
    for dim, (low, high) in sorted(spec.dim_bounds.items(), key=lambda item: item[1][1] - item[1][0]):
        taken = {values.get(p, p) for p in peers.get(dim, ())}
        allowed = free_values(low, high, taken) or free_values(low, high, ())
        values[dim] = allowed[draw(st.integers(0, allowed.count - 1))]
    return values


def pick_dims(spec: ModelSpec, choose: str) -> dict[str, int]:
    """One value for every symbolic dim, chosen the same way each time: "min",
    "max" or "mid" of its bounds, kept apart from its peers (as `concrete_dims`
    does) where the bounds allow; "small" is "min" with a batch dim (N) of 2 or
    more, and "mid" keeps a batch dim at 2 or more too."""
    peers = _distinct_peers(spec)
    batch = {d for i in spec.inputs if i.layout for d, axis in zip(i.shape, i.layout) if axis == "N"}
    values: dict[str, int] = {}
    for dim, (low, high) in sorted(spec.dim_bounds.items(), key=lambda item: item[1][1] - item[1][0]):
        taken = {values.get(p, p) for p in peers.get(dim, ())}
        allowed = free_values(low, high, taken) or free_values(low, high, ())
        if choose == "min" or (choose == "small" and dim not in batch):
            values[dim] = allowed[0]
        elif choose == "small":
            values[dim] = allowed.at_least(2)[0] if allowed.at_least(2) else allowed[-1]
        elif choose == "max":
            values[dim] = allowed[-1]
        else:
            wide = (allowed.at_least(2) if dim in batch else allowed) or allowed
            values[dim] = wide[wide.count // 2]
    return values


def corner_recipes(spec: ModelSpec, distributions: tuple[str, ...] = DISTRIBUTIONS) -> list[tuple[str, InputRecipe]]:
    """The examples every case runs first, (name, recipe), before hypothesis
    searches: a bug that shows only at the largest shape, with a batch above 1,
    at large magnitudes or the domain's ends (a clip at 6, an overflow), on
    tiny values, or with a whole input at one end of its domain (an all-zero
    mask) is then found in the first few examples, not by luck. Cheapest
    first; each recipe is distinct, so none repeats another. `distributions`:
    the ones a case draws from (a corner of another takes the first)."""
    def each(distribution: str) -> dict[str, str]:
        chosen = distribution if distribution in distributions else distributions[0]
        return {i.name: chosen for i in spec.inputs}

    corners = [
        ("smallest shapes", InputRecipe(pick_dims(spec, "min"), each("normal"), 0.0, 0)),
        ("largest shapes", InputRecipe(pick_dims(spec, "max"), each("uniform"), 0.0, 1)),
        ("large magnitudes and the domain's ends", InputRecipe(pick_dims(spec, "mid"), each("large"),
                                                               SPECIAL_FRACTIONS[-1], 2)),
        ("tiny magnitudes", InputRecipe(pick_dims(spec, "mid"), each("tiny"), SPECIAL_FRACTIONS[1], 3)),
    ]
    held = [i.name for i in spec.inputs if not i.is_float]
    if held and set(DISTRIBUTIONS) <= set(distributions):
        # Whole integer and bool tensors at one end: a 0/1 mask of all zeros (every row empty), every
        # index at the last position. Float inputs are drawn as usual beside them: over a constant float
        # tensor a normalization divides by sqrt(eps), so one ulp of a runtime's mean becomes hundreds
        # (LayerNormalization on OpenVINO: 763) where the source's float32 arithmetic is exact and its
        # noise floor zero, a failure of the input, not of the conversion. Not for a case held to its
        # calibration feed (int8): a constant tensor sums past the ranges the model was calibrated on.
        corners += [(f"every integer input at its {end}",
                     InputRecipe(pick_dims(spec, "small"), {**each("normal"), **{name: end for name in held}},
                                 0.0, seed))
                    for seed, end in enumerate(DOMAIN_ENDS, start=len(corners))]
    unique: list[tuple[str, InputRecipe]] = []
    for name, recipe in corners:
        if all(recipe != other for _, other in unique):
            unique.append((name, recipe))
    return unique


def tensor_bytes(inp: InputSpec, shape: tuple[int, ...]) -> int:
    """The bytes of `inp`'s tensor at `shape`, in its own dtype."""
    return math.prod(shape) * _numpy_dtype(inp.dtype).itemsize


def check_tensor_budget(spec: ModelSpec, max_tensor_mb: float) -> None:
    """Refuse a spec whose bounds let an input tensor grow past the budget
    (`--parity-max-tensor-mb`), before any tensor is made. Every recipe stays
    within the bounds, so the largest shape they allow is the only one to
    check; the spec is refused rather than its largest shapes clipped, since
    clipping would test less than the spec declares and say so nowhere."""
    budget = max_tensor_mb * 2**20
    largest = {dim: high for dim, (low, high) in spec.dim_bounds.items()}
    over = []
    for inp in spec.inputs:
        shape = inp.example_shape(largest)
        size = tensor_bytes(inp, shape)
        if size > budget:
            bounds = ", ".join(f"{d}={spec.dim_bounds[d][0]}..{spec.dim_bounds[d][1]}"
                               for d in dict.fromkeys(inp.shape) if isinstance(d, str))
            over.append(f"input {inp.name!r} at the largest shape its bounds allow, {inp.dtype}{list(shape)} "
                        f"({bounds or 'no symbolic dims'}), is {_bytes_text(size)}")
    if over:
        raise CaseError("inputs", f"{'; '.join(over)}: over the tensor budget of {max_tensor_mb:g} MiB "
                                  f"(--parity-max-tensor-mb). Narrow the dims' bounds in the input spec, or raise "
                                  f"--parity-max-tensor-mb if the machine can hold it.")


def _bytes_text(size: int) -> str:
    """'29.1 TiB (32000000000000 bytes)'."""
    scaled, unit = float(size), "bytes"
    for name in ("KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if scaled < 1024:
            break
        scaled, unit = scaled / 1024, name
    return f"{size} bytes" if unit == "bytes" else f"{scaled:.3g} {unit} ({size} bytes)"


def example_recipe(spec: ModelSpec) -> InputRecipe:
    """The inputs used to export and to check the spec: every symbolic dim >= 2
    and different from the others where the bounds allow, so that exporters do
    not specialize a dim to 1 or merge two dims of equal size."""
    dims: dict[str, int] = {}
    for name, (low, high) in spec.dim_bounds.items():
        candidates = free_values(max(low, 2), high, dims.values())
        dims[name] = candidates[candidates.count // 3] if candidates else low
    return InputRecipe(dims, {i.name: "normal" for i in spec.inputs}, 0.0, 0)


def input_recipes(spec: ModelSpec, distributions: tuple[str, ...] = DISTRIBUTIONS) -> st.SearchStrategy[InputRecipe]:
    """Recipes for one example of all of `spec`'s inputs, drawn from `distributions`."""
    return st.builds(
        InputRecipe,
        dims=concrete_dims(spec),
        distributions=st.fixed_dictionaries({i.name: st.sampled_from(distributions) for i in spec.inputs}),
        special_fraction=st.sampled_from(SPECIAL_FRACTIONS),
        seed=st.integers(0, 2**32 - 1),
    )


def make_inputs(spec: ModelSpec, recipe: InputRecipe) -> dict[str, np.ndarray]:
    """The tensors a recipe stands for, keyed by input name, in the spec's layouts."""
    tensors = {}
    for index, inp in enumerate(spec.inputs):
        rng = np.random.default_rng([recipe.seed, index])
        shape = inp.example_shape(recipe.dims)
        tensors[inp.name] = make_tensor(inp, shape, recipe.distributions[inp.name], recipe.special_fraction, rng)
    return tensors


def make_tensor(
    inp: InputSpec, shape: tuple[int, ...], distribution: str, special_fraction: float, rng: np.random.Generator
) -> np.ndarray:
    if distribution in DOMAIN_ENDS:
        return _domain_end(inp, shape, distribution == DOMAIN_ENDS[1])
    if inp.is_float:
        return _float_tensor(inp, shape, distribution, special_fraction, rng)
    return _int_tensor(inp, shape, distribution, special_fraction, rng)


def _numpy_dtype(name: str) -> np.dtype:
    if name == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


# Near the dtype's limits a draw past the domain's edge may overflow to inf: the
# clip brings it back to the edge (the spec keeps the domain and its width finite).
@np.errstate(over="ignore")
def _float_tensor(inp, shape, distribution, special_fraction, rng) -> np.ndarray:
    low, high = (float(v) for v in inp.domain)
    center, half = (low + high) / 2, (high - low) / 2
    work = np.float64 if inp.dtype == "float64" else np.float32
    if distribution == "normal":
        x = rng.standard_normal(shape, dtype=work)
        x *= half / 3
        x += center
    elif distribution == "uniform":
        x = rng.random(shape, dtype=work)
        x *= high - low
        x += low
    elif distribution == "large":
        # Magnitudes in the outer half of the domain, on both sides of its center:
        # one uniform draw in [-1, 1) gives both the sign and the magnitude.
        x = rng.random(shape, dtype=work)
        x *= 2
        x -= 1
        x *= half / 2
        x += np.copysign(work(half / 2), x)
        x += center
    elif distribution == "tiny":
        x = rng.standard_normal(shape, dtype=work)
        if low <= 0 <= high:
            x *= TINY_SCALE * max(half, 1.0)
        else:
            # Small offsets from the domain's edge, but wide enough to stay distinct
            # once rounded to a narrow dtype (float16 steps by 2e-3 at 2.0).
            step = float(np.spacing(np.array(low, dtype=_numpy_dtype(inp.dtype))).astype(np.float64))
            np.abs(x, out=x)
            x *= max(TINY_SCALE * half, 16 * abs(step))
            x += low
    else:
        raise ValueError(f"unknown distribution {distribution!r}; known: {', '.join(DISTRIBUTIONS)}")
    np.clip(x, low, high, out=x)
    if special_fraction:
        specials = np.array([v for v in (0.0, -0.0, low, high) if low <= v <= high], dtype=work)
        _sprinkle(x, specials, special_fraction, rng)
    return x.astype(_numpy_dtype(inp.dtype), copy=False)


def _domain_end(inp: InputSpec, shape: tuple[int, ...], high: bool) -> np.ndarray:
    """Every element at the domain's high end, or its low end; a padding mask
    at its fullest, or one token a row (a row of no tokens is none of its values)."""
    if inp.kind == "padding_mask":
        return (np.arange(shape[1])[None, :] < (shape[1] if high else 1)).repeat(shape[0], 0).astype(inp.dtype)
    if inp.dtype == "bool":
        return np.full(shape, high)
    low_end, high_end = inp.domain
    if not inp.is_float:
        low_end, high_end = math.ceil(low_end), math.floor(high_end)
    return np.full(shape, high_end if high else low_end, dtype=_numpy_dtype(inp.dtype))


def _padding_mask(inp, shape, distribution, rng) -> np.ndarray:
    """Ones for each row's tokens, then zeros: lengths drawn in 1..T (all full
    for "large", one token for "tiny")."""
    rows, steps = shape
    if distribution == "large":
        lengths = np.full(rows, steps)
    elif distribution == "tiny":
        lengths = np.ones(rows, dtype=np.int64)
    else:
        lengths = rng.integers(1, steps, rows, endpoint=True)
    return (np.arange(steps)[None, :] < lengths[:, None]).astype(inp.dtype)


def _int_tensor(inp, shape, distribution, special_fraction, rng) -> np.ndarray:
    if inp.kind == "padding_mask":
        return _padding_mask(inp, shape, distribution, rng)
    # np.asarray: numpy's operators give a 0-d input a numpy scalar, which runtimes refuse (ONNX Runtime)
    if inp.dtype == "bool":
        x = np.asarray(rng.random(shape) < 0.5)
        if special_fraction:
            _sprinkle(x, np.array([True, False]), special_fraction, rng)
        return x
    low, high = int(np.ceil(inp.domain[0])), int(np.floor(inp.domain[1]))
    if distribution == "large":
        span = max((high - low) // 4, 0)
        x = np.where(rng.random(shape) < 0.5, rng.integers(low, low + span, shape, endpoint=True),
                     rng.integers(high - span, high, shape, endpoint=True))
    elif distribution == "tiny" and low <= 0 <= high:
        x = np.clip(rng.integers(-1, 1, shape, endpoint=True), low, high)
    else:
        x = rng.integers(low, high, shape, endpoint=True)
    x = np.asarray(x, dtype=inp.dtype)
    if special_fraction:
        _sprinkle(x, np.array(sorted({low, high, min(max(0, low), high)}), dtype=x.dtype), special_fraction, rng)
    return x


def _sprinkle(x: np.ndarray, values: np.ndarray, fraction: float, rng: np.random.Generator) -> None:
    """Overwrite about `fraction` of `x`'s elements, at random places, with `values`."""
    count = int(round(fraction * x.size))
    if count == 0 or len(values) == 0:
        return
    flat = x.reshape(-1)
    flat[rng.integers(0, x.size, count)] = values[rng.integers(0, len(values), count)]
