"""The zoo's real tier, Keras: keras.applications networks with their built-in
preprocessing and a small causal language model. Every one builds
deterministically without network access and without touching any global RNG
or Keras' layer-name counters, has the inputs and outputs its spec declares,
runs across its dim bounds with finite outputs of the declared shapes, and
depends on its input (a randomly initialized deep network can be constant,
which would make every parity check on it vacuous); what the builders set
beyond Keras' initialization (calibrated BatchNorms, EfficientNet's ImageNet
Normalization, ConvNeXt's LayerScale) is checked to be there and to matter.

Plain pytest: no plugin options, no conversion (the parity runs do that).
"""

from __future__ import annotations

import random

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # the real tier: keras.applications architectures, tens of seconds a case

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from harness.layouts import permutation  # noqa: E402
from harness.registry import zoo_models  # noqa: E402
from tests.conftest import BuiltModels, keras_inputs, sizes_to_check  # noqa: E402
from harness.sources import keras as keras_source  # noqa: E402
from harness.specs import ModelSpec  # noqa: E402

ZOO = zoo_models()
REQUIRED = {"mobilenet_v3_small", "efficientnet_b0", "convnext_tiny", "resnet50", "causal_lm"}
NAMES = sorted(name for name, spec in ZOO.items() if spec.tier == "real" and "keras" in spec.builders)
IMAGE_MODELS = sorted(REQUIRED - {"causal_lm"})
BATCHNORM_MODELS = ("mobilenet_v3_small", "efficientnet_b0", "resnet50")
# The default float32 tolerance on a CPU is 1e-5 of max|ref| (plus rtol 1e-5):
# two inputs must move the outputs a hundred times further.
DEPENDS = 1e-3


def expected_shapes(name: str, sizes: dict[str, int]) -> list[tuple[int, ...]]:
    if name == "causal_lm":
        return [(sizes["N"], sizes["T"], 1000)]
    return [(sizes["N"], 10)]


# --- helpers -------------------------------------------------------------------------


_Built = BuiltModels("keras")  # each model built once per test process


def run(model, inputs: list[np.ndarray]) -> list[np.ndarray]:
    return keras_source.run(model, inputs, "cpu")


def largest(spec: ModelSpec) -> dict[str, int]:
    return {d: hi for d, (lo, hi) in spec.dim_bounds.items()}


def global_draws() -> list[np.ndarray]:
    return [np.array([random.random()]), np.random.random(3), tf.random.uniform([3]).numpy(),
            np.asarray(keras.random.uniform((3,)))]


# --- the tier ------------------------------------------------------------------------


def test_real_tier_is_registered_with_domains_and_layouts():
    assert REQUIRED <= set(NAMES), f"missing: {sorted(REQUIRED - set(NAMES))}"
    for name in NAMES:
        spec = ZOO[name]
        assert spec.tier == "real" and "torch" not in spec.builders, name
    for name in IMAGE_MODELS:
        (image,) = ZOO[name].inputs
        assert image.layout == "NCHW" and ZOO[name].source_layouts("keras")[0]["image"] == "NHWC", name
        height, width = image.shape[2:]
        assert height != width, f"{name}: H == W would let a transposed image pass"
    for name in ("mobilenet_v3_small", "efficientnet_b0", "convnext_tiny"):  # built-in preprocessing
        assert ZOO[name].inputs[0].domain == (0.0, 255.0), name
    (tokens,) = ZOO["causal_lm"].inputs
    vocabulary = _Built.get("causal_lm").get_layer("token_embedding").input_dim
    assert tokens.dtype == "int64" and tokens.domain == (0, vocabulary - 1)
    # the TFLite converter's causal mask, and pnnx's abort on tf2onnx's graph of it (model_zoo/real.py)
    assert ZOO["causal_lm"].unsupported.keys() == {"keras->tflite", "keras->ncnn"}


@pytest.mark.parametrize("name", NAMES)
def test_build_is_deterministic_offline_and_leaves_global_state_alone(name, no_network):
    from keras.src.backend.common import global_state

    build = ZOO[name].builders["keras"]
    py_saved, np_saved = random.getstate(), np.random.get_state()
    try:
        keras.layers.Dense(1)  # Keras' name counters exist and have moved
        keras.utils.set_random_seed(4321)
        reference = global_draws()
        keras.utils.set_random_seed(4321)
        py_state, np_state = random.getstate(), np.random.get_state()
        counters = global_state.get_global_attribute("object_name_uids")
        counted = dict(counters)
        first = build()
        assert random.getstate() == py_state, "building changed Python's global random state"
        after = np.random.get_state()
        assert after[0] == np_state[0] and np.array_equal(after[1], np_state[1]), "building changed numpy's RNG"
        assert global_state.get_global_attribute("object_name_uids") is counters and dict(counters) == counted, \
            "building changed Keras' layer-name counters"
        for ref, got in zip(reference, global_draws()):
            np.testing.assert_array_equal(got, ref, err_msg="building advanced a global RNG")
        np.random.random(5), random.random(), keras.layers.Dense(1)  # other global states: same model
        second = build()
    finally:
        random.setstate(py_saved)
        np.random.set_state(np_saved)
    _Built.cache.setdefault(name, first)
    assert not no_network.exists() or not any(no_network.rglob("*.h5")), "weights were fetched"

    assert [layer.name for layer in first.layers] == [layer.name for layer in second.layers]
    assert [v.path for v in first.weights] == [v.path for v in second.weights]
    for a, b in zip(first.weights, second.weights):
        assert np.array_equal(np.asarray(a), np.asarray(b)), f"{name}: {a.path} differs between two builds"
    assert keras_source.fingerprint(first) == keras_source.fingerprint(second)


@pytest.mark.parametrize("name", NAMES)
def test_model_signature_matches_spec(name):
    spec, model = ZOO[name], _Built.get(name)
    in_layouts, _ = spec.source_layouts("keras")
    assert [t.name for t in model.inputs] == [i.name for i in spec.inputs]
    for tensor, inp in zip(model.inputs, spec.inputs):
        declared = tuple(None if isinstance(d, str) else d for d in inp.shape)
        assert tuple(tensor.shape) == tuple(declared[a] for a in permutation(inp.layout, in_layouts[inp.name]))
        assert tensor.dtype == inp.dtype
    assert list(model.output_names) == [o.name for o in spec.outputs]


@pytest.mark.parametrize("name", NAMES)
def test_runs_across_dim_bounds_with_finite_outputs(name):
    spec, model = ZOO[name], _Built.get(name)
    for k, sizes in enumerate(sizes_to_check(spec)):
        outputs = run(model, keras_inputs(spec, sizes, seed=k))
        assert [o.shape for o in outputs] == expected_shapes(name, sizes), sizes
        assert all(o.dtype == np.float32 and np.isfinite(o).all() for o in outputs), sizes


@pytest.mark.parametrize("name", NAMES)
def test_outputs_depend_on_the_input(name):
    spec, model = ZOO[name], _Built.get(name)
    a, b = (run(model, keras_inputs(spec, largest(spec), seed=s))[0] for s in (10, 11))
    scale = float(np.abs(a).max())
    assert scale > 0 and np.abs(a - b).max() > DEPENDS * scale, f"{name}: outputs barely depend on the input"
    # ... and on every example of a batch separately: no sample collapses onto another.
    assert all(np.abs(a[i] - a[i + 1]).max() > DEPENDS * scale for i in range(len(a) - 1))


@pytest.mark.parametrize("name", NAMES)
def test_float64_twin_agrees_to_float32_precision(name):
    """The noise floor's twin: rebuilt in float64 with the same state (an
    adapted Normalization's statistics included), it agrees with the model to
    float32 precision, not merely in shape."""
    spec, model = ZOO[name], _Built.get(name)
    twin = keras_source.float64_copy(model)
    assert twin is not None, f"{name}: no float64 twin"
    inputs = keras_inputs(spec, largest(spec), seed=12)
    (single,), (double,) = run(model, inputs), keras_source.run(twin, inputs, "cpu", float64=True)
    assert double.dtype == np.float64
    assert np.abs(single - double).max() <= 1e-4 * np.abs(double).max(), name


# --- what the builders set beyond Keras' initialization --------------------------------


@pytest.mark.parametrize("name", BATCHNORM_MODELS)
def test_batchnorm_statistics_are_calibrated(name):
    norms = [layer for layer in _Built.get(name)._flatten_layers()
             if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(norms) > 10, name
    for norm in norms:
        _, _, mean, variance = norm.get_weights()
        assert np.abs(mean).max() > 1e-3 and np.abs(variance - 1).max() > 1e-3, f"{norm.name}: Keras' 0 and 1"
        assert (variance > 0).all(), norm.name


def test_efficientnet_normalization_holds_imagenet_statistics():
    from model_zoo.real_keras import IMAGENET_MEAN, IMAGENET_STD

    model = _Built.get("efficientnet_b0")
    (norm,) = [layer for layer in model.layers if isinstance(layer, keras.layers.Normalization)]
    mean, variance, _ = norm.get_weights()
    np.testing.assert_allclose(mean, IMAGENET_MEAN, rtol=1e-6)
    np.testing.assert_allclose(variance, np.square(IMAGENET_STD), rtol=1e-6)
    # ... and normalizes with them (an adapted Normalization computes with tensors derived from its variables).
    pixels = np.full((1, 2, 3, 3), 255.0 * np.array(IMAGENET_MEAN), dtype=np.float32) / 255.0
    np.testing.assert_allclose(np.asarray(norm(pixels)), 0.0, atol=1e-6)


def test_convnext_blocks_reach_the_output():
    """With Keras' LayerScale of 1e-6 a whole block moves the logits by about
    1e-6 of their size, under the tolerance; with the builder's factors,
    silencing the last block moves them far beyond it."""
    spec, model = ZOO["convnext_tiny"], _Built.get("convnext_tiny")
    scale_layer = [layer for layer in model.layers if type(layer).__name__ == "LayerScale"][-1]
    inputs = keras_inputs(spec, largest(spec), seed=13)
    (reference,) = run(model, inputs)
    (gamma,) = scale_layer.get_weights()
    assert gamma.min() >= 0.1
    silenced = keras.models.clone_model(model)
    silenced.set_weights(model.get_weights())
    silenced.get_layer(scale_layer.name).set_weights([np.zeros_like(gamma)])
    (without,) = run(silenced, inputs)
    assert np.abs(without - reference).max() > DEPENDS * np.abs(reference).max()


def test_causal_lm_is_causal():
    """Logits at position t depend on tokens up to t only (Keras' causal mask is
    applied), and on those."""
    spec, model = ZOO["causal_lm"], _Built.get("causal_lm")
    (tokens,) = keras_inputs(spec, {"N": 2, "T": 12}, seed=14)
    changed = tokens.copy()
    changed[:, 7:] = (changed[:, 7:] + 1) % 1000
    (a,), (b,) = run(model, [tokens]), run(model, [changed])
    np.testing.assert_array_equal(a[:, :7], b[:, :7])
    assert np.abs(a[:, 7:] - b[:, 7:]).max() > DEPENDS * np.abs(a).max()
