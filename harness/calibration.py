"""The calibration feed: inputs a quantizer sees to choose its scales, made by
the harness from the model's input spec, never downloaded.

Static int8 quantization (ONNX Runtime's QDQ, TFLite's full-integer) measures
activation ranges on sample inputs. The samples here are drawn from the
distribution the spec declares (`ModelSpec.calibration`, normal by default) or
`--calibration` says, at the shapes the model is exported with
(`inputs.example_recipe`), a third of them plain and the others with special
values (zeros, the domain's ends) in the shares the check draws them (a
calibrated range that leaves out the domain's ends clips them: measured, the
zoo CNN's features at half their value), one seed per sample, so that a feed is the same
bytes on every machine and its settings enter the converted file's cache key.
The hypothesis search that checks the quantized model then draws from every
distribution: a model calibrated on one kind of input is checked on others.

`--calibration=PATH` gives the user's own feed instead, in any form
`--parity-inputs` reads (harness/user_inputs.py: a `.npz` named by input, with
or without a leading example axis, a folder of them, ...), in the spec's
layouts. It is checked against the spec (names, dtypes, shapes within the
dims' bounds, layout) by the same reader before a quantizer sees it, its
messages naming --calibration (the reader takes the option it reads for), and
its sha256 is in the settings, so a changed file is another cache key. A
folder of images is read with the preprocessing --parity-preprocess declares
(harness/image_inputs.py, as for --parity-inputs), which is then a setting too:
another preprocessing is another feed, so another cache key. The settings
(`Calibration`) are parsed once, with the run's options, by
harness/calibration_settings.py.

No framework is imported here.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from harness.calibration_settings import OPTION, Calibration
from harness.image_inputs import parse_preprocess
from harness.layouts import relaid
from harness.options import DEFAULT_MAX_TENSOR_MB
from harness.specs import ModelSpec
from harness.user_inputs import load_user_inputs


def calibration_inputs(spec: ModelSpec, calibration: Calibration,
                       layouts: Mapping[str, str | None]) -> list[dict[str, np.ndarray]]:
    """`calibration.samples` examples of the spec's inputs, each keyed by input
    name and laid out as `layouts` says (the layouts of the file being
    quantized, which may differ from the spec's)."""
    from harness.inputs import (SPECIAL_FRACTIONS, InputRecipe, example_recipe,  # hypothesis: only where a
                                make_inputs)                                  # feed is made

    settings = calibration.for_spec(spec)
    if settings.file:
        return [{i.name: relaid(example[i.name], i.layout, layouts.get(i.name, i.layout)) for i in spec.inputs}
                for example in _user_feed(spec, settings)]
    dims = example_recipe(spec).dims
    feed = []
    for index in range(settings.samples):
        # with the special values (zeros, the domain's ends) in the shares the check draws them
        recipe = InputRecipe(dims, {i.name: settings.distribution for i in spec.inputs},
                             SPECIAL_FRACTIONS[index % len(SPECIAL_FRACTIONS)],
                             # one stream per (seed, sample), apart from the explore's seeds
                             int(np.random.SeedSequence([settings.seed, index, 0xCA11B]).generate_state(1)[0]))
        tensors = make_inputs(spec, recipe)
        feed.append({i.name: relaid(tensors[i.name], i.layout, layouts.get(i.name, i.layout)) for i in spec.inputs})
    return feed


def describe(spec: ModelSpec, calibration: Calibration) -> dict[str, Any]:
    """What the provenance records of a feed: its settings and the shapes it had."""
    from harness.inputs import example_recipe

    settings = calibration.for_spec(spec)
    if settings.file:
        feed = _user_feed(spec, settings)
        return {**settings.to_json(), "samples": len(feed),
                "shapes": {i.name: list(feed[0][i.name].shape) for i in spec.inputs},
                "source": f"the file {settings.file}"}
    dims = example_recipe(spec).dims
    return {**settings.to_json(), "shapes": {i.name: list(i.example_shape(dims)) for i in spec.inputs},
            "source": "generated from the input spec"}


def _user_feed(spec: ModelSpec, settings: Calibration) -> list[dict[str, np.ndarray]]:
    """The first `settings.samples` examples of the user's feed, in the spec's
    layouts, read and held to the spec as --parity-inputs' are."""
    # a hop is given the calibration settings, not the run's options nor its source: the tensor budget's
    # default, test_data_set folders taken in the spec's layouts, images as the settings' preprocess says
    # the settings' preprocess is --parity-preprocess's text: what a hop is given is its cache key's JSON
    loaded = load_user_inputs(settings.file, spec, {i.name: i.layout for i in spec.inputs}, DEFAULT_MAX_TENSOR_MB,
                              preprocess=parse_preprocess(settings.preprocess), option=OPTION)
    return [example.inputs for example in loaded.examples[:settings.samples]]
