"""A content-addressed store of converted artifacts.

The key hashes everything that can change a conversion's result: the model's
content hash, the spec's inputs and outputs, the converter, its options and the
versions of the tools involved. An entry is written into a temporary folder and
renamed into place, so a crash never leaves a half-written artifact behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping

PROVENANCE = "provenance.json"


def cache_key(parts: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


class ArtifactCache:
    def __init__(self, root: Path, enabled: bool = True):
        self.root = Path(root)
        self.enabled = enabled

    def get_or_create(self, parts: Mapping[str, Any], create: Callable[[Path], dict]) -> tuple[Path, dict, bool]:
        """The folder holding the artifact for `parts`, its provenance, and whether it
        came from the cache. `create(folder)` writes the artifact and returns its provenance."""
        key = cache_key(parts)
        final = self.root / key[:2] / key
        if self.enabled and (final / PROVENANCE).is_file():
            return final, json.loads((final / PROVENANCE).read_text()), True
        self.root.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="tmp-", dir=self.root))
        try:
            provenance = dict(create(work), cache_key=key)
            (work / PROVENANCE).write_text(json.dumps(provenance, indent=1, sort_keys=True, default=str))
            final.parent.mkdir(parents=True, exist_ok=True)
            if final.exists():
                shutil.rmtree(final)  # a stale entry (cache bypassed, or half-cleared by hand)
            os.replace(work, final)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        return final, provenance, False
