"""layouts: permutations between named layouts, explicit conversion, clear errors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from harness.layouts import DISTINCT_AXES, KNOWN_LAYOUTS, LayoutError, check_layout, convert_layout, permutation


def test_permutation_nchw_to_nhwc_and_back():
    assert permutation("NCHW", "NHWC") == (0, 2, 3, 1)
    assert permutation("NHWC", "NCHW") == (0, 3, 1, 2)
    assert permutation("NCHW", "NCHW") == (0, 1, 2, 3)
    assert permutation("NTC", "TNC") == (1, 0, 2)
    assert permutation("NCDHW", "NDHWC") == (0, 2, 3, 4, 1)


def test_convert_layout_moves_the_right_elements():
    x = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)  # N=2 C=3 H=4 W=5
    y = convert_layout(x, "NCHW", "NHWC")
    assert y.shape == (2, 4, 5, 3)
    for n, c, h, w in itertools.product(range(2), range(3), range(4), range(5)):
        assert y[n, h, w, c] == x[n, c, h, w]
    assert y.flags["C_CONTIGUOUS"]
    # the wrong permutation would give a different array, not just a different view
    assert not np.array_equal(y, np.transpose(x, (0, 3, 2, 1)).reshape(y.shape))


@pytest.mark.parametrize("src,dst", [(a, b) for a, b in itertools.permutations(KNOWN_LAYOUTS, 2)
                                     if sorted(a) == sorted(b)])
def test_round_trip_restores_the_array(src, dst):
    shape = tuple(range(2, 2 + len(src)))  # all axes different sizes
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    y = convert_layout(x, src, dst)
    assert y.shape == tuple(shape[src.index(a)] for a in dst)
    back = convert_layout(y, dst, src)
    assert back.shape == x.shape and np.array_equal(back, x)
    assert not np.shares_memory(y, x)


def test_none_or_same_layout_passes_the_same_array():
    x = np.zeros((1, 3, 4, 5))
    assert convert_layout(x, None, "NHWC") is x
    assert convert_layout(x, "NCHW", None) is x
    assert convert_layout(x, None, None) is x
    assert convert_layout(x, "NCHW", "NCHW") is x
    assert convert_layout(x, "NCHW", "NHWC") is not x


def test_unknown_axis_letter_raises():
    with pytest.raises(LayoutError, match=r"unknown layout 'NCWZ': a layout is an order of distinct axis letters"):
        convert_layout(np.zeros((1, 2, 3, 4)), "NCWZ", "NHWC")
    with pytest.raises(LayoutError, match=r"input 'x': unknown layout 'nchw'"):
        check_layout("nchw", 4, where="input 'x'")
    with pytest.raises(LayoutError, match=r"names an axis twice"):
        check_layout("NCHH", 4)


@pytest.mark.parametrize("src,dst", [("NHWC", "NWCH"), ("NCHW", "NCWH"), ("NTC", "WNC".replace("W", "T")),
                                     ("NCDHW", "DNWCH")])
def test_any_order_of_the_axis_letters_is_a_layout(src, dst):
    """onnx2tf, for one, turns an NHWC input into [N, W, C, H]: a user must be
    able to say so, and the harness must move the right elements."""
    shape = tuple(range(2, 2 + len(src)))
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    y = convert_layout(x, src, dst)
    assert y.shape == tuple(shape[src.index(a)] for a in dst)
    index = tuple(1 for _ in src)
    moved = tuple(index[src.index(a)] for a in dst)
    assert y[moved] == x[index]
    assert np.array_equal(convert_layout(y, dst, src), x)


def test_rank_mismatch_raises():
    with pytest.raises(LayoutError, match=r"layout NCHW has 4 axes but the shape has 3"):
        convert_layout(np.zeros((2, 3, 4)), "NCHW", "NHWC")
    with pytest.raises(LayoutError, match=r"layout NTC has 3 axes but the shape has 2"):
        check_layout("NTC", 2)
    check_layout("NTC", 3)  # fits: no error


def test_layouts_with_different_axes_raise():
    with pytest.raises(LayoutError, match=r"cannot convert layout NCHW to NTC: they name different axes"):
        permutation("NCHW", "NTC")
    with pytest.raises(LayoutError, match="different axes"):
        convert_layout(np.zeros((2, 3)), "NC", "NT")


def test_layout_error_is_a_value_error():
    assert issubclass(LayoutError, ValueError)


def test_distinct_axes_cover_channels_space_and_time_but_not_batch():
    assert {"C", "H", "W", "D", "T"} <= DISTINCT_AXES
    assert "N" not in DISTINCT_AXES


def test_target_layout_with_other_axes_raises():
    with pytest.raises(LayoutError, match="different axes"):
        convert_layout(np.zeros((1, 2, 3, 4)), "NCHW", "NWTC")


def test_same_layout_still_checks_rank():
    with pytest.raises(LayoutError, match="4 axes but the shape has 2"):
        convert_layout(np.zeros((2, 3)), "NCHW", "NCHW")
