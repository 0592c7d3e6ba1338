"""One module per conversion edge. Each `convert(...)` writes an artifact into a
folder it is given and returns its provenance: the tool, its version, the options
and the layouts of the artifact's inputs and outputs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Artifact:
    """A converted model on disk and how it came to be."""

    path: Path
    format: str
    provenance: dict[str, Any] = field(default_factory=dict)
    input_layouts: dict[str, str | None] = field(default_factory=dict)
    output_layouts: dict[str, str | None] = field(default_factory=dict)
