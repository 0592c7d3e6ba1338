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
another preprocessing is another feed, so another cache key.

No framework is imported here.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from harness.layouts import relaid
from harness.model_file import file_sha256, folder_sha256, not_a_file
from harness.image_inputs import EXAMPLE as PREPROCESS_EXAMPLE
from harness.image_inputs import OPTION as PREPROCESS_OPTION
from harness.image_inputs import is_image, parse_preprocess
from harness.options import DEFAULT_MAX_TENSOR_MB, OptionError, RunOptions
from harness.specs import DISTRIBUTIONS, ModelSpec
from harness.user_inputs import load_user_inputs

OPTION = "--calibration"
# 32 samples: the zoo's int8 errors moved by under 10% between 32 and 128
# samples (the README's precision table), at a quarter of the calibration time.
DEFAULT_SAMPLES = 32
MAX_SAMPLES = 4096


@dataclass(frozen=True)
class Calibration:
    """How the feed is made: `distribution` None takes the spec's own. `file`:
    the user's feed (`--calibration=PATH`), of which the first `samples`
    examples are taken (every one, up to MAX_SAMPLES, as parsed); `sha256`: its
    bytes' digest, which puts its content in the converted file's cache key
    and provenance; `preprocess`: where `file` is a folder of images, the
    --parity-preprocess text each image is read with."""

    distribution: str | None = None
    samples: int = DEFAULT_SAMPLES
    seed: int = 0
    file: str | None = None
    sha256: str | None = None
    preprocess: str | None = None

    def for_spec(self, spec: ModelSpec) -> "Calibration":
        """These settings with the distribution decided: the spec's where none was given."""
        return self if self.distribution else replace(self, distribution=spec.calibration)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def calibration_of(options: RunOptions) -> Calibration:
    """The run's calibration settings: its --calibration, with its --parity-preprocess for a folder of images."""
    return parse_calibration(options.calibration, options.parity_preprocess)


def parse_calibration(text: str | None, preprocess: str = "") -> Calibration:
    """`--calibration DIST[:SAMPLES[:SEED]]` (e.g. `uniform:64`) or `--calibration PATH`
    (what --parity-inputs reads: `_user_feed`); None or '' is the default.
    `preprocess`: --parity-preprocess, which a folder of images needs."""
    if not text:
        return Calibration()
    # a distribution's name never holds a separator nor ends in .npz
    if "/" in text or os.sep in text or text.endswith(".npz") or Path(text).is_dir():
        path = Path(text).expanduser()
        if not path.is_file() and not path.is_dir():
            raise OptionError(f"--calibration {text} {not_a_file(path)}: give an .npz of arrays named by input, "
                              "or a folder of them (what --parity-inputs reads)")
        images = path.is_dir() and any(is_image(file) for file in path.iterdir())
        if images and parse_preprocess(preprocess) is None:
            raise OptionError(f"--calibration {text} is a folder of images: declare how each becomes the model's "
                              f"input, e.g. {PREPROCESS_OPTION}={PREPROCESS_EXAMPLE}")
        return Calibration(samples=MAX_SAMPLES, file=str(path.resolve()),
                           sha256=folder_sha256(path) if path.is_dir() else file_sha256(path),
                           preprocess=preprocess if images else None)
    parts = text.split(":")
    if len(parts) > 3:
        raise OptionError(f"--calibration {text}: expected DIST[:SAMPLES[:SEED]], e.g. normal:32")
    distribution = parts[0] or None
    if distribution is not None and distribution not in DISTRIBUTIONS:
        raise OptionError(f"--calibration {text}: unknown distribution {distribution!r}; "
                               f"choose from {', '.join(DISTRIBUTIONS)}")
    try:
        samples = int(parts[1]) if len(parts) > 1 and parts[1] else DEFAULT_SAMPLES
        seed = int(parts[2]) if len(parts) > 2 and parts[2] else 0
    except ValueError:
        raise OptionError(f"--calibration {text}: SAMPLES and SEED are integers, e.g. normal:32:0") from None
    if not 1 <= samples <= MAX_SAMPLES:
        raise OptionError(f"--calibration {text}: SAMPLES must be in 1..{MAX_SAMPLES}, got {samples}")
    if seed < 0:
        raise OptionError(f"--calibration {text}: SEED must be >= 0, got {seed}")
    return Calibration(distribution, samples, seed)


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
    loaded = load_user_inputs(settings.file, spec, {i.name: i.layout for i in spec.inputs}, DEFAULT_MAX_TENSOR_MB,
                              preprocess=settings.preprocess, option=OPTION)
    return [example.inputs for example in loaded.examples[:settings.samples]]
