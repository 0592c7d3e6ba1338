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


LOCKED_MODEL_FILE = '''
import threading

import torch
from harness import InputSpec, register_model

class Tripled(torch.nn.Module):
    def forward(self, x):
        return x * 3

class Locked(Tripled):
    """A model that holds a lock (a cache shared between threads): deepcopy cannot copy it."""
    def __init__(self):
        super().__init__()
        self.lock = threading.Lock()

register_model("copyable_tripled", inputs=[InputSpec("x", ("N", 4), dims={"N": (1, 2)})], outputs=["y"], torch=Tripled)
register_model("locked_tripled", inputs=[InputSpec("x", ("N", 4), dims={"N": (1, 2)})], outputs=["y"], torch=Locked)
'''


@pytest.fixture(scope="module")
def locked_models(tmp_path_factory):
    path = tmp_path_factory.mktemp("locked") / "locked.py"
    path.write_text(LOCKED_MODEL_FILE)
    return path


@pytest.mark.parametrize("model, twin", [
    ("copyable_tripled", "float64 twin"),
    ("locked_tripled", "no noise floor: the model could not be copied to float64 (TypeError: cannot pickle '_thread.lock' "
               "object)"),
])
def test_the_record_says_why_a_model_has_no_float64_twin(locked_models, tmp_path, model, twin):
    """Once "no float64 twin: no noise floor for this source", as if torch never had one."""
    from harness.cache import ArtifactCache
    from harness.engine import prepare_case
    from harness.matrix import build_cases
    from harness.options import RunOptions

    options = RunOptions(models=(str(locked_models),), sources=("torch",), targets=("onnxruntime",), devices=("cpu",),
                         cache_dir=tmp_path / "cache", reports_dir=tmp_path / "reports", localize="off")
    [case] = [c for c in build_cases(options) if c.model == model]
    assert case.error is None, case.error
    prepared = prepare_case(case, options, ArtifactCache(options.cache_dir))
    assert (prepared.model64 is None) == (model == "locked_tripled")
    assert prepared.provenance["reference"]["float64_twin"] == twin


def test_a_keras_model_whose_custom_layer_has_no_config_says_why_it_has_no_float64_twin():
    """The twin is rebuilt from the model's config: a custom layer made with an argument
    Keras cannot serialize, and no get_config of its own, cannot be."""
    import keras

    from harness.sources import keras as keras_source

    class Scaled(keras.layers.Layer):
        def __init__(self, table, **kwargs):
            super().__init__(**kwargs)
            self.table = table

        def call(self, x):
            return x * 2.0

    inputs = keras.Input((4,))
    custom = keras.Model(inputs, Scaled(object())(keras.layers.Dense(3)(inputs)))
    plain = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    assert keras_source.float64_copy(custom) is None
    assert keras_source.float64_status(custom) == (
        "no noise floor: the model could not be rebuilt in float64 from its config (NotImplementedError: Object "
        "Scaled was created by passing non-serializable argument values in `__init__()`, and therefore the object "
        "must override `get_config()` in)")
    assert keras_source.float64_copy(plain) is not None and keras_source.float64_status(plain) == "float64 twin"


def test_an_mxnet_block_that_cannot_hybridize_says_why_it_has_no_float64_twin():
    """The twin is the block's exported graph cast to float64: a plain (imperative) Block has none."""
    from harness.sources import mxnet as mxnet_source

    mx = mxnet_source.import_mxnet()

    class Doubled(mx.gluon.Block):
        def __init__(self):
            super().__init__()
            with self.name_scope():
                self.dense = mx.gluon.nn.Dense(3, in_units=4)

        def forward(self, x):
            return self.dense(x) * 2

    imperative, hybrid = Doubled(), mx.gluon.nn.HybridSequential()
    hybrid.add(mx.gluon.nn.Dense(3, in_units=4))
    for block in (imperative, hybrid):
        block.initialize()
    assert mxnet_source.float64_copy(imperative) is None
    assert mxnet_source.float64_status(imperative) == ("no noise floor: the model could not be copied to float64 "
                                                       "(AttributeError: 'Doubled' object has no attribute "
                                                       "'hybrid_forward')")
    assert mxnet_source.float64_copy(hybrid) is not None and mxnet_source.float64_status(hybrid) == "float64 twin"
