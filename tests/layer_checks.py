"""What the sources' layer-mapping tests (test_localize_torch, _keras, _mxnet)
measure of a LayerValues against ONNX Runtime's values of the same tensors."""

from __future__ import annotations

import numpy as np

from harness.localize.layers import LayerValues


def errors(values: LayerValues, ort_values: dict[str, np.ndarray]) -> dict[str, float]:
    """Each mapped tensor's max|source - ort| / max|ort|, inf where the shapes differ."""
    found = {}
    for tensor, value in values.values.items():
        theirs = ort_values[tensor].astype(np.float64)
        found[tensor] = (float(np.max(np.abs(value - theirs)) / max(float(np.max(np.abs(theirs))), 1e-30))
                         if value.shape == theirs.shape else float("inf"))
    return found


def node_share(values: LayerValues, graph) -> float:
    """The share of the graph's nodes whose output got a source value."""
    return len({graph.producer[t].name for t in values.values}) / graph.nodes
