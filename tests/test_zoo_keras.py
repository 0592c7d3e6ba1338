"""The Keras builders of the built-in zoo: every one builds a functional model
whose inputs and outputs are named, ordered and laid out as its spec declares
(NHWC images for Keras, through `spec.source_layouts("keras")`), builds
deterministically without touching any global RNG, runs across its dim bounds
with finite outputs of the declared shapes and dtypes, and MobileNetV2 builds
without any network access. Importing the zoo imports neither tensorflow nor
keras.

Plain pytest: no plugin options, no conversion (the parity runs do that).
"""

from __future__ import annotations

import random

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from harness.layouts import permutation  # noqa: E402
from harness.registry import zoo_models  # noqa: E402
from tests.conftest import BuiltModels, keras_inputs, sizes_to_check  # noqa: E402

ZOO = zoo_models()
REQUIRED = {"simple", "mlp", "two_outputs", "cnn", "depthwise", "mobilenet_v2",
            "lstm", "gru", "transformer", "embedding"}
NAMES = sorted(name for name, spec in ZOO.items() if "keras" in spec.builders and spec.tier == "core")


def expected_shapes(name: str, d: dict[str, int]) -> list[tuple[int, ...]]:
    """Each model's output shapes in the spec's layout (NCHW for images)."""
    N, T, H, W = d.get("N"), d.get("T"), d.get("H"), d.get("W")
    return {
        "simple": [(N, 1)],
        "mlp": [(N, 10)],
        "two_outputs": [(N, 5), (N,)],
        "cnn": [(N, 16, H // 2 if H else None, W // 2 if W else None)],
        "depthwise": [(N, 10)],
        "mobilenet_v2": [(N, 10)],
        "lstm": [(N, T, 20)],
        "gru": [(N, T, 20)],
        "transformer": [(N, T, 32)],
        "embedding": [(N, T, 16)],
    }[name]


EXPECTED_DTYPES = {"two_outputs": ["float32", "int64"]}


# --- helpers -------------------------------------------------------------------------


_Built = BuiltModels("keras")  # each model built once per test process


def _permuted(shape: tuple, src: str | None, dst: str | None) -> tuple:
    if src is None or dst is None:
        return tuple(shape)
    return tuple(shape[axis] for axis in permutation(src, dst))


def run_keras(model, inputs: list[np.ndarray]) -> list[np.ndarray]:
    out = model(inputs[0] if len(inputs) == 1 else inputs, training=False)
    outs = list(out) if isinstance(out, (list, tuple)) else [out]
    return [np.asarray(o) for o in outs]


def weights_of(model) -> list[tuple[str, np.ndarray]]:
    return [(v.path, np.asarray(v)) for v in model.weights]


def global_draws() -> list[np.ndarray]:
    """One draw from each global RNG a build could advance."""
    return [np.array([random.random()]), np.random.random(3), tf.random.uniform([3]).numpy(),
            np.asarray(keras.random.uniform((3,)))]


# --- the zoo itself ------------------------------------------------------------------


def test_required_keras_models_registered():
    assert REQUIRED <= set(NAMES), f"missing keras builders: {sorted(REQUIRED - set(NAMES))}"
    assert "torch" not in ZOO["mobilenet_v2"].builders  # Keras only: keras.applications
    for name in NAMES:
        spec = ZOO[name]
        for inp in spec.inputs:
            if inp.layout in ("NCHW",):
                assert spec.source_layouts("keras")[0][inp.name] == "NHWC", f"{name}: Keras images are NHWC"


@pytest.mark.parametrize("name", NAMES)
def test_build_is_deterministic_and_leaves_global_rngs_alone(name):
    build = ZOO[name].builders["keras"]
    py_saved, np_saved = random.getstate(), np.random.get_state()
    try:
        keras.utils.set_random_seed(4321)
        reference = global_draws()
        keras.utils.set_random_seed(4321)
        py_state, np_state = random.getstate(), np.random.get_state()
        tf_generator = tf.random.get_global_generator()
        tf_generator_state = tf_generator.state.numpy().copy()
        first = build()
        assert random.getstate() == py_state, "building changed Python's global random state"
        after = np.random.get_state()
        assert after[0] == np_state[0] and np.array_equal(after[1], np_state[1]) and after[2:] == np_state[2:], \
            "building changed numpy's global RNG state"
        assert np.array_equal(tf_generator.state.numpy(), tf_generator_state), "building advanced tf's global Generator"
        for ref, got in zip(reference, global_draws()):
            np.testing.assert_array_equal(got, ref, err_msg="building advanced a global RNG "
                                                            "(python, numpy, tf.random or keras.random)")
        np.random.random(5), random.random(), tf.random.uniform([5])  # other global states: same weights
        second = build()
    finally:
        random.setstate(py_saved)
        np.random.set_state(np_saved)
    _Built.cache.setdefault(name, first)

    assert isinstance(first, keras.Model)
    assert [layer.name for layer in first.layers] == [layer.name for layer in second.layers]
    w1, w2 = weights_of(first), weights_of(second)
    assert [p for p, _ in w1] == [p for p, _ in w2], "variable paths differ between two builds"
    assert len({p for p, _ in w1}) == len(w1), "two weights share a path"
    for (path, a), (_, b) in zip(w1, w2):
        assert np.array_equal(a, b), f"{name}: {path} differs between two builds"
        assert np.isfinite(a).all(), path


@pytest.mark.parametrize("name", NAMES)
def test_model_signature_matches_spec(name):
    """Inputs named, ordered and laid out as the spec says, None for every
    symbolic dim; outputs named and ordered as the spec says."""
    spec, model = ZOO[name], _Built.get(name)
    in_layouts, _ = spec.source_layouts("keras")
    assert [t.name for t in model.inputs] == [i.name for i in spec.inputs]
    for tensor, inp in zip(model.inputs, spec.inputs):
        declared = tuple(None if isinstance(d, str) else d for d in inp.shape)
        assert tuple(tensor.shape) == _permuted(declared, inp.layout, in_layouts[inp.name]), inp.name
        assert tensor.dtype == inp.dtype, inp.name
    assert list(model.output_names) == [o.name for o in spec.outputs]


@pytest.mark.parametrize("name", NAMES)
def test_runs_across_dim_bounds(name):
    """At the minima, the maxima and the maxima minus one (odd H/W), in the Keras layout."""
    spec, model = ZOO[name], _Built.get(name)
    _, out_layouts = spec.source_layouts("keras")
    dtypes = EXPECTED_DTYPES.get(name, ["float32"] * len(spec.outputs))
    for k, sizes in enumerate(sizes_to_check(spec)):
        outs = run_keras(model, keras_inputs(spec, sizes, seed=k))
        assert len(outs) == len(spec.outputs), f"{name}: {len(outs)} outputs, declared {len(spec.outputs)}"
        expected = [_permuted(shape, o.layout, out_layouts[o.name])
                    for shape, o in zip(expected_shapes(name, sizes), spec.outputs)]
        assert [o.shape for o in outs] == expected, sizes
        assert [str(o.dtype) for o in outs] == dtypes, sizes
        for out in outs:
            if np.issubdtype(out.dtype, np.floating):
                assert np.isfinite(out).all(), sizes


@pytest.mark.parametrize("name", NAMES)
def test_outputs_depend_on_the_input(name):
    """Two different inputs give outputs that differ well beyond float32 noise
    (a model whose BatchNorms swamp the signal would hide conversion bugs)."""
    spec, model = ZOO[name], _Built.get(name)
    sizes = sizes_to_check(spec)[-1]
    a, b = (run_keras(model, keras_inputs(spec, sizes, seed=s))[0] for s in (10, 11))
    scale = max(np.abs(a).max(), 1e-6)
    # depthwise is the least sensitive (~1e-3: its global average pool over
    # ~500 positions of iid noise, as in its torch twin); MobileNetV2 with
    # uncalibrated BatchNorm statistics would be ~1e-7.
    assert np.abs(a - b).max() > 1e-4 * scale, f"{name}: outputs barely depend on the input"


@pytest.mark.parametrize("name", NAMES)
def test_batchnorms_are_not_identity(name):
    norms = [layer for layer in _Built.get(name).layers if isinstance(layer, keras.layers.BatchNormalization)]
    if name in ("cnn", "depthwise", "mobilenet_v2"):
        assert norms, f"{name} should have BatchNorms"
    for norm in norms:
        gamma, beta, mean, var = norm.get_weights()
        assert np.abs(mean).max() > 0.1, norm.name
        assert np.abs(var - 1).max() > 0.1, norm.name
        assert (var > 0).all(), norm.name
        assert np.abs(gamma - 1).max() > 0.1, norm.name
        assert np.abs(beta).max() > 0.05, norm.name


def test_two_outputs_logits_are_large_and_well_separated():
    model = _Built.get("two_outputs")
    x = np.random.default_rng(7).uniform(-4.0, 4.0, size=(4096, 8)).astype("float32")  # beyond the bounds
    logits, label = run_keras(model, [x])
    assert logits.dtype == np.float32 and label.dtype == np.int64
    assert 50 < np.abs(logits).max() < 1000
    np.testing.assert_array_equal(label, logits.argmax(axis=-1))
    assert np.bincount(label, minlength=5).min() > 0.1 * len(label), "classes far from balanced"
    top2 = np.sort(logits, axis=-1)[:, -2:]
    gap = top2[:, 1] - top2[:, 0]
    assert np.median(gap) > 5 and np.percentile(gap, 1) > 0.1, (np.median(gap), np.percentile(gap, 1))


def test_mobilenet_v2_builds_without_network(no_network):
    """weights=None: keras.applications must not try to download anything."""
    model = ZOO["mobilenet_v2"].builders["keras"]()
    assert model.count_params() > 0
    assert not no_network.exists() or not any(no_network.rglob("*.h5"))
    for (_, a), (_, b) in zip(weights_of(model), weights_of(_Built.get("mobilenet_v2"))):
        assert np.array_equal(a, b)


def test_models_survive_keras_save_and_safe_load(tmp_path):
    """Every model saves as `.keras` and loads back with safe_mode (no Lambda,
    no unregistered custom object) into the same weights, names and outputs."""
    for name in NAMES:
        spec, model = ZOO[name], _Built.get(name)
        path = tmp_path / f"{name}.keras"
        model.save(path)
        loaded = keras.saving.load_model(path, safe_mode=True)
        assert [t.name for t in loaded.inputs] == [i.name for i in spec.inputs], name
        assert list(loaded.output_names) == [o.name for o in spec.outputs], name
        inputs = keras_inputs(spec, sizes_to_check(spec)[0], seed=3)
        for got, ref in zip(run_keras(loaded, inputs), run_keras(model, inputs)):
            assert got.dtype == ref.dtype, name
            np.testing.assert_array_equal(got, ref, err_msg=name)
