"""The keras and tensorflow source adapters: every loader with a passing case
(outputs equal Keras' own) and every way a file can go wrong, with its message.

Tiny models only (a Conv2D on NHWC images, Dense layers), built here.
"""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from harness.errors import CaseError  # noqa: E402
from harness.sources import keras as ks  # noqa: E402
from harness.sources import tensorflow as tfs  # noqa: E402

IMAGE = np.random.default_rng(1).standard_normal((2, 5, 7, 2)).astype(np.float32)  # NHWC, H != W


def _seeded(model, seed: int):
    rng = np.random.default_rng(seed)
    model.set_weights([rng.standard_normal(w.shape).astype(w.dtype) * 0.5 for w in model.get_weights()])
    return model


def conv_model(units: int = 3, seed: int = 0, head: bool = True):
    image = keras.Input((None, None, 2), name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(image)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    if head:
        x = keras.layers.Dense(units, name="fc")(x)
    return _seeded(keras.Model(image, x, name="convnet"), seed)


class Scale(keras.layers.Layer):
    """A custom layer that is not registered: Keras cannot load it by name."""

    def call(self, x):
        return x * 3.0


def lambda_model():
    x = keras.Input((4,), name="x")
    y = keras.layers.Dense(3, name="d")(x)
    y = keras.layers.Lambda(lambda t: t * 2.0, name="double")(y)
    return _seeded(keras.Model(x, y), 2)


def custom_model():
    x = keras.Input((4,), name="x")
    y = Scale(name="scale_it")(keras.layers.Dense(3, name="d")(x))
    return _seeded(keras.Model(x, y), 3)


def two_io_model():
    zeta, alpha = keras.Input((3,), name="zeta"), keras.Input((2,), name="alpha")
    x = keras.layers.Concatenate(name="cat")([zeta, alpha])
    return _seeded(keras.Model([zeta, alpha], [keras.layers.Dense(2, name="first")(x),
                                               keras.layers.Dense(1, name="second")(x)]), 4)


def own(model, *inputs):
    out = model(list(inputs) if len(inputs) > 1 else inputs[0], training=False)
    return [np.asarray(t) for t in (out if isinstance(out, (list, tuple)) else [out])]


def same(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


def load_error(load, *args, **kwargs) -> str:
    with pytest.raises(CaseError) as info:
        load(*args, **kwargs)
    assert info.value.stage == "load"
    message = info.value.message
    assert "Traceback" not in message and "value=[" not in message
    return message


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tf-files")
    model = conv_model()
    for name in ("conv.keras", "conv.h5"):
        model.save(tmp / name)
    for name in ("lambda.keras", "lambda.h5"):
        lambda_model().save(tmp / name)
    for name in ("custom.keras", "custom.h5"):
        custom_model().save(tmp / name)
    for name in ("conv.keras", "conv.h5"):
        data = (tmp / name).read_bytes()
        (tmp / f"truncated-{name}").write_bytes(data[: len(data) // 2])
    (tmp / "empty.keras").write_bytes(b"")
    (tmp / "empty.pb").write_bytes(b"")
    (tmp / "garbage.pb").write_bytes(b"this is not a graph")
    model.save_weights(tmp / "conv.weights.h5")
    tf.train.Checkpoint(model=model).write(str(tmp / "ckpt" / "conv.ckpt"))
    model.export(str(tmp / "saved"), verbose=False)
    two_io_model().export(str(tmp / "saved-two"), verbose=False)

    class Doubler(tf.Module):
        @tf.function
        def double(self, x):
            return x * 2.0

    # No input_signature on the function: tf.saved_model.save would otherwise
    # make it the serving_default signature by itself (a module with exactly one
    # tf.function that has an input_signature).
    doubler = Doubler()
    doubler.double.get_concrete_function(tf.TensorSpec([None, 3], tf.float32))
    tf.saved_model.save(doubler, str(tmp / "no-signature"))
    tf.saved_model.save(doubler, str(tmp / "other-signature"), signatures={
        "predict": doubler.double.get_concrete_function(tf.TensorSpec([None, 3], tf.float32))})

    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    concrete = tf.function(lambda image: model(image, training=False)).get_concrete_function(
        tf.TensorSpec([None, None, None, 2], tf.float32, name="image"))
    frozen = convert_variables_to_constants_v2(concrete)
    (tmp / "conv.pb").write_bytes(frozen.graph.as_graph_def().SerializeToString())
    return tmp, model


# ---------------------------------------------------------------- keras files

@pytest.mark.parametrize("name", ["conv.keras", "conv.h5"])
def test_keras_file_round_trip(files, name):
    tmp, model = files
    loaded = ks.load_file(tmp / name, None, False)
    same(ks.run(loaded, [IMAGE], "cpu"), own(model, IMAGE))


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_lambda_layer_needs_trust(files, suffix):
    tmp, _ = files
    message = load_error(ks.load_file, tmp / f"lambda{suffix}", None, False)
    assert "'double' (class Lambda)" in message and "--trust-model-code" in message
    loaded = ks.load_file(tmp / f"lambda{suffix}", None, True)
    x = np.random.default_rng(5).standard_normal((3, 4)).astype(np.float32)
    reference = lambda_model()
    same(ks.run(loaded, [x], "cpu"), own(reference, x))


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_keras_safe_mode_alone_refuses_lambda(files, suffix):
    """What the harness's own check stands beside: Keras 3 refuses a lambda in both formats."""
    tmp, _ = files
    with pytest.raises(ValueError, match="Lambda"):
        keras.models.load_model(tmp / f"lambda{suffix}", safe_mode=True, compile=False)


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_unknown_custom_layer_is_named(files, suffix):
    tmp, _ = files
    message = load_error(ks.load_file, tmp / f"custom{suffix}", None, False)
    assert "'scale_it' (class Scale)" in message
    assert "register_keras_serializable" in message and "Python model file" in message


@pytest.mark.parametrize("name", ["truncated-conv.keras", "truncated-conv.h5"])
def test_truncated_keras_file(files, name):
    tmp, _ = files
    message = load_error(ks.load_file, tmp / name, None, False)
    assert name in message and "truncated or corrupt" in message


def test_missing_and_empty_keras_file(files):
    tmp, _ = files
    assert "does not exist" in load_error(ks.load_file, tmp / "missing.keras", None, False)
    assert "is empty" in load_error(ks.load_file, tmp / "empty.keras", None, False)


def test_tf_checkpoint_into_architecture(files):
    tmp, model = files
    for path in (tmp / "ckpt" / "conv.ckpt", tmp / "ckpt" / "conv.ckpt.index", tmp / "ckpt"):
        loaded = ks.load_file(path, lambda: conv_model(seed=9), False)
        same(ks.run(loaded, [IMAGE], "cpu"), own(model, IMAGE))


def test_tf_checkpoint_wrong_architecture(files):
    tmp, _ = files
    path = tmp / "ckpt" / "conv.ckpt"
    wider = load_error(ks.load_file, path, lambda: conv_model(units=5), False)
    assert "conv.ckpt" in wider and "do not fit the architecture" in wider and "(4, 5)" in wider
    # Fewer layers than the checkpoint: tf.train.Checkpoint alone would load the part that fits.
    headless = load_error(ks.load_file, path, lambda: conv_model(head=False), False)
    assert "do not fit the architecture" in headless and "4 values" in headless


def test_tf_checkpoint_truncated(files, tmp_path):
    _, model = files
    prefix = str(tmp_path / "conv")
    tf.train.Checkpoint(model=model).write(prefix)
    data = tmp_path / "conv.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:100])
    message = load_error(ks.load_file, tmp_path / "conv", conv_model, False)
    assert "truncated or corrupt" in message and "conv" in message


def test_tf_checkpoint_without_architecture(files):
    tmp, _ = files
    message = load_error(ks.load_file, tmp / "ckpt" / "conv.ckpt", None, False)
    assert "ARCH=PATH" in message


def test_weights_h5_into_architecture(files):
    tmp, model = files
    loaded = ks.load_file(tmp / "conv.weights.h5", lambda: conv_model(seed=9), False)
    same(ks.run(loaded, [IMAGE], "cpu"), own(model, IMAGE))
    assert "ARCH=PATH" in load_error(ks.load_file, tmp / "conv.weights.h5", None, False)
    assert "do not fit" in load_error(ks.load_file, tmp / "conv.weights.h5", lambda: conv_model(units=5), False)
    assert "do not fit" in load_error(ks.load_file, tmp / "conv.weights.h5", lambda: conv_model(head=False), False)


def test_keras_builder_type_is_checked():
    with pytest.raises(CaseError, match="not a keras.Model"):
        ks.build(lambda: "a string")
    with pytest.raises(CaseError, match="TFFunctionModel"):
        tfs.build(lambda: conv_model())


def test_keras_float64_twin(files):
    _, model = files
    twin = ks.float64_copy(model)
    assert twin is not None
    exact = ks.run(twin, [IMAGE], "cpu", float64=True)[0]
    assert exact.dtype == np.float64
    np.testing.assert_allclose(ks.run(model, [IMAGE], "cpu")[0], exact, rtol=1e-5, atol=1e-5)


def adapted_model(data: np.ndarray | None):
    """An adapted Normalization (its mean and variance are variables, from
    which it derives the tensors it normalizes with) before a Dense."""
    x = keras.Input((3,), name="x")
    norm = keras.layers.Normalization(name="norm")
    model = keras.Model(x, keras.layers.Dense(2, name="d")(norm(x)))
    if data is not None:
        norm.adapt(data)
    dense = model.get_layer("d")
    dense.set_weights([np.arange(6, dtype=np.float32).reshape(3, 2) / 5, np.array([0.1, -0.2], np.float32)])
    return model


def test_adapted_normalization_state_survives_checkpoint_and_float64_twin(tmp_path):
    data = np.random.default_rng(5).normal([5.0, -3.0, 100.0], [1.0, 4.0, 30.0], (64, 3)).astype(np.float32)
    model = adapted_model(data)
    x = np.random.default_rng(6).normal([5.0, -3.0, 100.0], [1.0, 4.0, 30.0], (4, 3)).astype(np.float32)
    prefix = tmp_path / "adapted"
    tf.train.Checkpoint(model=model).write(str(prefix))
    loaded = ks.load_file(prefix, lambda: adapted_model(None), False)
    same(ks.run(loaded, [x], "cpu"), own(model, x))
    twin = ks.float64_copy(model)
    np.testing.assert_allclose(ks.run(twin, [x], "cpu", float64=True)[0], own(model, x)[0], rtol=1e-5, atol=1e-5)
    # What finalize_states is for: the variables read alone leave the layer
    # normalizing with Keras' initial mean 0 and variance 1.
    stale = adapted_model(None)
    tf.train.Checkpoint(model=stale).read(str(prefix))
    assert np.array_equal(stale.get_layer("norm").get_weights()[0], model.get_layer("norm").get_weights()[0])
    assert np.abs(own(stale, x)[0] - own(model, x)[0]).max() > 1.0


def test_keras_run_is_traced_once_and_bit_identical_to_the_eager_call():
    """`run` calls the model compiled, once traced for every shape within the
    model's open dims, and computes what the eager call computes, bit for bit,
    in float32 and in the float64 twin."""
    model = conv_model(seed=4)
    twin = ks.float64_copy(model)
    rng = np.random.default_rng(7)
    for shape in [(2, 5, 7, 2), (1, 9, 4, 2), (3, 6, 11, 2)]:
        image = rng.standard_normal(shape).astype(np.float32)
        same(ks.run(model, [image], "cpu"), own(model, image))
        same(ks.run(twin, [image], "cpu", float64=True), own(twin, image.astype(np.float64)))
    (call,) = model.__dict__[ks._COMPILED_CALLS].values()
    assert call.experimental_get_tracing_count() == 1
    assert call.input_signature[0].shape.as_list() == [None, None, None, 2]


def test_compiled_run_leaves_float_arithmetic_as_written_and_restores_the_options():
    """Inside the scope the two Grappler passes that change float arithmetic
    are off for this thread's function calls; afterwards the caller's options
    are back, the same object."""
    from tensorflow.core.protobuf import config_pb2, rewriter_config_pb2
    from tensorflow.python.eager import context

    before = context.context().function_call_options
    with ks.arithmetic_as_written():
        config = config_pb2.ConfigProto.FromString(context.context().function_call_options.config_proto_serialized)
        rewrites = config.graph_options.rewrite_options
        assert rewrites.arithmetic_optimization == rewriter_config_pb2.RewriterConfig.OFF
        assert rewrites.remapping == rewriter_config_pb2.RewriterConfig.OFF
        assert rewrites.constant_folding != rewriter_config_pb2.RewriterConfig.OFF  # the rest as it was
    assert context.context().function_call_options is before


# ---------------------------------------------------------------- SavedModel

def test_saved_model_from_keras_export(files):
    tmp, model = files
    loaded = tfs.load_file(tmp / "saved", None, False)
    assert loaded.kind == "saved_model" and [s.name for s in loaded.input_signature] == ["image"]
    assert loaded.input_signature[0].shape.as_list() == [None, None, None, 2]
    same(tfs.run(loaded, [IMAGE], "cpu"), own(model, IMAGE))


def test_saved_model_names_and_order(files):
    tmp, _ = files
    reference = two_io_model()
    zeta = np.random.default_rng(6).standard_normal((3, 3)).astype(np.float32)
    alpha = np.random.default_rng(7).standard_normal((3, 2)).astype(np.float32)
    # Keras' export names outputs by position; the spec's names map onto them in order.
    loaded = tfs.load_saved_model(tmp / "saved-two", ["zeta", "alpha"], ["first", "second"])
    assert loaded.extra["output_keys"] == ["output_0", "output_1"]
    assert loaded.concrete_inputs == ["zeta:0", "alpha:0"]
    same(tfs.run(loaded, [zeta, alpha], "cpu"), own(reference, zeta, alpha))
    swapped = tfs.load_saved_model(tmp / "saved-two", ["alpha", "zeta"], ["output_1", "output_0"])
    same(tfs.run(swapped, [alpha, zeta], "cpu"), own(reference, zeta, alpha)[::-1])
    message = load_error(tfs.load_saved_model, tmp / "saved-two", ["zeta", "beta"], None)
    assert "'beta'" in message and "['alpha', 'zeta']" in message
    message = load_error(tfs.load_saved_model, tmp / "saved-two", ["zeta", "alpha"], ["output_0", "logits"])
    assert "'logits'" in message and "['output_0', 'output_1']" in message


def test_saved_model_without_serving_signature(files):
    tmp, _ = files
    message = load_error(tfs.load_file, tmp / "no-signature", None, False)
    assert "no 'serving_default' serving signature" in message and "no signatures at all" in message
    assert "model.export(path)" in message and "signatures=" in message
    message = load_error(tfs.load_file, tmp / "other-signature", None, False)
    assert "it has the signatures ['predict']" in message


def two_heads_saved_model(folder) -> str:
    """A SavedModel of a tf.Module whose serving signature returns two outputs, listed out of order."""

    class TwoHeads(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(np.random.default_rng(8).standard_normal((4, 3)).astype(np.float32))

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
        def serve(self, x):
            logits = tf.matmul(x, self.w)
            return {"probs": tf.nn.softmax(logits), "logits": logits}

    module = TwoHeads()
    tf.saved_model.save(module, str(folder), signatures={"serving_default": module.serve})
    return str(folder)


def test_a_saved_model_without_output_names_is_compared_on_its_signatures_outputs(run_parity, tmp_path_factory):
    """Before, its one output was called `output` and every case errored: the signature has no output 'output'.
    Given by an absolute path, its case goes by the folder's own name."""
    folder = two_heads_saved_model(tmp_path_factory.mktemp("models") / "build" / "tf_module")
    run = run_parity(f"--model={folder}", "--source=tensorflow", "--input-spec=x:float32[N=1..4,4]")
    record = run.cases["tf_module-tensorflow-onnxruntime-cpu"]
    assert record["status"] == "passed", run.output
    assert list(record["outputs"]) == ["logits", "probs"]  # load_saved_model's order without names: sorted


def _resolved(folder, **options):
    from harness import matrix
    from harness.options import RunOptions, parse_input_spec

    [resolved] = matrix.resolve_models(RunOptions(models=(str(folder),),
                                                  input_specs=(parse_input_spec("x:float32[N=1..4,4]"),), **options))
    return resolved


def test_output_names_still_pick_among_a_saved_models_outputs(tmp_path):
    _, spec, error = _resolved(two_heads_saved_model(tmp_path / "two_heads"), output_names=("probs",))
    assert error is None and [o.name for o in spec.outputs] == ["probs"]
    assert spec.builders["tensorflow"]().extra["output_keys"] == ["probs"]


def test_a_saved_models_outputs_are_read_from_its_signature_before_it_loads(files, tmp_path):
    assert tfs.signature_outputs(two_heads_saved_model(tmp_path / "two_heads")) == ("logits", "probs")
    tmp, _ = files
    # no serving signature: the error load_saved_model gives, when the spec is made
    _, spec, error = _resolved(tmp / "other-signature")
    assert spec is None and "has no 'serving_default' serving signature (it has the signatures ['predict'])" in error
    assert "has no 'serving_default' serving signature (it has the signatures ['predict'])" in load_error(
        tfs.load_file, tmp / "other-signature", None, False)


def test_missing_folder_and_not_a_saved_model(files):
    tmp, _ = files
    assert "does not exist" in load_error(tfs.load_file, tmp / "nothing-here", None, False)
    assert "not a SavedModel" in load_error(tfs.load_file, tmp / "ckpt", None, False)


# ---------------------------------------------------------------- frozen graph

def test_frozen_graph_runs_and_matches(files):
    tmp, model = files
    loaded = tfs.load_frozen_graph(tmp / "conv.pb", ["image"], ["Identity"])
    assert loaded.kind == "frozen_graph" and loaded.concrete_inputs == ["image:0"]
    assert loaded.concrete_outputs == ["Identity:0"]
    same(tfs.run(loaded, [IMAGE], "cpu"), own(model, IMAGE))
    by_tensor = tfs.load_file(tmp / "conv.pb", None, False, input_names=["image:0"], output_names=["Identity:0"])
    same(tfs.run(by_tensor, [IMAGE], "cpu"), own(model, IMAGE))


def test_frozen_graph_needs_names(files):
    tmp, _ = files
    message = load_error(tfs.load_file, tmp / "conv.pb", None, False)
    assert "--input-spec" in message and "--output-names" in message


def test_frozen_graph_wrong_names(files):
    tmp, _ = files
    message = load_error(tfs.load_frozen_graph, tmp / "conv.pb", ["images"], ["Identity"])
    assert "no input tensor 'images'" in message and "Placeholder ops are ['image']" in message
    message = load_error(tfs.load_frozen_graph, tmp / "conv.pb", ["image"], ["logits"])
    assert "no output tensor 'logits'" in message and "'Identity'" in message


def test_frozen_graph_bad_files(files):
    tmp, _ = files
    assert "not a TensorFlow GraphDef" in load_error(tfs.load_frozen_graph, tmp / "garbage.pb", ["x"], ["y"])
    assert "is empty" in load_error(tfs.load_frozen_graph, tmp / "empty.pb", ["x"], ["y"])
    data = (tmp / "conv.pb").read_bytes()
    (tmp / "truncated.pb").write_bytes(data[: len(data) // 2])
    assert "truncated or corrupt" in load_error(tfs.load_frozen_graph, tmp / "truncated.pb", ["image"], ["Identity"])
    assert "does not exist" in load_error(tfs.load_frozen_graph, tmp / "missing.pb", ["x"], ["y"])


# ---------------------------------------------------------------- fingerprints, devices

def test_keras_fingerprint(files):
    tmp, model = files
    first, second = (ks.load_file(tmp / "conv.keras", None, False) for _ in range(2))
    assert ks.fingerprint(first) == ks.fingerprint(second) == ks.fingerprint(model)
    kernel = second.get_layer("fc").kernel
    changed = kernel.numpy()
    changed[0, 0] += 1e-3
    kernel.assign(changed)
    assert ks.fingerprint(second) != ks.fingerprint(first)


def test_keras_fingerprint_ignores_op_counters():
    """keras.ops in a functional graph are named by a process-wide counter
    ("argmax", "argmax_1", ...): two builds of one model still hash the same
    (layers and the model itself keep their names: a builder names them)."""
    def build(scale=2.0):
        x = keras.Input((4,), name="x")
        logits = keras.layers.Dense(3, name="logits")(x)
        label = keras.layers.Identity(name="label")(keras.ops.argmax(logits * scale, axis=-1))
        return _seeded(keras.Model(x, [logits, label], name="labeller"), 8)

    assert ks.fingerprint(build()) == ks.fingerprint(build())
    assert ks.fingerprint(build()) != ks.fingerprint(build(scale=3.0))


def test_tensorflow_fingerprint(files, tmp_path):
    tmp, _ = files
    saved = [tfs.load_file(tmp / "saved", None, False) for _ in range(2)]
    assert tfs.fingerprint(saved[0]) == tfs.fingerprint(saved[1])
    frozen = [tfs.load_frozen_graph(tmp / "conv.pb", ["image"], ["Identity"]) for _ in range(2)]
    assert tfs.fingerprint(frozen[0]) == tfs.fingerprint(frozen[1]) != tfs.fingerprint(saved[0])
    other = conv_model()
    kernel = other.get_layer("fc").kernel
    changed = kernel.numpy()
    changed[0, 0] += 1e-3
    kernel.assign(changed)
    other.export(str(tmp_path / "changed"), verbose=False)
    assert tfs.fingerprint(tfs.load_file(tmp_path / "changed", None, False)) != tfs.fingerprint(saved[0])
    assert tfs.float64_copy(saved[0]) is None


@pytest.mark.skipif(bool(tf.config.list_physical_devices("GPU")), reason="a GPU is visible here")
def test_cuda_missing_says_why():
    for source in (ks, tfs):
        reason = source.missing("cuda")
        assert reason and "tf.config.list_physical_devices('GPU') == []" in reason
        assert source.missing("cpu") is None
        assert source.configure_device("cpu", False) == {}
    if not tf.test.is_built_with_cuda():
        assert "tensorflow-cpu" in tfs.missing("cuda")
    assert set(ks.versions()) == {"tensorflow", "keras"} and set(tfs.versions()) == {"tensorflow"}
