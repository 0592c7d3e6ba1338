"""compare.compare_outputs: every metric against a hand-computed value, the verdict
at its boundaries, and every failure mode beside the case that passes.

House rule: a check that cannot fail is a defect, so each feature is exercised
with a planted difference that must fail next to the one that passes.
"""

from __future__ import annotations

import json
import math
import re

import ml_dtypes
import numpy as np
import pytest

from harness.compare import OutputComparison, compare_distributions, compare_outputs
from harness.specs import SpecError, Tolerance
from harness.tolerances import CPU_FLOAT, CUDA_TF32_FLOAT

FLOATS = [np.float16, np.float32, np.float64]


def cmp(ref, got, tol=CPU_FLOAT, name="out") -> OutputComparison:
    return compare_outputs(name, np.asarray(ref), np.asarray(got), tol)


# --------------------------------------------------------------------------- identical

@pytest.mark.parametrize("dtype", FLOATS)
def test_identical_arrays_pass_with_zero_error(dtype):
    ref = np.random.default_rng(0).standard_normal((3, 5, 7)).astype(dtype)
    r = cmp(ref, ref.copy())
    assert r.passed, r.message
    assert r.max_abs == 0 and r.mean_abs == 0 and r.rmse == 0 and r.max_rel == 0
    assert r.cosine == pytest.approx(1.0, abs=1e-12)
    assert r.max_ulp == 0
    assert r.mismatch_fraction == 0 and r.error_ratio == 0
    assert r.elements == 105
    assert r.needed_atol is None and r.needed_rtol is None
    assert r.message == "out: within tolerance"
    # ...and one ulp planted anywhere makes the same call see it.
    got = ref.copy()
    got[1, 2, 3] = np.nextafter(got[1, 2, 3], dtype(np.inf))
    r2 = cmp(ref, got)
    assert r2.max_ulp == 1 and r2.max_abs > 0


def test_identical_arrays_with_exact_tolerance_pass_including_zeros():
    # atol == 0: 0/0 must count as no error, not NaN.
    ref = np.array([0.0, 1.0, -2.0, 0.0], np.float32)
    r = cmp(ref, ref.copy(), Tolerance())
    assert r.passed and r.error_ratio == 0
    got = ref.copy()
    got[0] = 1e-30
    r2 = cmp(ref, got, Tolerance())
    assert not r2.passed and r2.error_ratio == math.inf and r2.worst_index == (0,)


# --------------------------------------------------------------------------- metrics by hand

REF = [1.0, -2.0, 4.0, 0.0]
GOT = [1.5, -2.0, 3.0, 0.25]
# diff = [0.5, 0, 1, 0.25]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_metrics_against_hand_computed_values(dtype):
    tol = Tolerance(atol=0.3, rtol=0.1)
    r = cmp(np.array(REF, dtype), np.array(GOT, dtype), tol)
    assert r.max_abs == pytest.approx(1.0)
    assert r.max_rel == pytest.approx(0.5)  # 0.5/1 beats 1/4; the zero ref is skipped
    assert r.mean_abs == pytest.approx(1.75 / 4)
    assert r.rmse == pytest.approx(math.sqrt((0.25 + 0 + 1 + 0.0625) / 4))
    dot = 1 * 1.5 + (-2) * (-2) + 4 * 3 + 0 * 0.25
    cos = dot / math.sqrt((1 + 4 + 16) * (2.25 + 4 + 9 + 0.0625))
    assert r.cosine == pytest.approx(cos, rel=1e-6)
    assert r.max_ref == pytest.approx(4.0)
    assert r.normalized_error == pytest.approx(1.0 / 4.0)
    # bounds 0.3 + 0.1*|ref| = [0.4, 0.5, 0.7, 0.3]; ratios [1.25, 0, 1.4286, 0.8333]
    assert r.mismatch_fraction == pytest.approx(0.5)
    assert r.error_ratio == pytest.approx(1.0 / 0.7, rel=1e-6)
    assert r.worst_index == (2,)
    assert r.worst_ref == 4.0 and r.worst_got == 3.0
    assert not r.passed


def test_error_ratio_and_mismatch_fraction_with_atol_only():
    r = cmp(np.array(REF), np.array(GOT), Tolerance(atol=0.3))
    assert r.error_ratio == pytest.approx(1.0 / 0.3)
    assert r.mismatch_fraction == pytest.approx(0.5)
    assert r.worst_index == (2,)
    r = cmp(np.array(REF), np.array(GOT), Tolerance(atol=1.0))
    assert r.passed and r.error_ratio == pytest.approx(1.0) and r.mismatch_fraction == 0


def test_cosine_of_opposite_vectors_is_minus_one_and_orthogonal_zero():
    a = np.array([1.0, 2.0, 3.0], np.float32)
    assert cmp(a, -a).cosine == pytest.approx(-1.0, abs=1e-6)
    assert cmp(np.array([1.0, 0.0]), np.array([0.0, 1.0])).cosine == pytest.approx(0.0, abs=1e-12)
    # all-zero on both sides: cosine 1 (nothing differs); zero against nonzero: 0
    z = np.zeros(4, np.float32)
    assert cmp(z, z).cosine == 1.0
    assert cmp(z, z + 1).cosine == 0.0


def test_normalized_error_of_all_zero_reference():
    z = np.zeros(3)
    assert cmp(z, z).normalized_error == 0.0
    assert cmp(z, z + 0.5).normalized_error == math.inf


# --------------------------------------------------------------------------- ulp

@pytest.mark.parametrize("dtype", FLOATS)
def test_max_ulp_adjacent_floats_is_one(dtype):
    ref = np.array([1.0, -3.5, 1e-3, 100.0], dtype)
    got = ref.copy()
    got[2] = np.nextafter(ref[2], dtype(np.inf))
    assert cmp(ref, got).max_ulp == 1
    got[2] = np.nextafter(np.nextafter(ref[2], dtype(np.inf)), dtype(np.inf))
    assert cmp(ref, got).max_ulp == 2
    # toward zero on the negative side too
    got = ref.copy()
    got[1] = np.nextafter(ref[1], dtype(0))
    assert cmp(ref, got).max_ulp == 1


@pytest.mark.parametrize("dtype", FLOATS)
def test_max_ulp_signed_zeros_are_zero_apart(dtype):
    r = cmp(np.array([0.0, 1.0], dtype), np.array([-0.0, 1.0], dtype))
    assert r.max_ulp == 0 and r.passed
    # the smallest subnormal either side of zero is 2 apart (via zero)
    tiny = np.nextafter(dtype(0), dtype(1))
    assert cmp(np.array([tiny]), np.array([-tiny])).max_ulp == 2


@pytest.mark.parametrize("dtype,one_bits", [(np.float16, 0x3C00), (np.float32, 0x3F800000),
                                             (np.float64, 0x3FF0000000000000)])
def test_max_ulp_across_zero_is_sum_of_magnitudes(dtype, one_bits):
    r = cmp(np.array([1.0], dtype), np.array([-1.0], dtype))
    assert r.max_ulp == float(2 * one_bits)
    # and it is the distance to the *largest* element pair
    r2 = cmp(np.array([1.0, 2.0], dtype), np.array([1.0, -1.0], dtype))
    two_bits = int(np.array(2.0, dtype).view({2: np.int16, 4: np.int32, 8: np.int64}[np.dtype(dtype).itemsize]))
    assert r2.max_ulp == float(two_bits + one_bits)


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
def test_max_ulp_float32_extremes_do_not_overflow():
    big = np.finfo(np.float32).max
    r = cmp(np.array([big], np.float32), np.array([-big], np.float32))
    assert r.max_ulp == float(2 * int(np.array(big, np.float32).view(np.int32)))


def test_max_ulp_ignores_matching_nonfinite_elements():
    ref = np.array([np.nan, np.inf, 1.0], np.float32)
    got = np.array([np.nan, np.inf, np.nextafter(np.float32(1), np.float32(2))], np.float32)
    r = cmp(ref, got)
    assert r.passed and r.max_ulp == 1


def test_max_ulp_not_computed_for_integers():
    assert cmp(np.array([1, 2]), np.array([1, 2]), Tolerance()).max_ulp is None


# --------------------------------------------------------------------------- verdict boundary

def _just_above(x, dtype):
    return np.nextafter(dtype(x), dtype(np.inf))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_boundary_atol(dtype):
    tol = Tolerance(atol=0.5)
    ref = np.array([0.0, 1.0], dtype)
    inside = cmp(ref, np.array([0.5, 1.0], dtype), tol)
    assert inside.passed and inside.error_ratio == pytest.approx(1.0)
    outside = cmp(ref, np.array([_just_above(0.5, dtype), 1.0], dtype), tol)
    assert not outside.passed and outside.worst_index == (0,)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_boundary_atol_by_max(dtype):
    # max|ref| = 4, atol_by_max = 1/8: every element may be 0.5 off, even where ref is 0.
    tol = Tolerance(atol_by_max=0.125)
    ref = np.array([4.0, 0.0], dtype)
    assert cmp(ref, np.array([4.0, 0.5], dtype), tol).passed
    assert cmp(ref, np.array([4.5, 0.0], dtype), tol).passed
    out = cmp(ref, np.array([4.0, _just_above(0.5, dtype)], dtype), tol)
    assert not out.passed and out.worst_index == (1,)
    # the term really scales with max|ref|: halve the max and the same error fails
    assert not cmp(np.array([2.0, 0.0], dtype), np.array([2.0, 0.5], dtype), tol).passed


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_boundary_rtol(dtype):
    tol = Tolerance(rtol=0.125)
    ref = np.array([8.0, -8.0, 0.0], dtype)
    assert cmp(ref, np.array([9.0, -7.0, 0.0], dtype), tol).passed
    assert not cmp(ref, np.array([_just_above(9.0, dtype), -7.0, 0.0], dtype), tol).passed
    assert not cmp(ref, np.array([9.0, np.nextafter(dtype(-7.0), dtype(0)), 0.0], dtype), tol).passed
    # rtol allows nothing where ref is 0
    r = cmp(ref, np.array([8.0, -8.0, 1e-20], dtype), tol)
    assert not r.passed and r.worst_index == (2,)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_boundary_all_three_terms_add_up(dtype):
    tol = Tolerance(atol=0.25, atol_by_max=0.0625, rtol=0.125)
    ref = np.array([4.0, 2.0], dtype)
    # bound at ref=2: 0.25 + 0.0625*4 + 0.125*2 = 0.75
    inside = cmp(ref, np.array([4.0, 2.75], dtype), tol)
    assert inside.passed and inside.error_ratio == pytest.approx(1.0)
    assert not cmp(ref, np.array([4.0, _just_above(2.75, dtype)], dtype), tol).passed
    # drop any one term and the same error fails
    for weaker in (tol.merged(atol=0.0), Tolerance(atol=0.25, rtol=0.125), tol.merged(rtol=0.0)):
        assert not cmp(ref, np.array([4.0, 2.75], dtype), weaker).passed


@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e4])
def test_boundary_with_relative_margins(scale):
    tol = Tolerance(atol=1e-6 * scale, rtol=1e-3, atol_by_max=1e-4)
    ref = np.array([1.0, -3.0, 0.5], np.float64) * scale
    bound = tol.atol + tol.atol_by_max * 3 * scale + tol.rtol * abs(ref[2])
    got = ref.copy()
    got[2] = ref[2] + 0.999 * bound
    assert cmp(ref, got, tol).passed
    got[2] = ref[2] + 1.001 * bound
    assert not cmp(ref, got, tol).passed
    got[2] = ref[2] - 1.001 * bound  # the sign of the error does not matter
    assert not cmp(ref, got, tol).passed


# --------------------------------------------------------------------------- max_mismatch

@pytest.mark.parametrize("fraction,n", [(0.2, 10), (0.25, 10), (0.1, 30), (0.5, 7), (0.01, 100)])
def test_max_mismatch_allows_exactly_floor_fraction_times_n(fraction, n):
    allowed = math.floor(fraction * n)
    tol = Tolerance(atol=0.1, max_mismatch=fraction)
    ref = np.zeros(n, np.float32)
    got = ref.copy()
    got[:allowed] = 1.0
    r = cmp(ref, got, tol)
    assert r.passed, r.message
    assert r.mismatch_fraction == pytest.approx(allowed / n)
    got[allowed] = 1.0
    r = cmp(ref, got, tol)
    assert not r.passed
    assert r.mismatch_fraction == pytest.approx((allowed + 1) / n)


def test_max_mismatch_error_ratio_is_the_first_one_not_allowed():
    ref = np.zeros(10)
    got = np.array([5.0, 4.0, 3.0, 2.0, 0.5, 0, 0, 0, 0, 0])
    r = cmp(ref, got, Tolerance(atol=1.0, max_mismatch=0.2))  # 2 may fail
    assert r.error_ratio == pytest.approx(3.0) and not r.passed
    assert r.worst_index == (0,)  # the worst element is still reported
    r = cmp(ref, got, Tolerance(atol=1.0, max_mismatch=0.4))  # 4 may fail
    assert r.error_ratio == pytest.approx(0.5) and r.passed


def test_max_mismatch_does_not_excuse_nonfinite():
    ref = np.zeros(10, np.float32)
    got = ref.copy()
    got[3] = np.nan
    r = cmp(ref, got, Tolerance(atol=1.0, max_mismatch=0.5))
    assert not r.passed and r.nonfinite_mismatches == 1


def test_max_mismatch_one_lets_every_element_fail():
    r = cmp(np.zeros(2, np.float32), np.ones(2, np.float32), Tolerance(max_mismatch=1.0))
    assert r.passed


# --------------------------------------------------------------------------- NaN / Inf

@pytest.mark.parametrize("dtype", FLOATS)
def test_nan_at_same_positions_passes_and_metrics_use_finite_rest(dtype):
    ref = np.array([np.nan, 1.0, 2.0], dtype)
    got = np.array([np.nan, 1.0, 2.0], dtype)
    r = cmp(ref, got)
    assert r.passed and r.nonfinite_mismatches == 0 and r.max_abs == 0
    got[2] = 2.5
    r = cmp(ref, got)
    assert not r.passed and r.max_abs == pytest.approx(0.5) and r.nonfinite_mismatches == 0
    assert r.worst_index == (2,)


@pytest.mark.parametrize("side", ["ref", "got"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_on_one_side_fails(side, bad):
    clean = np.array([1.0, 2.0, 3.0], np.float32)
    dirty = clean.copy()
    dirty[1] = bad
    ref, got = (dirty, clean) if side == "ref" else (clean, dirty)
    # even with a tolerance that would swallow any finite error
    r = cmp(ref, got, Tolerance(atol=1e30, rtol=1.0))
    assert not r.passed
    assert r.nonfinite_mismatches == 1
    assert "NaN/Inf on one side" in r.message
    assert r.worst_index == (1,)
    assert r.error_ratio == math.inf


def test_opposite_infinities_fail_same_infinities_pass():
    ref = np.array([np.inf, -np.inf, 0.0], np.float32)
    assert cmp(ref, ref.copy()).passed
    r = cmp(ref, np.array([-np.inf, -np.inf, 0.0], np.float32))
    assert not r.passed and r.nonfinite_mismatches == 1 and "NaN/Inf on one side" in r.message
    r = cmp(ref, np.array([np.inf, np.inf, 0.0], np.float32))
    assert not r.passed and r.worst_index == (1,)


def test_nan_against_inf_fails():
    r = cmp(np.array([np.nan], np.float32), np.array([np.inf], np.float32))
    assert not r.passed and r.nonfinite_mismatches == 1


def test_an_output_all_nan_on_both_sides_is_not_accepted_by_tolerance():
    """Nothing finite was compared: a converted model returning NaN everywhere would match too."""
    ref = np.full((2, 3), np.nan, np.float32)
    ref[1, 1] = np.inf
    r = cmp(ref, ref.copy())
    assert r.accepted_by is None and r.finite_elements == 0
    assert "all 6 elements NaN/Inf on both sides" in r.message and "no finite value to compare" in r.message
    assert (r.ref_nan, r.ref_inf) == (5, 1)


def test_matching_nan_positions_on_a_partly_nan_output_pass_with_their_count():
    ref = np.array([np.nan, 1.0, 2.0, np.inf], np.float32)
    r = cmp(ref, ref.copy())
    assert r.passed and r.accepted_by == "tolerance"
    assert (r.ref_nan, r.ref_inf, r.finite_elements) == (1, 1, 2)


# --------------------------------------------------------------------------- distributions (random ops)

def _draws(rng: np.random.Generator, high: float, count: int = 20) -> list[np.ndarray]:
    return [rng.uniform(0.0, high, size=(4, 50)).astype(np.float32) for _ in range(count)]


def test_draws_of_one_distribution_pass_by_distribution():
    rng = np.random.default_rng(0)
    r = compare_distributions("y", _draws(rng, 1.0), _draws(rng, 1.0))
    assert r.passed and r.accepted_by == "distribution", r.message
    assert r.extra["distribution"]["draws"] == 20 and r.extra["distribution"]["original"]["values"] == 4000
    assert "same distribution over 20 draws" in r.message


def test_draws_of_a_wider_range_fail_naming_the_statistics():
    rng = np.random.default_rng(0)
    r = compare_distributions("y", _draws(rng, 1.0), _draws(rng, 2.0))
    assert not r.passed and r.error_ratio > 1
    assert "draws from another distribution" in r.message and "mean 0.49" in r.message
    assert "max 0.9996 vs 2 (allowed difference 0.25)" in r.message


def _noisy(rng: np.random.Generator, x: np.ndarray, spread: float = 1.0, count: int = 20) -> list[np.ndarray]:
    """`count` draws of x + U(0.5 - spread / 2, 0.5 + spread / 2): one input, drawn anew each run."""
    return [x + (0.5 + spread * (rng.random(x.shape, dtype=np.float32) - 0.5)).astype(np.float32)
            for _ in range(count)]


def test_draws_that_lost_their_randomness_fail_naming_the_spread():
    """x + 0.5 pools like x + U(0, 1) (the same mean, a variance within bounds): each position's spread tells."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 40)).astype(np.float32)
    r = compare_distributions("y", _noisy(rng, x), [x + np.float32(0.5)] * 20)
    assert not r.passed and r.extra["distribution"]["ratios"]["mean"] < 1, r.message
    assert r.message == ("y: the converted model gives the same values on every draw where the original's vary "
                         "(per-position spread over 20 draws of the same inputs: original 0.29, converted 0): "
                         "it lost the randomness")
    halved = compare_distributions("y", _noisy(rng, x), _noisy(rng, x, spread=0.5))
    assert not halved.passed and "draw_variance 0.08" in halved.message and "vs 0.02" in halved.message


def test_draws_varying_alike_at_each_position_pass_with_the_spread_bound_stated():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 40)).astype(np.float32)
    r = compare_distributions("y", _noisy(rng, x), _noisy(rng, x))
    assert r.passed and r.accepted_by == "distribution", r.message
    stated = r.extra["distribution"]
    assert abs(stated["original"]["draw_variance"] - 1 / 12) < 0.01 and stated["ratios"]["draw_variance"] < 1
    assert 0 < stated["bounds"]["draw_variance"] < 1 / 24   # tight enough to fail a halved spread


def test_the_spread_over_draws_counts_only_positions_finite_in_every_draw():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 40)).astype(np.float32)
    ref, got = _noisy(rng, x), _noisy(rng, x)
    for side in (ref, got):
        for index, draw in enumerate(side):
            draw[:, [index, index + 20]] = np.nan   # each position NaN in one of 20 draws: none to measure
    r = compare_distributions("y", ref, got)
    assert r.passed and r.extra["distribution"]["original"]["draw_variance"] == 0, r.message
    with pytest.raises(ValueError, match="at least 3 draws, got 2"):
        compare_distributions("y", ref[:2], got[:2])


def test_draws_of_another_shape_or_dtype_fail():
    rng = np.random.default_rng(0)
    ref = _draws(rng, 1.0, 3)
    assert "shape mismatch" in compare_distributions("y", ref, [x[:, :10] for x in ref]).message
    assert "dtype mismatch" in compare_distributions("y", ref, [x.astype(np.float64) for x in ref]).message


def test_all_nonfinite_matching_passes():
    a = np.array([np.nan, np.inf, -np.inf], np.float64)
    r = cmp(a, a.copy())
    assert r.passed and r.max_ulp == 0


# --------------------------------------------------------------------------- shape / dtype

def test_shape_mismatch_fails_and_names_both_shapes():
    r = cmp(np.zeros((2, 3), np.float32), np.zeros((3, 2), np.float32))
    assert not r.passed
    assert "shape mismatch" in r.message and "(2, 3)" in r.message and "(3, 2)" in r.message
    assert r.ref_shape == (2, 3) and r.got_shape == (3, 2)
    assert r.max_abs is None  # nothing to measure
    # same element count, broadcastable shape: still a mismatch
    assert not cmp(np.zeros((1, 4)), np.zeros((4,))).passed
    assert cmp(np.zeros((1, 4)), np.zeros((1, 4))).passed


def test_dtype_mismatch_fails():
    r = cmp(np.ones(3, np.float32), np.ones(3, np.float64))
    assert not r.passed
    assert "dtype mismatch" in r.message and "float32" in r.message and "float64" in r.message
    assert not cmp(np.ones(3, np.int32), np.ones(3, np.int64), Tolerance()).passed
    assert cmp(np.ones(3, np.int64), np.ones(3, np.int64), Tolerance()).passed


# --------------------------------------------------------------------------- integers

@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int32, np.int64, np.bool_])
def test_integer_outputs_compared_exactly(dtype):
    rng = np.random.default_rng(1)
    ref = rng.integers(0, 2 if dtype is np.bool_ else 100, (4, 25)).astype(dtype)
    r = cmp(ref, ref.copy(), Tolerance())
    assert r.passed and r.max_abs == 0
    got = ref.copy()
    got[2, 7] = not got[2, 7] if dtype is np.bool_ else got[2, 7] + 1
    r = cmp(ref, got, Tolerance())
    assert not r.passed
    assert r.mismatch_fraction == pytest.approx(1 / 100)
    assert r.worst_index == (2, 7)
    assert r.max_abs == 1


def test_unsigned_difference_does_not_wrap():
    r = cmp(np.array([0], np.uint8), np.array([255], np.uint8), Tolerance())
    assert r.max_abs == 255 and not r.passed


def test_int64_beyond_float64_precision_compared_exactly():
    ref = np.array([2**53 + 1], np.int64)
    got = np.array([2**53], np.int64)
    assert not cmp(ref, got, Tolerance()).passed


# --------------------------------------------------------------------------- message

def test_failure_message_names_output_index_ref_and_got():
    ref = np.arange(12, dtype=np.float32).reshape(3, 4) / 8
    got = ref.copy()
    got[1, 2] = 7.25  # ref there is 0.75
    got[2, 3] += 1e-3  # a smaller error elsewhere
    r = cmp(ref, got, CPU_FLOAT, name="logits")
    assert not r.passed
    assert r.message.startswith("logits: ")
    assert "[1, 2]" in r.message
    assert "original 0.75" in r.message and "converted 7.25" in r.message
    assert r.worst_index == (1, 2) and r.worst_ref == 0.75 and r.worst_got == 7.25
    assert "would pass with atol" in r.message


def test_nonfinite_message_names_position_and_values():
    ref = np.zeros((2, 2), np.float32)
    got = ref.copy()
    got[1, 0] = np.nan
    r = cmp(ref, got, name="probs")
    assert r.message.startswith("probs: 1 element(s) NaN/Inf on one side only")
    assert "[1, 0]" in r.message and "converted nan" in r.message


# --------------------------------------------------------------------------- needed_atol / needed_rtol

def _random_case(seed, dtype):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 200))
    ref = (rng.standard_normal(n) * 10 ** rng.uniform(-2, 2)).astype(dtype)
    got = (ref.astype(np.float64) + rng.standard_normal(n) * 10 ** rng.uniform(-5, -1)).astype(dtype)
    return ref, got


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("tol", [Tolerance(atol=1e-6, rtol=1e-4), CPU_FLOAT,
                                 Tolerance(atol=1e-7, rtol=1e-5, max_mismatch=0.05)],
                         ids=["plain", "cpu_float", "mismatch"])
def test_needed_atol_is_sufficient_and_tight(seed, dtype, tol):
    ref, got = _random_case(seed, dtype)
    r = cmp(ref, got, tol)
    assert not r.passed
    assert r.needed_atol is not None and r.needed_atol > 0
    keep = dict(rtol=tol.rtol, max_mismatch=tol.max_mismatch)
    ok = cmp(ref, got, Tolerance(atol=r.needed_atol, **keep))
    assert ok.passed, ok.message
    assert not cmp(ref, got, Tolerance(atol=r.needed_atol * 0.9, **keep)).passed


@pytest.mark.parametrize("seed", range(9))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_needed_rtol_is_sufficient_and_tight(seed, dtype):
    ref, got = _random_case(seed, dtype)
    ref = np.where(ref == 0, 1, ref).astype(dtype)  # rtol cannot help where ref is 0
    tol = Tolerance(atol=1e-7, rtol=1e-6)
    r = cmp(ref, got, tol)
    assert not r.passed
    assert r.needed_rtol is not None and 0 < r.needed_rtol < math.inf
    assert cmp(ref, got, tol.merged(rtol=r.needed_rtol)).passed
    assert not cmp(ref, got, tol.merged(rtol=r.needed_rtol * 0.9)).passed


def test_needed_values_by_hand():
    ref = np.array([1.0, 10.0, 0.0])
    got = np.array([1.5, 10.0, 0.1])
    tol = Tolerance(atol=0.05, rtol=0.1)
    r = cmp(ref, got, tol)
    # needed atol: max(|d| - 0.1|ref|) = max(0.4, 0, 0.1) = 0.4
    assert r.needed_atol == pytest.approx(0.4)
    # needed rtol: the zero ref needs 0.1 > atol 0.05 -> no rtol helps
    assert r.needed_rtol == math.inf
    r = cmp(ref[:2], got[:2], tol)
    assert r.needed_rtol == pytest.approx(0.45)  # (0.5 - 0.05) / 1
    assert cmp(ref[:2], got[:2], tol.merged(rtol=0.45 * 1.0001)).passed
    assert not cmp(ref[:2], got[:2], tol.merged(rtol=0.45 * 0.9)).passed


def test_needed_atol_includes_atol_by_max_share():
    # With atol_by_max, needed_atol is the *total* absolute allowance.
    ref = np.array([100.0, 0.0])
    got = np.array([100.0, 2.0])
    r = cmp(ref, got, Tolerance(atol_by_max=0.01))  # allows 1.0
    assert not r.passed and r.needed_atol == pytest.approx(2.0)
    assert cmp(ref, got, Tolerance(atol=r.needed_atol)).passed


@pytest.mark.parametrize("case", ["float32_by_hand", "float64_seed4"])
def test_needed_rtol_sufficient_when_quotient_rounds_down(case):
    if case == "float32_by_hand":
        ref = np.array([0.1], np.float32)
        got = np.array([0.1 + 26 / 7], np.float32)
        tol = Tolerance()
    else:
        ref, got = _random_case(4, np.float64)
        tol = Tolerance(atol=1e-7, rtol=1e-6)
    r = cmp(ref, got, tol)
    assert not r.passed
    rerun = cmp(ref, got, tol.merged(rtol=r.needed_rtol))
    assert rerun.passed, (r.needed_rtol, rerun.error_ratio)


# --------------------------------------------------------------------------- JSON

def test_to_json_is_standard_json_including_inf_and_nan():
    ref = np.array([[0.0, 1.0], [np.nan, 2.0]], np.float32)
    got = np.array([[1.0, 1.0], [np.nan, 2.0]], np.float32)
    r = cmp(ref, got)  # a zero ref that differs: needed_rtol is inf
    assert r.needed_rtol == math.inf
    data = r.to_json()
    text = json.dumps(data, allow_nan=False)
    back = json.loads(text)
    assert back["needed_rtol"] == "inf"
    assert back["worst_index"] == [0, 0] and back["ref_shape"] == [2, 2]
    assert back["passed"] is False and back["max_abs"] == 1.0
    assert back["tolerance"] == {"atol": 1e-7, "rtol": 1e-5, "atol_by_max": 1e-5, "atol_by_range": 0.0,
                                 "max_mismatch": 0.0,
                                 "noise_multiple": 16.0, "min_cosine": 0.0, "min_snr_db": 0.0, "min_top1": 0.0,
                                 "min_topk_overlap": 0.0}
    assert back["failed_thresholds"] == [] and back["top1_agreement"] is None
    assert json.loads(json.dumps(cmp(ref, ref.copy()).to_json(), allow_nan=False))["snr_db"] == "inf"

    r = cmp(np.array([1.0], np.float32), np.array([np.nan], np.float32))
    back = json.loads(json.dumps(r.to_json(), allow_nan=False))
    assert back["worst_got"] == "nan" and back["error_ratio"] == "inf"


def test_to_json_of_shape_mismatch_and_empty():
    for r in (cmp(np.zeros(2), np.zeros(3)), cmp(np.zeros((0, 3)), np.zeros((0, 3)))):
        back = json.loads(json.dumps(r.to_json(), allow_nan=False))
        assert back["max_abs"] is None and back["name"] == "out"


def test_an_infinite_tolerance_is_refused():
    """It would pass every finite error: a check that cannot fail."""
    with pytest.raises(SpecError, match="must be finite"):
        Tolerance(atol=math.inf)


# --------------------------------------------------------------------------- 0-d and empty

def test_scalar_output():
    r = cmp(np.float32(1.5), np.float32(1.5))
    assert r.passed and r.elements == 1 and r.ref_shape == () and r.worst_index == ()
    r = cmp(np.float32(1.5), np.float32(2.0))
    assert not r.passed and r.max_abs == 0.5 and r.worst_index == ()
    assert r.worst_ref == 1.5 and r.worst_got == 2.0
    assert "original 1.5" in r.message
    assert cmp(np.array(3, np.int64), np.array(3, np.int64), Tolerance()).passed
    assert not cmp(np.array(3, np.int64), np.array(4, np.int64), Tolerance()).passed


def test_empty_output():
    r = cmp(np.zeros((0, 4), np.float32), np.zeros((0, 4), np.float32))
    assert r.passed and r.elements == 0 and "empty" in r.message
    assert not cmp(np.zeros((0, 4), np.float32), np.zeros((0, 5), np.float32)).passed
    assert not cmp(np.zeros((0,), np.float32), np.zeros((1,), np.float32)).passed


# --------------------------------------------------------------------------- narrow floats

def test_float16_comparison():
    ref = np.array([1.0, 2.0, 1000.0], np.float16)
    got = ref.copy()
    got[2] = 1001.0  # float16 spacing at 1000 is 0.5
    r = cmp(ref, got, Tolerance(atol=1e-3, rtol=1e-2))
    assert r.passed and r.max_ulp == 2 and r.max_abs == 1.0
    assert not cmp(ref, got, Tolerance(atol=1e-3, rtol=1e-4)).passed


def test_bfloat16_comparison():
    bf = np.dtype(ml_dtypes.bfloat16)
    ref = np.array([1.0, 2.0, 3.0], bf)
    r = cmp(ref, ref.copy(), Tolerance())
    assert r.passed and r.max_abs == 0
    got = np.array([1.0, 2.0, 3.5], bf)
    r = cmp(ref, got, Tolerance(rtol=0.1))
    assert not r.passed and r.max_abs == 0.5 and r.worst_index == (2,)
    assert cmp(ref, got, Tolerance(rtol=0.2)).passed


def test_cuda_default_passes_what_cpu_default_fails():
    rng = np.random.default_rng(3)
    ref = rng.standard_normal(1000).astype(np.float32)
    got = (ref + np.float32(1e-4) * rng.standard_normal(1000).astype(np.float32)).astype(np.float32)
    assert not cmp(ref, got, CPU_FLOAT).passed
    assert cmp(ref, got, CUDA_TF32_FLOAT).passed
    assert not cmp(ref, got + np.float32(0.1), CUDA_TF32_FLOAT).passed


def test_metrics_for_huge_opposite_values_stay_finite():
    with np.errstate(over="ignore"):
        r = cmp(np.array([-3e38], np.float32), np.array([3e38], np.float32))
    assert not r.passed
    assert r.max_abs == pytest.approx(6e38, rel=1e-6)
    assert -1.0 <= r.cosine <= 1.0


# --------------------------------------------------------------------------- whole-output thresholds

LOOSE = Tolerance(atol_by_max=1.0)   # any error up to max|ref| passes elementwise: only a threshold can fail


def _logits(rows=4, classes=10, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, classes)).astype(np.float32)


def test_snr_by_hand_and_inf_without_error():
    r = cmp(np.array(REF, np.float32), np.array(GOT, np.float32))
    # sum ref^2 = 21, sum diff^2 = 0.25 + 1 + 0.0625
    assert r.snr_db == pytest.approx(10 * math.log10(21 / 1.3125), rel=1e-6)
    assert cmp(np.array(REF), np.array(REF)).snr_db == math.inf
    assert cmp(np.zeros(3), np.array([0.0, 1.0, 0.0])).snr_db == -math.inf


def test_doubled_scale_passes_a_loose_bound_but_fails_min_snr_db():
    ref = _logits(8, 32)
    doubled = cmp(ref, 2 * ref, LOOSE.merged(min_snr_db=20.0))
    assert not doubled.passed and doubled.failed_thresholds == ["min_snr_db"]
    assert doubled.snr_db == pytest.approx(0.0, abs=1e-5)
    assert doubled.error_ratio == pytest.approx(10.0, rel=1e-5)   # the error is 10x the amplitude 20 dB allows
    assert "within its elementwise tolerance, but SNR" in doubled.message and "< min_snr_db 20 dB" in doubled.message
    assert doubled.needed_atol is None   # the elementwise bound holds: no atol to suggest
    assert cmp(ref, 2 * ref, LOOSE).passed   # ...and without the threshold the loose bound lets it through
    close = cmp(ref, ref * np.float32(1.001), LOOSE.merged(min_snr_db=20.0))   # 60 dB
    assert close.passed and close.error_ratio == pytest.approx(0.01, rel=1e-3)


def test_cosine_threshold_at_its_boundary():
    # 16 elements: cosine and SNR judge outputs of WHOLE_OUTPUT_MIN_ELEMENTS or more
    ref = np.tile(np.array([1.0, 0.0], np.float64), 8)
    got = np.tile(np.array([1.0, 0.1], np.float64), 8)           # cos = 1 / sqrt(1.01)
    cos = 1 / math.sqrt(1.01)
    r = cmp(ref, got, LOOSE.merged(min_cosine=0.99))
    assert r.passed and r.cosine == pytest.approx(cos, abs=1e-12)
    assert r.error_ratio == pytest.approx((1 - cos) / 0.01, rel=1e-6)
    failed = cmp(ref, got, LOOSE.merged(min_cosine=0.999))
    assert not failed.passed and failed.failed_thresholds == ["min_cosine"]
    assert failed.error_ratio == pytest.approx((1 - cos) / 0.001, rel=1e-6) and failed.error_ratio > 1
    assert f"cosine {cos:.10g} < min_cosine 0.999" in failed.message


def test_sign_flipped_output_fails_min_cosine_not_a_loose_bound():
    ref = _logits()
    assert cmp(ref, -ref, Tolerance(atol_by_max=2.0)).passed
    flipped = cmp(ref, -ref, Tolerance(atol_by_max=2.0, min_cosine=0.5))
    assert not flipped.passed and flipped.cosine == pytest.approx(-1.0) and flipped.error_ratio == pytest.approx(4.0)


def test_a_top1_flip_in_one_row_fails_min_top1_and_a_tiny_perturbation_passes():
    ref = _logits()
    tiny = ref + np.float32(1e-4) * _logits(seed=1)
    kept = compare_outputs("logits", ref, tiny, LOOSE.merged(min_top1=1.0), class_axis=-1)
    assert kept.passed and kept.top1_agreement == 1.0 and kept.error_ratio < 1
    flipped = ref.copy()
    top2 = np.argsort(ref[2])[-2:]
    flipped[2, top2] = flipped[2, top2[::-1]]          # row 2's two best classes swap places
    r = compare_outputs("logits", ref, flipped, LOOSE.merged(min_top1=1.0), class_axis=-1)
    assert not r.passed and r.top1_agreement == 0.75 and r.error_ratio == math.inf
    assert r.failed_thresholds == ["min_top1"] and "top-1 agreement 0.75 < min_top1 1" in r.message
    allowing_one = compare_outputs("logits", ref, flipped, LOOSE.merged(min_top1=0.75), class_axis=-1)
    assert allowing_one.passed and allowing_one.error_ratio == pytest.approx(1.0)
    # Without a class axis the output has no classes: the threshold has nothing to measure.
    plain = cmp(ref, flipped, LOOSE.merged(min_top1=1.0))
    assert plain.passed and plain.top1_agreement is None and plain.topk_overlap is None


def test_topk_overlap_by_hand():
    ref = np.array([[9, 8, 7, 1, 0], [9, 8, 7, 1, 0]], np.float32)
    got = np.array([[9, 8, 7, 1, 0], [9, 8, 0, 7.5, 1]], np.float32)   # row 1: class 2 leaves the top 3
    r = compare_outputs("p", ref, got, LOOSE.merged(min_topk_overlap=0.8), class_axis=1, top_k=3)
    assert r.top_k == 3 and r.topk_overlap == pytest.approx((1 + 2 / 3) / 2) and r.top1_agreement == 1.0
    assert r.passed
    failed = compare_outputs("p", ref, got, LOOSE.merged(min_topk_overlap=0.9), class_axis=1, top_k=3)
    assert not failed.passed and failed.failed_thresholds == ["min_topk_overlap"]
    assert "top-3 overlap 0.8333333333 < min_topk_overlap 0.9" in failed.message


def test_top_k_is_clipped_to_the_class_axis_and_the_class_axis_may_be_any():
    ref = np.random.default_rng(3).standard_normal((2, 3, 4, 5)).astype(np.float32)   # [N, classes, H, W]
    same = compare_outputs("seg", ref, ref.copy(), Tolerance(min_top1=1.0, min_topk_overlap=1.0), class_axis=1,
                           top_k=5)
    assert same.passed and same.top_k == 3 and same.topk_overlap == 1.0
    # The class channels in another order (a layout bug): the elementwise bound is loose, the argmax is not.
    swapped = compare_outputs("seg", ref, ref[:, ::-1].copy(), Tolerance(atol_by_max=2.0, min_top1=0.9),
                              class_axis=1)
    assert not swapped.passed and swapped.top1_agreement < 0.9
    with pytest.raises(SpecError, match="class_axis 4 does not fit its shape"):
        compare_outputs("seg", ref, ref, Tolerance(), class_axis=4)


def test_a_tie_in_the_converted_output_contradicts_neither_class():
    ref = np.array([[3.0, 2.9, 0.0]], np.float32)
    quantized = np.array([[3.0, 3.0, 0.0]], np.float32)   # the top two land on one quantization step
    assert compare_outputs("p", ref, quantized, LOOSE.merged(min_top1=1.0), class_axis=-1).top1_agreement == 1.0
    wrong = np.array([[2.9, 3.0, 0.0]], np.float32)
    assert compare_outputs("p", ref, wrong, LOOSE.merged(min_top1=1.0), class_axis=-1).top1_agreement == 0.0


def test_thresholds_leave_integer_and_empty_outputs_alone():
    labels = np.array([1, 2, 3], np.int64)
    r = compare_outputs("ids", labels, labels.copy(), Tolerance(min_snr_db=40, min_cosine=0.99, min_top1=1.0),
                        class_axis=-1)
    assert r.passed and r.snr_db is None and r.top1_agreement is None
    bad = compare_outputs("ids", labels, labels + 1, Tolerance(min_snr_db=40), class_axis=-1)
    assert not bad.passed and bad.failed_thresholds == []   # integers are exact: no threshold needed to fail
    empty = compare_outputs("p", np.zeros((0, 5), np.float32), np.zeros((0, 5), np.float32),
                            Tolerance(min_snr_db=40, min_top1=1.0), class_axis=-1)
    assert empty.passed


def test_thresholds_use_the_finite_elements_and_a_nan_on_one_side_still_fails():
    ref = np.array([[1.0, np.nan, 3.0], [0.5, 2.0, -1.0]], np.float32)
    r = compare_outputs("p", ref, ref.copy(), Tolerance(min_snr_db=60, min_cosine=0.9999, min_top1=1.0),
                        class_axis=-1)
    assert r.passed and r.snr_db == math.inf and r.top1_agreement == 1.0
    got = ref.copy()
    got[1, 1] = np.nan
    one_sided = compare_outputs("p", ref, got, LOOSE.merged(min_snr_db=1.0), class_axis=-1)
    assert not one_sided.passed and "NaN/Inf on one side only" in one_sided.message


def test_a_failure_of_both_kinds_names_both():
    ref = _logits()
    r = cmp(ref, 2 * ref, CPU_FLOAT.merged(min_snr_db=20.0, min_cosine=0.5))
    assert r.failed_thresholds == ["min_snr_db"]   # a doubled output keeps its direction
    assert "elements out of tolerance" in r.message and "; and SNR" in r.message
    assert r.needed_atol is not None


@pytest.mark.parametrize("seed", range(6))
def test_error_ratio_at_most_one_is_exactly_a_pass(seed):
    rng = np.random.default_rng(seed)
    ref = rng.standard_normal((6, 12)).astype(np.float32)
    got = ref + rng.standard_normal((6, 12)).astype(np.float32) * np.float32(rng.choice([1e-4, 1e-2, 0.3, 1.0]))
    for tolerance in (LOOSE.merged(min_cosine=0.999), LOOSE.merged(min_snr_db=30.0), LOOSE.merged(min_top1=0.9),
                      LOOSE.merged(min_topk_overlap=0.8), CPU_FLOAT.merged(min_snr_db=10.0, min_top1=0.5)):
        r = compare_outputs("p", ref, got, tolerance, class_axis=-1, top_k=3)
        assert r.passed == (r.error_ratio <= 1.0), (tolerance, r.error_ratio, r.message)
        assert r.passed != bool(r.failed_thresholds) or r.mismatch_fraction > 0


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(min_cosine=1.5), "min_cosine is a fraction in [0, 1]"),
    (dict(min_top1=-0.1), "min_top1 must be >= 0"),
    (dict(min_topk_overlap=2.0), "min_topk_overlap is a fraction in [0, 1]"),
    (dict(min_snr_db=math.inf), "min_snr_db must be finite"),
    (dict(min_snr_db=math.nan), "min_snr_db must be >= 0"),
])
def test_thresholds_are_validated(kwargs, fragment):
    with pytest.raises(SpecError, match=re.escape(fragment)):
        Tolerance(**kwargs)


def test_output_spec_class_axis_and_top_k():
    from harness.specs import OutputSpec

    assert OutputSpec("logits", Tolerance(min_top1=0.99), class_axis=-1).top_k == 5
    with pytest.raises(SpecError, match="min_top1 needs the output's class_axis"):
        OutputSpec("logits", Tolerance(min_top1=0.99))
    with pytest.raises(SpecError, match="min_topk_overlap for openvino:int8 needs"):
        OutputSpec("logits", target_tolerances={"openvino:int8": Tolerance(min_topk_overlap=0.9)})
    for bad in (dict(class_axis="-1"), dict(class_axis=True), dict(class_axis=-1, top_k=0)):
        with pytest.raises(SpecError):
            OutputSpec("logits", **bad)


# --------------------------------------------------------------------------- the output's range

def test_atol_by_range_scales_with_the_outputs_calibrated_range_not_the_examples():
    # one example of an output near 0 whose range (over the calibration feed) is 1: off by a step of 0.05
    ref = np.array([0.01, -0.02, 0.015, 0.0], dtype=np.float32)
    got = ref + np.float32(0.05)
    tolerance = Tolerance(atol_by_range=0.1)
    within = compare_outputs("y", ref, got, tolerance, output_range=1.0)
    assert within.passed and within.output_range == 1.0 and within.error_ratio == pytest.approx(0.5, rel=1e-5)
    # without a measured range it is this example's max|ref| (0.02): the same error is 25x the bound
    assert not compare_outputs("y", ref, got, tolerance).passed
    # the planted twin: an error of 0.2 of the range fails however the range is measured
    assert not compare_outputs("y", ref, ref + np.float32(0.2), tolerance, output_range=1.0).passed


def test_cosine_and_snr_need_an_output_of_sixteen_elements():
    from harness.compare import WHOLE_OUTPUT_MIN_ELEMENTS

    tolerance = Tolerance(atol_by_max=1.0, min_snr_db=20.0, min_cosine=0.99)
    small = np.array([0.5, -0.25, 0.125, 1.0], dtype=np.float32)
    # a quarter of max|ref| off on 4 numbers: an SNR of ~11 dB that says nothing the bound does not
    assert compare_outputs("y", small, small + np.float32(0.25), tolerance).passed
    large = np.tile(small, WHOLE_OUTPUT_MIN_ELEMENTS // small.size)
    failed = compare_outputs("y", large, large + np.float32(0.25), tolerance)
    assert not failed.passed and "min_snr_db" in failed.failed_thresholds


def test_one_random_number_shared_by_a_whole_draw_does_not_fail_the_mean_by_chance():
    # x + one U(0, 1) per run: the positions of a draw move together, so the
    # mean's error is that of 20 draw means, not of 20 x 64 independent values
    # (held to the latter, a correct conversion failed about one run in four).
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 16)).astype(np.float32)
    results = [compare_distributions("y", [x + np.float32(rng.uniform()) for _ in range(20)],
                                     [x + np.float32(rng.uniform()) for _ in range(20)]) for _ in range(50)]
    assert all(r.passed for r in results), [r.message for r in results if not r.passed][:2]
    assert results[0].extra["distribution"]["original"]["draw_mean_se"] > 0


def test_a_whole_draw_shifted_beyond_its_spread_still_fails_the_mean():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4, 16)).astype(np.float32)
    result = compare_distributions("y", [x + np.float32(rng.uniform()) for _ in range(20)],
                                   [x + np.float32(rng.uniform() + 2.0) for _ in range(20)])
    assert not result.passed and result.extra["distribution"]["ratios"]["mean"] > 1.0, result.message
