"""inputs: hypothesis recipes within bounds, distinct layout axes, and dense,
deterministic tensors that stay within their domain."""

from __future__ import annotations

import itertools
import time
import tracemalloc

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, find, given, settings
from hypothesis import strategies as st
from hypothesis.errors import NoSuchExample

from harness.inputs import example_recipe
from harness.errors import CaseError
from harness.inputs import (
    DISTRIBUTIONS,
    SPECIAL_FRACTIONS,
    InputRecipe,
    check_tensor_budget,
    corner_recipes,
    free_values,
    input_recipes,
    make_inputs,
    pick_dims,
    tensor_bytes,
)
from harness.options import parse_input_spec
from harness.specs import InputSpec, ModelSpec, SpecError

FAST = settings(max_examples=60, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow])


def model(*inputs: InputSpec) -> ModelSpec:
    return ModelSpec("m", tuple(inputs), ("y",))


IMAGE = InputSpec("image", ("N", 3, "H", "W"), {"N": (1, 4), "H": (2, 9), "W": (2, 9)}, layout="NCHW")
TOKENS = InputSpec("ids", ("N", "T"), {"N": (1, 4), "T": (1, 16)}, dtype="int64", domain=(0, 99))
MASK = InputSpec("mask", ("N", "T"), {"N": (1, 4), "T": (1, 16)}, dtype="bool")
SPEC = model(IMAGE, TOKENS, MASK)


# --------------------------------------------------------------------------- recipes

@FAST
@given(input_recipes(SPEC))
def test_recipes_respect_dim_bounds_and_share_symbols(r):
    assert set(r.dims) == {"N", "H", "W", "T"}
    for dim, (low, high) in SPEC.dim_bounds.items():
        assert low <= r.dims[dim] <= high
    assert set(r.distributions) == {"image", "ids", "mask"}
    assert all(d in DISTRIBUTIONS for d in r.distributions.values())
    assert r.special_fraction in SPECIAL_FRACTIONS
    assert 0 <= r.seed < 2**32
    tensors = make_inputs(SPEC, r)
    n = r.dims["N"]
    assert tensors["image"].shape == (n, 3, r.dims["H"], r.dims["W"])
    # the shared N and T: one value for every input
    assert tensors["ids"].shape == tensors["mask"].shape == (n, r.dims["T"])


@FAST
@given(st.data())
def test_nchw_axes_differ_when_bounds_overlap(data):
    # Overlapping H and W ranges, each wide enough (>= 3 values) that a distinct
    # choice always exists; 3 (the fixed C) may lie inside either range.
    h_low = data.draw(st.integers(1, 6))
    h_high = data.draw(st.integers(h_low + 2, h_low + 6))
    w_low = data.draw(st.integers(max(1, h_low - 2), h_high))
    w_high = data.draw(st.integers(max(w_low + 2, h_low), w_low + 6))
    spec = model(InputSpec("x", ("N", 3, "H", "W"), {"N": (1, 2), "H": (h_low, h_high), "W": (w_low, w_high)},
                           layout="NCHW"))
    r = data.draw(input_recipes(spec))
    h, w = r.dims["H"], r.dims["W"]
    assert h_low <= h <= h_high and w_low <= w <= w_high
    assert h != w and h != 3 and w != 3


@FAST
@given(input_recipes(model(InputSpec("x", ("N", "T", "C"), {"N": (1, 3), "T": (2, 6), "C": (2, 6)}, layout="NTC"))))
def test_ntc_time_and_channels_differ(r):
    assert r.dims["T"] != r.dims["C"]


def test_distinctness_comes_from_the_layout():
    # Not vacuous: without a layout, the very same bounds do yield H == W == C.
    free = model(InputSpec("x", ("N", 3, "H", "W"), {"N": (1, 2), "H": (2, 9), "W": (2, 9)}))
    found = find(input_recipes(free), lambda r: r.dims["H"] == r.dims["W"] == 3)
    assert found.dims["H"] == 3
    laid = model(IMAGE)
    with pytest.raises(NoSuchExample):
        find(input_recipes(laid), lambda r: r.dims["H"] == r.dims["W"] or 3 in (r.dims["H"], r.dims["W"]),
             settings=settings(max_examples=300, database=None))


def test_distinct_dims_fall_back_when_bounds_force_equality():
    spec = model(InputSpec("x", ("N", 3, "H", "W"), {"N": (1, 1), "H": (3, 3), "W": (3, 3)}, layout="NCHW"))
    r = find(input_recipes(spec), lambda r: True)
    assert r.dims == {"N": 1, "H": 3, "W": 3}


def test_distinct_dims_found_when_only_one_assignment_works():
    spec = model(InputSpec("x", ("N", 3, "H", "W"), {"N": (1, 2), "H": (4, 5), "W": (4, 4)}, layout="NCHW"))
    with pytest.raises(NoSuchExample):
        find(input_recipes(spec), lambda r: r.dims["H"] == r.dims["W"],
             settings=settings(max_examples=200, database=None))


def test_minimal_recipe_is_the_plainest():
    plain = model(InputSpec("x", ("N", "T"), {"N": (2, 5), "T": (7, 9)}),
                  InputSpec("y", ("N", 4), {"N": (2, 5)}, dtype="int32"))
    r = find(input_recipes(plain), lambda r: True)
    assert r.dims == {"N": 2, "T": 7}
    assert r.distributions == {"x": "normal", "y": "normal"}
    assert r.special_fraction == 0.0 and r.seed == 0
    # With a layout the smallest *allowed* dims: H at its minimum, W the smallest
    # value that differs from H and from C = 3.
    r = find(input_recipes(model(IMAGE)), lambda r: True)
    assert r.dims == {"N": 1, "H": 2, "W": 4}
    assert r.distributions == {"image": "normal"} and r.special_fraction == 0.0 and r.seed == 0


def test_recipe_json_round_trip():
    r = InputRecipe({"N": 2, "T": 5}, {"ids": "large"}, 0.01, 12345)
    data = r.to_json()
    assert data == {"dims": {"N": 2, "T": 5}, "distributions": {"ids": "large"}, "special_fraction": 0.01,
                    "seed": 12345}
    assert InputRecipe.from_json(data) == r
    assert InputRecipe.from_json(data | {"seed": 1}) != r


# --------------------------------------------------------------------------- tensors

def test_make_inputs_deterministic_and_seed_sensitive():
    dims = {"N": 2, "H": 5, "W": 7, "T": 11}
    r = InputRecipe(dims, {"image": "uniform", "ids": "normal", "mask": "normal"}, 0.01, 42)
    a, b = make_inputs(SPEC, r), make_inputs(SPEC, r)
    for name in a:
        assert a[name].tobytes() == b[name].tobytes()
        assert a[name].dtype == b[name].dtype
    c = make_inputs(SPEC, InputRecipe(dims, r.distributions, 0.01, 43))
    for name in a:
        assert a[name].tobytes() != c[name].tobytes(), name
    # different inputs of one example are not copies of one stream
    two = model(InputSpec("a", (50,)), InputSpec("b", (50,)))
    t = make_inputs(two, InputRecipe({}, {"a": "normal", "b": "normal"}, 0.0, 0))
    assert not np.array_equal(t["a"], t["b"])


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64", "bfloat16"])
@pytest.mark.parametrize("domain", [(-4.0, 4.0), (0.0, 1.0), (2.0, 3.0), (-1e3, -10.0), (-0.5, 2.5)])
@pytest.mark.parametrize("dist", DISTRIBUTIONS)
@pytest.mark.parametrize("special", SPECIAL_FRACTIONS)
def test_float_values_stay_in_domain(dtype, domain, dist, special):
    spec = model(InputSpec("x", (4, 300), dtype=dtype, domain=domain))
    x = make_inputs(spec, InputRecipe({}, {"x": dist}, special, 7))["x"]
    nd = x.dtype
    assert x.shape == (4, 300)
    assert np.isfinite(x.astype(np.float64)).all()
    low, high = np.array(domain[0]).astype(nd), np.array(domain[1]).astype(nd)
    assert (x >= low).all() and (x <= high).all(), (x.min(), x.max())
    # ...and they vary
    assert len(np.unique(x.astype(np.float64))) > 10


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_tiny_narrow_float_away_from_zero_is_not_constant(dtype):
    spec = model(InputSpec("x", (4, 300), dtype=dtype, domain=(2.0, 3.0)))
    x = make_inputs(spec, InputRecipe({}, {"x": "tiny"}, 0.0, 7))["x"]
    assert len(np.unique(x.astype(np.float64))) > 10


@pytest.mark.parametrize("dist", DISTRIBUTIONS)
def test_distributions_have_their_character(dist):
    spec = model(InputSpec("x", (20000,), domain=(-6.0, 6.0)))
    x = make_inputs(spec, InputRecipe({}, {"x": dist}, 0.0, 3))["x"].astype(np.float64)
    a = np.abs(x)
    if dist == "normal":
        assert x.std() == pytest.approx(2.0, rel=0.05) and abs(x.mean()) < 0.1
    elif dist == "uniform":
        assert x.min() < -5.9 and x.max() > 5.9 and x.std() == pytest.approx(12 / np.sqrt(12), rel=0.05)
    elif dist == "large":
        assert a.min() >= 3.0 - 1e-6 and (x < 0).any() and (x > 0).any()
    else:  # tiny
        assert a.max() < 1e-2 and a.max() > 0


def test_tiny_distribution_in_a_domain_without_zero():
    spec = model(InputSpec("x", (1000,), domain=(2.0, 3.0)))
    x = make_inputs(spec, InputRecipe({}, {"x": "tiny"}, 0.0, 0))["x"]
    assert (x >= 2.0).all() and (x - 2.0).max() < 1e-2


def test_special_fraction_puts_zeros_and_extremes_in():
    spec = model(InputSpec("x", (1, 3, 64, 64), domain=(-2.5, 3.0)))
    x = make_inputs(spec, InputRecipe({}, {"x": "normal"}, 0.1, 5))["x"]
    zeros = x == 0
    assert (zeros & np.signbit(x)).any(), "no -0.0"
    assert (zeros & ~np.signbit(x)).any(), "no +0.0"
    assert (x == -2.5).sum() > 100 and (x == 3.0).sum() > 100
    specials = zeros | (x == -2.5) | (x == 3.0)
    assert specials.mean() == pytest.approx(0.1 * 0.95, abs=0.03)  # with replacement: a few repeat
    # and without special_fraction far fewer (normal, sigma 0.92 around 0.25: the
    # upper end is 3 sigma away, so about 0.13% are clipped onto it; zeros never)
    clean = make_inputs(spec, InputRecipe({}, {"x": "normal"}, 0.0, 5))["x"]
    assert not (clean == 0).any() and (clean == 3.0).mean() < 0.005 and (clean == -2.5).mean() < 0.005


def test_special_values_skip_zero_outside_domain():
    spec = model(InputSpec("x", (5000,), domain=(1.0, 2.0)))
    x = make_inputs(spec, InputRecipe({}, {"x": "uniform"}, 0.1, 5))["x"]
    assert not (x == 0).any()
    assert (x == 1.0).sum() > 100 and (x == 2.0).sum() > 100


@pytest.mark.parametrize("dist", DISTRIBUTIONS)
@pytest.mark.parametrize("special", SPECIAL_FRACTIONS)
def test_token_ids_are_integers_in_range(dist, special):
    spec = model(TOKENS)
    t = make_inputs(spec, InputRecipe({"N": 4, "T": 16}, {"ids": dist}, special, 11))["ids"]
    assert t.dtype == np.int64 and t.shape == (4, 16)
    assert t.min() >= 0 and t.max() <= 99
    if dist in ("uniform", "normal"):
        assert len(np.unique(t)) > 20


def test_token_ids_special_values_are_the_ends():
    spec = model(InputSpec("ids", (20000,), dtype="int64", domain=(5, 99)))
    t = make_inputs(spec, InputRecipe({}, {"ids": "normal"}, 0.1, 1))["ids"]
    assert (t == 5).sum() > 500 and (t == 99).sum() > 500
    assert t.min() == 5 and t.max() == 99


def test_large_and_tiny_integer_distributions():
    spec = model(InputSpec("ids", (5000,), dtype="int32", domain=(0, 99)))
    large = make_inputs(spec, InputRecipe({}, {"ids": "large"}, 0.0, 1))["ids"]
    assert ((large <= 24) | (large >= 75)).all() and (large <= 24).any() and (large >= 75).any()
    tiny = make_inputs(spec, InputRecipe({}, {"ids": "tiny"}, 0.0, 1))["ids"]
    assert set(np.unique(tiny)) == {0, 1}


def test_unsigned_input_values_within_domain_and_dtype_range():
    from harness.specs import SpecError

    try:
        spec = model(InputSpec("x", (1000,), dtype="uint8"))
    except SpecError:
        return  # rejecting the impossible domain would also do
    x = make_inputs(spec, InputRecipe({}, {"x": "uniform"}, 0.0, 0))["x"]
    assert x.max() <= 4, np.unique(x)


def test_bool_inputs():
    spec = model(MASK)
    for special in SPECIAL_FRACTIONS:
        m = make_inputs(spec, InputRecipe({"N": 4, "T": 16}, {"mask": "normal"}, special, 2))["mask"]
        assert m.dtype == np.bool_ and m.shape == (4, 16)
        assert m.any() and not m.all()


@pytest.mark.parametrize("dtype,expected", [("float16", np.float16), ("float64", np.float64),
                                            ("bfloat16", ml_dtypes.bfloat16), ("int8", np.int8)])
def test_dtype_of_tensor_follows_spec(dtype, expected):
    domain = (-100, 100) if dtype == "int8" else (-4.0, 4.0)
    spec = model(InputSpec("x", (2, 3), dtype=dtype, domain=domain))
    x = make_inputs(spec, InputRecipe({}, {"x": "uniform"}, 0.0, 0))["x"]
    assert x.dtype == np.dtype(expected)


@pytest.mark.parametrize("dist", DISTRIBUTIONS)
def test_tensors_are_dense(dist):
    spec = model(InputSpec("image", (1, 3, 64, 64), layout="NCHW"))
    x = make_inputs(spec, InputRecipe({}, {"image": dist}, 0.0, 9))["image"]
    assert x.dtype == np.float32
    assert len(np.unique(x)) > 10000
    # no two channels or rows are copies (a transpose bug could not hide)
    assert not np.array_equal(x[0, 0], x[0, 1])
    assert not np.array_equal(x[0, 0], x[0, 0].T)


def test_unknown_distribution_raises():
    spec = model(InputSpec("x", (3,)))
    with pytest.raises(ValueError, match="unknown distribution 'wobbly'"):
        make_inputs(spec, InputRecipe({}, {"x": "wobbly"}, 0.0, 0))


def test_every_recipe_combination_is_deterministic():
    spec = model(InputSpec("x", (2, 8), dtype="float16"), InputSpec("i", (8,), dtype="int16", domain=(-5, 5)))
    for d1, d2, sp in itertools.product(DISTRIBUTIONS, DISTRIBUTIONS, SPECIAL_FRACTIONS):
        r = InputRecipe({}, {"x": d1, "i": d2}, sp, 3)
        a, b = make_inputs(spec, r), make_inputs(spec, r)
        assert a["x"].tobytes() == b["x"].tobytes() and a["i"].tobytes() == b["i"].tobytes()
        assert a["x"].dtype == np.float16 and a["i"].dtype == np.int16
        assert a["i"].min() >= -5 and a["i"].max() <= 5


def test_padding_mask_is_ones_then_zeros_with_at_least_one_token():
    spec = ModelSpec("m", inputs=(InputSpec("mask", ("N", "T"), {"N": (1, 4), "T": (2, 9)}, dtype="int64",
                                            domain=(0, 1), kind="padding_mask"),), outputs=("y",))
    lengths = set()
    for seed in range(30):
        for distribution in DISTRIBUTIONS:
            mask = make_inputs(spec, InputRecipe({"N": 4, "T": 9}, {"mask": distribution}, 0.1, seed))["mask"]
            assert mask.dtype == np.int64 and mask.shape == (4, 9)
            for row in mask:
                length = int(row.sum())
                assert length >= 1 and (row[:length] == 1).all() and (row[length:] == 0).all()
                lengths.add(length)
    assert lengths == set(range(1, 10))  # every length occurs


def test_padding_mask_must_be_an_integer_matrix():
    with pytest.raises(SpecError, match="padding_mask is \\[N, T\\]"):
        InputSpec("mask", ("N", "T", 2), {"N": (1, 2), "T": (1, 3)}, dtype="int64", kind="padding_mask")
    with pytest.raises(SpecError, match="unknown kind 'pixels'"):
        InputSpec("x", ("N",), {"N": (1, 2)}, kind="pixels")


# --------------------------------------------------------------------------- dims without their range in memory

@FAST
@given(st.integers(1, 30), st.integers(0, 30), st.sets(st.one_of(st.integers(-2, 40), st.sampled_from(["H", "W"]))))
def test_free_values_are_the_list_of_untaken_values(low, extra, taken):
    high = low + extra
    listed = [v for v in range(low, high + 1) if v not in taken]
    free = free_values(low, high, taken)
    assert free.count == len(listed) and bool(free) == bool(listed)
    assert [free[i] for i in range(free.count)] == listed
    assert [free[-i] for i in range(1, free.count + 1)] == listed[::-1]
    for floor in (0, 2, low + 1, high + 1):
        assert [free.at_least(floor)[i] for i in range(free.at_least(floor).count)] == [v for v in listed if v >= floor]
    with pytest.raises(IndexError):
        free[free.count]


HUGE = ModelSpec("huge", (parse_input_spec("x:float32[N=1..1000000000000,8]"),
                          parse_input_spec("image:float32[N=1..1000000000000,3,H=2..1000000000000,W=2..9]:NCHW")),
                 ("y",))


def test_a_dim_bound_of_10_to_the_12_is_drawn_without_a_list_of_sizes():
    start = time.perf_counter()
    tracemalloc.start()
    try:
        corners = corner_recipes(HUGE)
        example = example_recipe(HUGE)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    first = find(input_recipes(HUGE), lambda r: True, settings=settings(database=None))
    elapsed = time.perf_counter() - start
    # Not a speed goal: a list of 10**12 sizes (8 TB) would never finish, and the peak says none was built.
    assert elapsed < 10.0 and peak < 2**20, (elapsed, peak)
    largest = dict(corners)["largest shapes"].dims
    assert largest["N"] == 10**12 and largest["H"] == 10**12 and largest["W"] == 9
    assert 2 <= example.dims["N"] <= 10**12 and len({example.dims["N"], example.dims["H"]}) == 2
    assert first.dims == {"W": 2, "N": 1, "H": 4}
    # the whole range is reachable, not only its start
    for dim in ("N", "H"):
        drawn = find(input_recipes(HUGE), lambda r: r.dims[dim] > 10**11,
                     settings=settings(max_examples=500, database=None, derandomize=True))
        assert drawn.dims[dim] <= 10**12 and drawn.dims["H"] != drawn.dims["W"]


def test_pick_dims_keep_their_meaning_on_huge_bounds():
    assert pick_dims(HUGE, "min") == {"W": 2, "N": 1, "H": 4}
    assert pick_dims(HUGE, "max") == {"W": 9, "N": 10**12, "H": 10**12}
    small, mid = pick_dims(HUGE, "small"), pick_dims(HUGE, "mid")
    assert small["N"] == 2 and mid["N"] == (10**12 - 2 + 1) // 2 + 2


def test_tensor_budget_refuses_the_largest_shape_with_its_sizes():
    with pytest.raises(CaseError) as info:
        check_tensor_budget(HUGE, 1024)
    message = info.value.message
    assert info.value.stage == "inputs"
    assert "input 'x' at the largest shape its bounds allow, float32[1000000000000, 8] (N=1..1000000000000), is " \
           "29.1 TiB (32000000000000 bytes)" in message
    assert "input 'image'" in message and "H=2..1000000000000, W=2..9" in message
    assert "over the tensor budget of 1024 MiB (--parity-max-tensor-mb)" in message
    assert "Narrow the dims' bounds" in message


def test_tensor_budget_counts_each_tensor_in_its_own_dtype():
    spec = model(InputSpec("x", ("N", 1024, 1024), {"N": (1, 256)}, dtype="float16"))   # 512 MiB at N=256
    assert tensor_bytes(spec.inputs[0], (256, 1024, 1024)) == 512 * 2**20
    check_tensor_budget(spec, 512)
    with pytest.raises(CaseError, match=r"float16\[256, 1024, 1024\] \(N=1..256\), is 512 MiB \(536870912 bytes\)"):
        check_tensor_budget(spec, 511.5)
    check_tensor_budget(model(InputSpec("b", (2**20,), dtype="bool")), 1)   # one byte each
    check_tensor_budget(model(InputSpec("b", (2**20,), dtype="bfloat16")), 2)
    with pytest.raises(CaseError, match="no symbolic dims"):
        check_tensor_budget(model(InputSpec("b", (2**20,), dtype="bfloat16")), 1.9)


@pytest.mark.parametrize("dtype,domain", [("float32", (-1.7e38, 1.7e38)), ("float32", (3e38, 3.4e38)),
                                          ("float16", (-65504.0, 65504.0)), ("bfloat16", (-1.6e38, 1.6e38)),
                                          ("float64", (-8e307, 8e307))])
def test_the_widest_accepted_domains_make_finite_tensors(dtype, domain):
    spec = model(InputSpec("x", (64, 64), dtype=dtype, domain=domain))
    for distribution, special in itertools.product(DISTRIBUTIONS, SPECIAL_FRACTIONS):
        x = make_inputs(spec, InputRecipe({}, {"x": distribution}, special, 5))["x"].astype(np.float64)
        assert np.isfinite(x).all(), (distribution, special)
