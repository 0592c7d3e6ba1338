"""The graph of formats: which chains of hops lead from a source to a format a
target runs.

Formats are nodes (a source's in-memory model is the format named after the
source: "torch", "keras"; files are "onnx", "tflite", "openvino-ir"...), hops
are edges. A case's path is one chain; each hop is cached on its own, so one
torch -> ONNX export feeds every target that runs ONNX or a format made from it.
"""

from __future__ import annotations

from functools import lru_cache

from harness import backends

Path_ = tuple[str, ...]   # hop names, in order
MAX_HOPS = 4              # no conversion chain we know is longer; bounds the search


@lru_cache(maxsize=None)
def _edges() -> tuple[tuple[str, tuple[str, ...], str], ...]:
    """(hop name, formats it reads, format it writes) for every registered hop."""
    edges = []
    for name in backends.names("hop"):
        hop = backends.hop(name)
        edges.append((name, tuple(hop.READS), hop.WRITES))
    return tuple(edges)


@lru_cache(maxsize=None)
def paths(start: str, target: str) -> tuple[Path_, ...]:
    """Every chain of hops from format `start` to a format runtime `target`
    runs, without a format twice; the shortest first, and among equals the one
    ending in the format the runtime prefers (its first). The empty chain is a
    path where the runtime runs `start` itself (an ONNX file on ONNX Runtime)."""
    goal = backends.runtime_formats(target)
    found: list[tuple[Path_, str]] = []
    frontier: list[tuple[Path_, str, tuple[str, ...]]] = [((), start, (start,))]
    for _ in range(MAX_HOPS + 1):
        following = []
        for chain, fmt, seen in frontier:
            if fmt in goal:
                found.append((chain, fmt))
            for name, reads, writes in _edges():
                if fmt in reads and writes not in seen:
                    following.append((chain + (name,), writes, seen + (writes,)))
        frontier = following
    found.sort(key=lambda item: (len(item[0]), goal.index(item[1])))
    return tuple(chain for chain, _ in found)


def written(path: Path_) -> tuple[str, ...]:
    """The formats a path writes, in order."""
    return tuple(backends.hop(name).WRITES for name in path)


def path_label(path: Path_) -> str:
    """How a case id names a path that is not its target's default: the formats it writes."""
    return "via-" + "-".join(written(path))


def choose(available: tuple[Path_, ...], wanted: str) -> list[Path_]:
    """The paths a run takes from `available` (shortest first): `shortest`
    (the default), `all`, or a chain of written formats such as
    `onnx,openvino-ir`."""
    if not available:
        return []
    if wanted == "shortest":
        return [available[0]]
    if wanted == "all":
        return list(available)
    chain = tuple(f.strip() for f in wanted.split(",") if f.strip())
    return [p for p in available if written(p) == chain]
