"""`--parity-labels=FILE[:OUTPUT]` parsed into `Labels`, and the labels file
read: here, below harness/options.py, so that RunOptions holds the parsed
value, parsed once where the options are built (harness/accuracy.py runs the
top-1 accuracy they label)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.errors import OptionError
from harness.model_file import not_a_file

OPTION = "--parity-labels"
LABEL_SUFFIXES = (".npy", ".txt")


@dataclass(frozen=True)
class Labels:
    """The labels file and the output it labels (None: the classifier output, accuracy.classifier_output);
    `text`: the flag as typed, for the run header and messages."""

    file: Path
    output: str | None
    text: str


def parse_labels(text: str) -> Labels | None:
    """`FILE[:OUTPUT]` as Labels; None for ''."""
    if not text:
        return None
    file, output = text, None
    if Path(text).suffix not in LABEL_SUFFIXES and ":" in text:
        file, output = text.rsplit(":", 1)
    if Path(file).suffix not in LABEL_SUFFIXES or output == "":
        raise OptionError(f"{OPTION} {text}: expected FILE[:OUTPUT] with FILE a .npy or .txt of integer class "
                          "labels, e.g. labels.npy:logits")
    return Labels(Path(file), output, text)


def read_labels(path: Path) -> np.ndarray:
    """The labels in `path` as a 1-D int64 array; OptionError, one line, for anything else."""
    if not path.is_file():
        raise OptionError(f"{OPTION} {path} {not_a_file(path)}: give a .npy or a .txt of integer class labels")
    try:
        labels = (np.load(path, allow_pickle=False) if path.suffix == ".npy"
                  else np.loadtxt(path, dtype=np.int64, ndmin=1))
    except (OSError, ValueError) as error:
        first = (str(error).strip().splitlines() or [""])[0][:200]
        raise OptionError(f"{OPTION} {path} cannot be read as integer labels ({first}): save them with "
                          "numpy.save(path, labels.astype('int64')) or one integer per line") from None
    if labels.ndim != 1 or labels.dtype.kind not in "iu" or not labels.size:
        raise OptionError(f"{OPTION} {path} holds {labels.dtype}{list(labels.shape)}: give one integer class label "
                          "per example, a 1-D integer array")
    return labels.astype(np.int64)
