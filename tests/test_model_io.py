"""The rule every source shares for what its model returned (harness/sources/model_io.py):
outputs by the spec's names from a mapping that has them all, else every tensor in
order; anything else is the case's error, saying what came back."""

from __future__ import annotations

import re

import numpy as np
import pytest

from harness.errors import CaseError
from harness.sources.model_io import check_twin_outputs, prepare_inputs, select_outputs


def is_array(value):
    return isinstance(value, np.ndarray)


A, B, C = np.zeros(1), np.ones(2), np.full(3, 2.0)


def test_outputs_by_name_from_a_mapping_else_flattened_in_order():
    assert select_outputs({"b": B, "a": A, "cache": object()}, is_array, ("a", "b")) == [A, B]
    flat = select_outputs((A, [B, None], {"c": C}), is_array, ("x",))
    assert len(flat) == 3 and all(got is want for got, want in zip(flat, (A, B, C)))


@pytest.mark.parametrize("result, names, message", [
    ("text", (), "the model returned str, not tensors: return tensors alone"),
    ((A, "text"), (), "returned tuple, holding str beside tensors: return tensors alone"),
    ({"y": A, "cache": object()}, ("logits",),
     "returned dict (its keys: ['y', 'cache']), holding object beside tensors: name the spec's outputs"),
])
def test_what_is_not_a_tensor_is_the_cases_error(result, names, message):
    with pytest.raises(CaseError, match=re.escape(message)):
        select_outputs(result, is_array, names)


def test_the_float64_twin_gets_float64_inputs_and_must_give_float64_outputs():
    x, ids = np.ones((2, 3), np.float32)[:, ::2], np.arange(3)
    widened = prepare_inputs([x, ids], float64=True)
    assert widened[0].dtype == np.float64 and widened[0].flags.c_contiguous and widened[1].dtype == ids.dtype
    assert prepare_inputs([x], float64=False)[0].dtype == np.float32
    with pytest.raises(CaseError, match=r"the float64 twin returned \['float32'\]"):
        check_twin_outputs([np.zeros(2), np.zeros(2, np.float32)])
