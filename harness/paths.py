"""The graph of formats: which chains of hops lead from a source to a format a
target runs.

Formats are nodes (a source's in-memory model is the format named after the
source: "torch", "keras"; files are "onnx", "tflite", "openvino-ir"...), hops
are edges. A case's path is one chain; each hop is cached on its own, so one
torch -> ONNX export feeds every target that runs ONNX or a format made from it.

Precision: a case computes in fp32 or in a lowered precision (fp16, int8...),
and one step of its chain does the lowering: a hop that writes that precision
(its PRECISIONS; a hop that cannot write fp32 only lowers, and may write the
format it reads: ONNX -> ONNX int8), or the runtime by its own settings (its
PRECISIONS: OpenVINO's inference precision hint). `lowering` decides which.
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
                # A hop that only lowers may write the format it reads, once in a chain.
                again = writes == fmt and lowers_only(name) and not any(map(lowers_only, chain))
                if fmt in reads and (writes not in seen or again):
                    following.append((chain + (name,), writes, seen + (writes,)))
        frontier = following
    found.sort(key=lambda item: (len(item[0]), goal.index(item[1])))
    return tuple(chain for chain, _ in found)


def hop_precisions(name: str) -> tuple[str, ...]:
    """The precisions hop `name` can write: its PRECISIONS, fp32 alone where it declares none."""
    return tuple(getattr(backends.hop(name), "PRECISIONS", ("fp32",)))


def lowers_only(name: str) -> bool:
    """Whether hop `name` only lowers precision (it cannot write fp32)."""
    return "fp32" not in hop_precisions(name)


RUNTIME = "runtime"   # `lowering`'s answer where the runtime lowers by its own settings


def lowering(path: Path_, target: str, precision: str) -> str | None:
    """Which step of `path` to runtime `target` makes the model compute in
    `precision`: "" for fp32 (nothing lowers), a hop's name, RUNTIME, or None
    where this path cannot reach it. A hop that only lowers must be the one;
    else the runtime, where it declares the precision; else the last hop that
    can write it."""
    only = [name for name in path if lowers_only(name)]
    if precision == "fp32":
        return None if only else ""
    if only:
        return only[0] if precision in hop_precisions(only[0]) else None
    if precision in backends.runtime_precisions(target):
        return RUNTIME
    return next((name for name in reversed(path) if precision in hop_precisions(name)), None)


def precision_paths(start: str, target: str, precision: str) -> tuple[tuple[Path_, str], ...]:
    """(path, lowering) for every path from `start` to runtime `target` that
    reaches `precision`, in the order of `paths`."""
    found = []
    for path in paths(start, target):
        step = lowering(path, target, precision)
        if step is not None:
            found.append((path, step))
    return tuple(found)


def written(path: Path_) -> tuple[str, ...]:
    """The formats a path writes, in order."""
    return tuple(backends.hop(name).WRITES for name in path)


def path_label(path: Path_, lowered_by: str = "", precision: str = "fp32") -> str:
    """How a case id names a path that is not its target's default: the formats
    it writes, the one its lowering hop writes with the precision after it."""
    return "via-" + "-".join(f"{fmt}-{precision}" if name == lowered_by else fmt
                             for name, fmt in zip(path, written(path)))


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
