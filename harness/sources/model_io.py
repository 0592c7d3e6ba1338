"""A source model's inputs and outputs, as every source takes and gives them:
inputs contiguous (widened for the float64 twin), outputs picked by name or
flattened in order, the twin's outputs checked to be float64. One rule for
every source, so that the reference lines up with the spec the same way
whichever framework built the model.

Imports no framework: each source says what its tensors are (`is_tensor`).
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from harness.errors import CaseError

# Why a model's float64 twin could not be made, by model, for the record (float64_status);
# weak, so that a refusal never keeps a model alive.
_TWIN_REFUSALS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def refuse_twin(model: Any, why: str) -> None:
    """Keep why `model` has no float64 twin (its source's float64_copy gives
    None), so that the record says it rather than the source having none."""
    _TWIN_REFUSALS[model] = why


def float64_status(model: Any) -> str:
    """What became of the float64 twin, for the record: "float64 twin", or
    "no noise floor: WHY" where the source's float64_copy refused it."""
    why = _TWIN_REFUSALS.get(model)
    return "float64 twin" if why is None else f"no noise floor: {why}"

def prepare_inputs(inputs: Sequence[np.ndarray], float64: bool) -> list[np.ndarray]:
    """The inputs contiguous, and every floating one in float64 for the float64 twin."""
    prepared = []
    for array in inputs:
        array = np.asarray(array, order="C")  # not ascontiguousarray, which makes a 0-d input 1-d
        if float64 and np.issubdtype(array.dtype, np.floating):
            array = array.astype(np.float64)
        prepared.append(array)
    return prepared


def check_twin_outputs(outputs: list[np.ndarray]) -> list[np.ndarray]:
    """The float64 twin's outputs, or CaseError('run') where a floating one came
    back narrower: that twin gives no noise floor."""
    narrow = [str(o.dtype) for o in outputs if np.issubdtype(o.dtype, np.floating) and o.dtype != np.float64]
    if narrow:
        raise CaseError("run", f"the float64 twin returned {narrow}: a layer computes in lower precision")
    return outputs


def select_outputs(result: Any, is_tensor: Callable[[Any], bool], names: Sequence[str] = (),
                   tensors: str = "tensors") -> list:
    """The outputs in what a model returned: by the spec's `names` from a
    mapping (a dict, a transformers ModelOutput) that has them all, else every
    tensor in order (a tensor alone, or nested in tuples, lists and mappings,
    a mapping's values in its order; None entries skipped). Anything else is
    CaseError('run') saying what the model returned; `tensors` is what the
    source calls its tensors ("NDArrays")."""
    by_name = bool(names) and isinstance(result, Mapping)
    if by_name and all(name in result for name in names):
        return [result[name] for name in names]
    flat = list(_leaves(result))
    strange = [type(value).__name__ for value in flat if not is_tensor(value)]
    if strange:
        keys = f" (its keys: {list(result)})" if isinstance(result, Mapping) else ""
        alone = len(flat) == 1 and flat[0] is result
        held = f"not {tensors}" if alone else f"holding {', '.join(strange)} beside {tensors}"
        advice = ("name the spec's outputs after the entries to compare, and they are picked by name" if by_name
                  else f"return {tensors} alone, or in tuples, lists or dicts")
        raise CaseError("run", f"the model returned {type(result).__name__}{keys}, {held}: {advice}")
    return flat


def _leaves(value: Any) -> Iterator[Any]:
    if value is None:
        return
    if isinstance(value, Mapping):
        for item in value.values():
            yield from _leaves(item)
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _leaves(item)
    else:
        yield value
