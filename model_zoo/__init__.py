"""The built-in model zoo.

Importing this package registers every zoo model with `harness.register_model`;
it never imports a deep-learning framework: builders are given as
"module:function" strings, resolved only when a model is built. The harness
imports it as it imports any package's zoo: through the `parity_models` entry
point that pyproject.toml declares (harness/registry.py names no zoo).

Layout:
    basic.py        simple, mlp, two_outputs
    vision.py       cnn, depthwise, mobilenet_v2 (Keras only)
    sequence.py     lstm, gru, transformer, embedding
    real.py         tier "real" (`--tier=real`), Keras: mobilenet_v3_small, efficientnet_b0,
                    convnext_tiny, resnet50 (keras.applications with their built-in
                    preprocessing), causal_lm (a small language model of Keras layers)
    torch_models.py the nn.Module classes and their `build_*` functions
    keras_models.py the Keras functional models and their `build_*` functions
    real_keras.py   the Keras builders of real.py: Keras' own initialization, seeded;
                    BatchNorm statistics calibrated on the input's domain
    mxnet_models.py the Gluon HybridBlocks (simple, mlp, cnn, depthwise, lstm)

To add a model:
 1. Write its nn.Module and a `build_<name>()` in `torch_models.py` that returns
    `_seeded("<name>", <Module>)`, and give it its own seed in `SEEDS` (weights
    must be deterministic, and building must not disturb the global RNG;
    `_seeded` takes care of both, of eval mode and of BatchNorm statistics).
 2. Register it in the family module (or a new one imported below), with no
    framework import at module level:

        register_model(
            "<name>",
            inputs=[InputSpec("x", ("N", 16), dims={"N": (1, 4)}, layout="NC")],
            outputs=["y"],
            description="...",
            torch="model_zoo.torch_models:build_<name>",
        )

    Give every symbolic dim bounds, keep bounds of different dims different
    (so that a transposed axis shows up as a shape error), declare layouts
    rather than letting anything guess them, and set `domain` for inputs
    whose valid values are restricted (token ids: (0, vocab - 1)).
 3. Run `pytest tests/test_zoo.py`: it builds, exports (both ONNX exporters)
    and checks every zoo model.

A Keras twin (or a Keras-only model): write a `build_<name>()` in
`keras_models.py` that returns `_seeded("<name>", <make>)`, with its own seed
in `keras_models.SEEDS`. <make> builds a functional `keras.Model` whose
inputs are named and ordered as the spec's (`keras.Input(name=...)`, None for
every symbolic dim) and whose outputs are in the spec's order, each from a
layer named after its output; name every layer. `_seeded` overwrites every
weight from the seed (an unknown kind of weight is an error) and leaves the
global RNG states alone. Register it with `keras="model_zoo.keras_models:build_<name>"`;
Keras images are NHWC while the specs say NCHW, so declare it:
`layouts={"keras": {"image": "NHWC"}}` (outputs too, when they are images).
Then run `pytest tests/test_zoo_keras.py`.

A real-tier Keras model (`tier="real"`: run with `--tier=real` or `all`, or by
name): a `build_<name>()` in `real_keras.py` that returns
`_keras_initialized("<name>", <make>, <finish>)`, with its own seed in
`real_keras.SEEDS` (Keras' own initializers, seeded; <finish> calibrates the
BatchNorm statistics and sets what a trained network holds that an
initialized one lacks), registered in `real.py` with inputs that declare their
value domains (0..255 pixels for a network with built-in preprocessing, token
ids within the vocabulary). Then run `pytest tests/test_zoo_real_keras.py`,
and each model through the plugin (`pytest --model=<name> --source=keras`):
every conversion path converts and passes, or is declared in `unsupported=`
with the upstream tool's error.
"""

from model_zoo import basic, real, real_torch, sequence, vision  # noqa: F401  (registrations)
