"""The walk: each compared tensor's error over its own magnitude, the bound a
tensor may not pass (the failing output's tolerance, as a share of its
magnitude), the first tensor in topological order past it, and the rows of the
error's growth from a graph input through it to the failing output."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from harness.compare import WHOLE_OUTPUT_MIN_ELEMENTS, json_number
from harness.localize.graph import Graph

# The bound where the failing output's tolerance gives none as a share of its
# magnitude (an integer output, an argmax; a float one held to an exact match):
# float tensors are held to a thousandth of theirs, far above float32 noise.
DEFAULT_BOUND = 1e-3
# Never below a few float32 roundings of the magnitude: a tolerance tighter than
# that would name the first node that rounds differently, not a bug.
FLOOR = 1e-6


@dataclass
class Bound:
    """How far a tensor may be from the reference, as a share of its own
    magnitude: the failing output's tolerance at the failing example, with
    the whole-output thresholds that tolerance sets (for tensors big enough)."""

    allowed: float
    min_snr_db: float = 0.0
    min_cosine: float = 0.0

    @classmethod
    def from_comparison(cls, comparison: Mapping[str, Any]) -> "Bound":
        """From an output's comparison (`OutputComparison.to_json()`): the
        bound at its largest element, over its largest magnitude."""
        tolerance = comparison.get("tolerance") or {}
        if comparison.get("ref_dtype", "float32")[:5] not in ("float", "bfloa"):
            return cls(DEFAULT_BOUND)
        max_ref = comparison.get("max_ref") or 0.0   # 0 where every element was NaN/Inf
        scale = comparison.get("output_range") or max_ref
        relative = tolerance.get("rtol", 0.0) + tolerance.get("atol_by_max", 0.0)
        if max_ref > 0:
            relative += (tolerance.get("atol", 0.0) + tolerance.get("atol_by_range", 0.0) * scale) / max_ref
        else:
            relative += tolerance.get("atol_by_range", 0.0)
        return cls(max(relative, FLOOR) if relative > 0 else DEFAULT_BOUND,
                   tolerance.get("min_snr_db", 0.0), tolerance.get("min_cosine", 0.0))

    def to_json(self) -> dict[str, float]:
        return {"allowed": self.allowed, "min_snr_db": self.min_snr_db, "min_cosine": self.min_cosine}


@dataclass
class TensorError:
    normalized_error: float      # max|got - ref| / max|ref| over the finite elements; inf: NaN/Inf apart, shapes apart
    max_abs: float
    snr_db: float | None
    cosine: float | None
    elements: int
    nonfinite: int = 0           # elements NaN or Inf on one side only (or with another sign)

    def diverges(self, bound: Bound) -> bool:
        if self.normalized_error > bound.allowed:
            return True
        whole = self.elements >= WHOLE_OUTPUT_MIN_ELEMENTS
        return whole and ((bound.min_snr_db > 0 and self.snr_db is not None and self.snr_db < bound.min_snr_db)
                          or (bound.min_cosine > 0 and self.cosine is not None and self.cosine < bound.min_cosine))

    def to_json(self) -> dict[str, Any]:
        return {"normalized_error": json_number(self.normalized_error), "max_abs": json_number(self.max_abs),
                "snr_db": json_number(self.snr_db), "cosine": json_number(self.cosine), "nonfinite": self.nonfinite}


def tensor_error(ref: np.ndarray, got: np.ndarray) -> TensorError:
    """The error of `got` against `ref` (same shape), in float64."""
    ref, got = np.asarray(ref), np.asarray(got)
    if np.squeeze(ref).shape != np.squeeze(got).shape:   # axes of size 1 aside, as a keepdims may leave them
        return TensorError(math.inf, math.inf, None, None, ref.size)
    r = ref.astype(np.float64).reshape(-1)
    g = got.astype(np.float64).reshape(-1)
    finite = np.isfinite(r) & np.isfinite(g)
    apart = ~finite & ~((np.isnan(r) & np.isnan(g)) | (np.isinf(r) & (r == g)))
    r, g = r[finite], g[finite]
    diff = np.abs(g - r)
    max_abs = float(diff.max()) if diff.size else 0.0
    max_ref = float(np.abs(r).max()) if r.size else 0.0
    normalized = max_abs / max_ref if max_ref > 0 else (0.0 if max_abs == 0 else math.inf)
    if apart.any():
        normalized = math.inf
    signal, noise = float(np.dot(r, r)), float(np.dot(diff, diff))
    snr = math.inf if noise == 0 else (10 * math.log10(signal / noise) if signal > 0 else -math.inf)
    norms = math.sqrt(signal * float(np.dot(g, g)))
    cosine = float(np.dot(r, g)) / norms if norms > 0 else (1.0 if max_abs == 0 else 0.0)
    return TensorError(normalized, max_abs, snr, cosine, int(np.asarray(ref).size), int(apart.sum()))


def tensor_errors(reference: Mapping[str, np.ndarray], converted: Mapping[str, np.ndarray]) -> dict[str, TensorError]:
    """The error of every tensor both sides have."""
    return {name: tensor_error(reference[name], converted[name]) for name in reference if name in converted}


def first_divergence(graph: Graph, errors: Mapping[str, TensorError], output: str, bound: Bound) -> list[str]:
    """The compared tensors that `output` is computed from and that pass the
    bound, in topological order: the first is the first diverging tensor."""
    upstream = graph.ancestors(output)
    return [name for name in graph.order if name in upstream and name in errors and errors[name].diverges(bound)]


def path_rows(graph: Graph, errors: Mapping[str, TensorError], layers: Mapping[str, str], first: str,
              output: str, bound: Bound) -> list[dict[str, Any]]:
    """The error along the shortest chain from a fed input through `first` to
    `output`: one row per tensor, None where it was not compared."""
    chain = graph.chain_from_inputs(first)
    chain += (graph.chain(first, output, floats_only=True) or graph.chain(first, output))[1:]
    rows = []
    for tensor in chain:
        node = graph.node_of(tensor)
        error = errors.get(tensor)
        row = {"tensor": tensor, "node": node.name if node is not None else None,
               "op_type": node.op_type if node is not None else "input", "layer": layers.get(tensor)}
        if tensor in graph.inputs and error is None:
            error = TensorError(0.0, 0.0, math.inf, 1.0, 0)   # both sides are fed the same input
        row.update(error.to_json() if error is not None else {"normalized_error": None, "max_abs": None,
                                                              "snr_db": None, "cosine": None,
                                                              "nonfinite": None})
        row["diverged"] = bool(error is not None and error.diverges(bound))
        rows.append(row)
    return rows


def describe_node(graph: Graph, errors: Mapping[str, TensorError], layers: Mapping[str, str],
                  tensor: str) -> dict[str, Any]:
    """The first diverging tensor, its node and the error of that node's inputs."""
    node = graph.node_of(tensor)
    inputs = []
    for name in node.input if node is not None else ():
        if not name:
            continue
        error = errors.get(name)
        if name in graph.inputs and error is None:
            error = TensorError(0.0, 0.0, math.inf, 1.0, 0)
        inputs.append({"tensor": name, "layer": layers.get(name),
                       "normalized_error": json_number(error.normalized_error) if error is not None else None})
    return {"tensor": tensor, "node": node.name if node is not None else None,
            "op_type": node.op_type if node is not None else "input", "layer": layers.get(tensor),
            **errors[tensor].to_json(), "inputs": inputs, "region": region(graph, errors, tensor)}


REGION_LIMIT = 20   # nodes listed at most


def region(graph: Graph, errors: Mapping[str, TensorError], tensor: str) -> list[dict[str, str]]:
    """The nodes between `tensor` and the nearest compared tensors it is
    computed from: where a source maps only its layers' outputs, the divergence
    starts in one of these (a Keras BatchNormalization is a Mul and an Add in
    tf2onnx's graph, and only the Add's output is the layer's). Topological order."""
    inside, queue = set(), deque([tensor])
    while queue and len(inside) <= REGION_LIMIT:
        node = graph.node_of(queue.popleft())
        if node is None or id(node) in inside:   # ids, not names: ONNX lets nodes go unnamed
            continue
        inside.add(id(node))
        for name in node.input:
            if name and name not in errors and name in graph.producer:
                queue.append(name)
    return [{"node": n.name, "op_type": n.op_type} for n in graph.model.graph.node if id(n) in inside]
