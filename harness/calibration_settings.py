"""`--calibration`'s value parsed into `Calibration`: how the int8 calibration
feed is made (harness/calibration.py makes it). Here, below harness/options.py,
so that RunOptions holds the parsed settings, parsed once where the options
are built, and no use parses the text again.

`--calibration DIST[:SAMPLES[:SEED]]` draws the feed from the input spec;
`--calibration PATH` gives the user's own feed, whose sha256 is in the
settings, so that a changed file is another cache key. A folder of images is
read with the preprocessing --parity-preprocess declares, which is then a
setting too: another preprocessing is another feed, so another cache key.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from harness.errors import CaseError, OptionError
from harness.image_inputs import EXAMPLE as PREPROCESS_EXAMPLE
from harness.image_inputs import OPTION as PREPROCESS_OPTION
from harness.image_inputs import Preprocess, is_image
from harness.model_file import file_sha256, folder_sha256, not_a_file
from harness.specs import DISTRIBUTIONS, ModelSpec

OPTION = "--calibration"
# 32 samples: the zoo's int8 errors moved by under 10% between 32 and 128
# samples (measured when this default was chosen), at a quarter of the calibration time.
DEFAULT_SAMPLES = 32
MAX_SAMPLES = 4096


@dataclass(frozen=True)
class Calibration:
    """How the feed is made: `distribution` None takes the spec's own. `file`:
    the user's feed (`--calibration=PATH`), of which the first `samples`
    examples are taken (every one, up to MAX_SAMPLES, as parsed); `sha256`: its
    bytes' digest, which puts its content in the converted file's cache key
    and provenance (None for a saved run's file that is not on this machine:
    `saved_calibration`); `preprocess`: where `file` is a folder of images, the
    --parity-preprocess text each image is read with. `text`: --calibration as
    typed, which parity.json's run header keeps; no setting (not in to_json,
    so not in a cache key)."""

    distribution: str | None = None
    samples: int = DEFAULT_SAMPLES
    seed: int = 0
    file: str | None = None
    sha256: str | None = None
    preprocess: str | None = None
    text: str = field(default="", compare=False)

    def for_spec(self, spec: ModelSpec) -> "Calibration":
        """These settings with the distribution decided: the spec's where none was given."""
        return self if self.distribution else replace(self, distribution=spec.calibration)

    def to_json(self) -> dict[str, Any]:
        return {name: value for name, value in asdict(self).items() if name != "text"}

    def check_file(self) -> None:
        """Refuse, for a case that makes the feed, a saved run's file that is not on this machine."""
        if self.file is not None and self.sha256 is None:
            raise CaseError("inputs", f"{OPTION} {self.text} {not_a_file(Path(self.file))} on this machine, and this "
                                      f"int8 case calibrates on it: put the feed there again, or give {OPTION} a "
                                      "feed that is here")


def parse_calibration(text: str | None, preprocess: Preprocess | None = None) -> Calibration:
    """`--calibration DIST[:SAMPLES[:SEED]]` (e.g. `uniform:64`) or `--calibration PATH`
    (what --parity-inputs reads); None or '' is the default.
    `preprocess`: --parity-preprocess, parsed, which a folder of images needs."""
    if not text:
        return Calibration()
    if _names_a_file(text):
        path = Path(text).expanduser()
        if not path.is_file() and not path.is_dir():
            raise OptionError(f"--calibration {text} {not_a_file(path)}: give an .npz of arrays named by input, "
                              "or a folder of them (what --parity-inputs reads)")
        images = path.is_dir() and any(is_image(file) for file in path.iterdir())
        if images and preprocess is None:
            raise OptionError(f"--calibration {text} is a folder of images: declare how each becomes the model's "
                              f"input, e.g. {PREPROCESS_OPTION}={PREPROCESS_EXAMPLE}")
        return Calibration(samples=MAX_SAMPLES, file=str(path.resolve()),
                           sha256=folder_sha256(path) if path.is_dir() else file_sha256(path),
                           preprocess=preprocess.text if images else None, text=text)
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
    return Calibration(distribution, samples, seed, text=text)


def saved_calibration(text: str, preprocess: Preprocess | None = None) -> Calibration:
    """A saved run's --calibration (parity.json's run header, a worker's or a shard's options) parsed on
    this machine: a PATH no longer here is kept, unread, so that the run's other cases replay; an int8 case
    refuses it (Calibration.check_file)."""
    if text and _names_a_file(text) and not Path(text).expanduser().exists():
        return Calibration(samples=MAX_SAMPLES, file=str(Path(text).expanduser().absolute()), text=text)
    return parse_calibration(text, preprocess)


def _names_a_file(text: str) -> bool:
    # a distribution's name never holds a separator nor ends in .npz
    return "/" in text or os.sep in text or text.endswith(".npz") or Path(text).is_dir()
