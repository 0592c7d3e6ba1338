"""Each Quantize/Dequantize pair of an int8 QDQ file judged against the tensor it stands for.

No output-level multiple separates a correct int8 recipe from every planted bug
(benchmarks/precision_floor.py: an activation's scale x4 measures 1.07x the floor's
RMS error on the transformer, a wrong per-channel axis 1.00x), but inside the file
each pair says what it represents, and the fp32 model says what its tensor takes:

- an activation's represented range, (qmax - qmin) * scale on the sides of 0 its
  tensor takes, against the range the tensor takes in the fp32 model on the
  calibration feed: `wasted_bits` = log2(represented / observed);
- a weight's int8 values, scale and zero point against the fp32 initializer they
  stand for: the largest error in steps of its scale (`weight_steps`);
- a QuantizeLinear and the DequantizeLinear reading its output: the same scale and
  zero point (values, not names).

A pair past a limit fails the case. The limits (PAIR_LIMITS), measured by the
benchmark on the zoo's CNN, its 5-logit classifier and its transformer at 10, 25
and 200 draws, each with the worst correct build (six recipes: per-tensor and
per-channel, MinMax, Entropy, Percentile, symmetric or not) and the mildest bug:

| limit | value | correct builds | planted bugs |
| --- | --- | --- | --- |
| activation wasted bits, most | 1.5 | <= 1.08 | scale x4 >= 1.89; calibrated on uniform 0..255 >= 6.22 |
| activation wasted bits, fewest | -0.75 (1.68x its range) | >= -0.432 | scale x0.25 <= -1.49 |
| weight error, steps of its scale | 1.0 | 0.5 (a rounding) | one channel's scale x2: 63.5; wrong axis >= 17.3 |
| Q/DQ pair disagrees | any | 0 | zero point +10: 1 |

0 correct builds flagged, 0 bugs missed (`python benchmarks/precision_floor.py`, which measures
with this module: its `int8, per Q/DQ pair` lines; ~4 minutes here). The share of an
activation's values clipped (correct <= 0.0077, x0.25 >= 0.10) is recorded but not judged:
the -0.75 bits limit already catches what it would.
A weight's fp32 original is found by ONNX Runtime's name (`W_quantized` for `W`),
else as the fp32 initializer the same node reads at the same input; one found by
neither is reported unchecked, never guessed; so is an activation whose tensor the
fp32 model does not hold. An activation all 0 on the feed is recorded, not judged (no range
to hold its scale to). The quantized type is the zero point's (int8, uint8: ONNX Runtime's
default activations), uint8 where a pair has none, as ONNX says.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

if TYPE_CHECKING:   # the engine imports the frameworks' adapters: not at import time here
    from harness.calibration_settings import Calibration
    from harness.engine import PreparedCase

INT8_RANGE = (-128, 127)
PAIR_LIMITS = {"max_wasted_bits": 1.5, "min_wasted_bits": -0.75, "max_weight_steps": 1.0}


def represented_range(scale: float, zero_point: int, qrange: tuple[int, int] = INT8_RANGE) -> tuple[float, float]:
    """The real values an int8 (scale, zero point) represents: (qmin - zp) * s .. (qmax - zp) * s."""
    return (qrange[0] - zero_point) * scale, (qrange[1] - zero_point) * scale


def wasted_bits(represented: tuple[float, float], observed: tuple[float, float]) -> float:
    """log2 of the represented width over the observed one, on the sides of 0 the tensor takes
    (a ReLU's output under a symmetric scheme leaves the negative half unused by design, not by a
    bad scale): 2 for a range four times wider than its tensor's, negative for a clipping one."""
    low = represented[0] if observed[0] < 0 else 0.0
    high = represented[1] if observed[1] > 0 else 0.0
    width = max(observed[1], 0.0) - min(observed[0], 0.0)
    if width == 0:
        return math.inf
    return math.log2((high - low) / width)


def clipped_share(values: np.ndarray, represented: tuple[float, float], scale: float) -> float:
    """The share of `values` that quantize beyond the representable range (past half a step)."""
    values = np.asarray(values)
    beyond = (values < represented[0] - scale / 2) | (values > represented[1] + scale / 2)
    return float(np.count_nonzero(beyond)) / max(values.size, 1)


def weight_fit(original: np.ndarray, quantized: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None,
               axis: int) -> dict[str, float]:
    """How a weight's int8 values, scale and zero point (per tensor, or per channel along `axis`)
    stand for its fp32 values: the largest error in steps of the scale (<= 0.5 for a correct
    rounding), and the largest wasted bits over its channels."""
    scale = np.asarray(scale, np.float64)
    point = np.zeros_like(scale) if zero_point is None else np.asarray(zero_point, np.float64)
    shape = [1] * quantized.ndim
    if scale.ndim == 1:
        shape[axis % quantized.ndim] = scale.size
    step, offset = scale.reshape(shape), point.reshape(shape)
    dequantized = (quantized.astype(np.float64) - offset) * step
    steps = float(np.max(np.abs(dequantized - original) / step))
    channels = np.moveaxis(original, axis % original.ndim, 0).reshape(scale.size, -1) if scale.ndim == 1 \
        else original.reshape(1, -1)
    wasted = max(wasted_bits(represented_range(float(s), int(z)), (float(c.min()), float(c.max())))
                 for s, z, c in zip(scale.reshape(-1), point.reshape(-1), channels))
    return {"weight_steps": steps, "wasted_bits": wasted}


def initializers(model: Any) -> dict[str, Any]:
    """`model`'s initializers by name."""
    return {t.name: t for t in model.graph.initializer}


def activation_quantizers(model: Any) -> list:
    """The QuantizeLinear nodes of `model` that quantize a computed tensor (not a weight), in graph order."""
    weights = initializers(model)
    return [n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in weights]


def weight_dequantizers(model: Any) -> list:
    """The DequantizeLinear nodes of `model` that read an int8 weight initializer, in graph order."""
    import onnx

    weights = initializers(model)
    return [n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in weights
            and weights[n.input[0]].data_type == onnx.TensorProto.INT8]


def is_qdq_file(path: Path) -> bool:
    """Whether the ONNX file at `path` quantizes a computed tensor with a QuantizeLinear."""
    import onnx

    return bool(activation_quantizers(onnx.load(str(path), load_external_data=False)))


def qdq_pairs(qdq_path: Path, fp32_path: Path, feed: Sequence[Mapping[str, np.ndarray]]) -> list[dict[str, Any]]:
    """Every Q/DQ pair of the file at `qdq_path`, measured against the fp32 model at `fp32_path`
    run on `feed` (examples keyed by the fp32 file's input names), worst first: per activation
    QuantizeLinear (with its DequantizeLinear), its scale, zero point, represented and observed
    ranges, wasted bits, clipped share, whether the pair agrees; per weight DequantizeLinear, its
    error against the fp32 weight in steps of its scale. Each pair's `finding` is why it fails
    (None: within PAIR_LIMITS); an unmatched one has `unchecked`, saying why."""
    import onnx
    from onnx import numpy_helper

    model, fp32 = onnx.load(str(qdq_path)), onnx.load(str(fp32_path))
    arrays = {name: numpy_helper.to_array(t) for name, t in initializers(model).items()}
    computed = {o for n in fp32.graph.node for o in n.output} | {i.name for i in fp32.graph.input}
    dequantizers = {n.input[0]: n for n in model.graph.node if n.op_type == "DequantizeLinear"}
    # the tensor a pair stands for: its quantizer's input, else what its dequantizer writes (ONNX
    # Runtime quantizes a graph output X as "X_QuantizeLinear_Input" and dequantizes it back to X)
    stands_for = {}
    for node in activation_quantizers(model):
        partner = dequantizers.get(node.output[0])
        stands_for[node.name] = next((t for t in (node.input[0], partner.output[0] if partner else None)
                                      if t in computed), None)
    values = _tensor_values(fp32, sorted({t for t in stands_for.values() if t}), feed)
    reading: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            reading.setdefault(name, []).append(node)
    pairs = []
    for node in activation_quantizers(model):
        partner = dequantizers.get(node.output[0])
        clipped_to = _clipped_by(reading.get(partner.output[0], []), arrays) if partner is not None else None
        pairs.append(_activation_pair(node, partner, arrays, stands_for[node.name], values, clipped_to))
    originals = {name: numpy_helper.to_array(t) for name, t in initializers(fp32).items()}
    readers = {(n.name, index): name for n in fp32.graph.node for index, name in enumerate(n.input) if name in originals}
    consumers = {i: (n.name, index) for n in model.graph.node for index, i in enumerate(n.input)}
    for node in weight_dequantizers(model):
        name = node.input[0].removesuffix("_quantized")
        if name not in originals:   # the fp32 initializer the same node reads at the same input
            name = readers.get(consumers.get(node.output[0], ("", -1)))
        pair = {"kind": "weight", "tensor": node.input[0], "node": node.name}
        if name is None or originals[name].shape != arrays[node.input[0]].shape:
            pairs.append({**pair, "unchecked": "no fp32 initializer of its name or read where it is read"})
            continue
        pair.update(original=name, **weight_fit(
            originals[name], arrays[node.input[0]], arrays[node.input[1]],
            arrays[node.input[2]] if len(node.input) > 2 and node.input[2] else None,
            next((a.i for a in node.attribute if a.name == "axis"), 1)))
        pairs.append({**pair, "finding": _weight_finding(pair)})
    return sorted(pairs, key=_excess, reverse=True)


def _tensor_values(fp32: Any, tensors: list[str], feed: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Each of `tensors` in the fp32 model over the whole feed, flattened (graph optimizations
    off: every tensor is computed as the graph names it)."""
    import onnx

    from harness.runtimes.onnxruntime import cpu_session

    feedable = [i.name for i in fp32.graph.input if i.name not in initializers(fp32)]
    listed = {o.name for o in fp32.graph.output}
    fp32.graph.output.extend(onnx.helper.make_empty_tensor_value_info(t) for t in tensors
                             if t not in listed and t not in feedable)
    session = cpu_session(fp32.SerializeToString())
    fetched = [t for t in tensors if t not in feedable]
    runs: dict[str, list[np.ndarray]] = {t: [] for t in tensors}
    for sample in feed:
        for name, value in zip(fetched, session.run(fetched, {k: sample[k] for k in feedable})):
            runs[name].append(np.ravel(value))
        for name in set(tensors) & set(feedable):
            runs[name].append(np.ravel(sample[name]))
    return {name: np.concatenate(found) for name, found in runs.items() if found}


def _clipped_by(readers: list, arrays: dict[str, np.ndarray]) -> tuple[float, float] | None:
    """The bounds a dequantized tensor is clipped to where every node reading it is a Clip or a Relu
    (the widest of them); None otherwise. ONNX Runtime quantizes a ReLU6's input with its Clip's range:
    values past the bounds are lost to the Clip anyway, not to the pair."""
    bounds = []
    for node in readers:
        if node.op_type == "Relu":
            bounds.append((0.0, math.inf))
        elif node.op_type == "Clip":   # opset 11+: min and max as optional inputs
            low, high = [*node.input[1:3], "", ""][:2]
            if any(name and name not in arrays for name in (low, high)):
                return None   # a bound computed at run time: not known here
            bounds.append((float(arrays[low]) if low else -math.inf, float(arrays[high]) if high else math.inf))
        else:
            return None
    return (min(b[0] for b in bounds), max(b[1] for b in bounds)) if bounds else None


def _activation_pair(node: Any, partner: Any, arrays: dict[str, np.ndarray], tensor: str | None,
                     values: dict[str, np.ndarray], clipped_to: tuple[float, float] | None) -> dict[str, Any]:
    scale = float(arrays[node.input[1]])
    given = arrays[node.input[2]] if len(node.input) > 2 and node.input[2] else None
    point = int(given) if given is not None else 0
    # the quantized type is the zero point's; without one, ONNX's default: uint8
    quantized = np.iinfo(given.dtype if given is not None else np.uint8)
    pair: dict[str, Any] = {"kind": "activation", "tensor": tensor or node.input[0], "node": node.name,
                            "dequantizer": partner.name if partner is not None else None, "scale": scale,
                            "zero_point": point, "bits": quantized.bits, "pair_agrees": _agrees(node, partner, arrays)}
    if tensor is None:
        return {**pair, "unchecked": "the fp32 model holds no tensor of its name nor of its dequantizer's output"}
    values = values[tensor]
    represented = represented_range(scale, point, (int(quantized.min), int(quantized.max)))
    if represented[0] == 0:   # zero point at qmin: ONNX Runtime folded a Relu into the quantizer
        values = np.maximum(values, 0)
    if clipped_to is not None:
        values = np.clip(values, *clipped_to)
    observed = (float(values.min()), float(values.max()))
    pair.update(represented=represented, observed=observed, wasted_bits=wasted_bits(represented, observed),
                clipped=clipped_share(values, represented, scale))
    return {**pair, "finding": _activation_finding(pair)}


def _agrees(quantizer: Any, dequantizer: Any, arrays: dict[str, np.ndarray]) -> bool:
    """Whether the DequantizeLinear reads the scale and zero point its QuantizeLinear writes with (by value)."""
    if dequantizer is None:
        return True   # a quantized tensor no DequantizeLinear reads here: nothing to disagree with
    ours, theirs = list(quantizer.input[1:]), list(dequantizer.input[1:])
    if len(ours) != len(theirs):
        return False
    return all(a == b or (a in arrays and b in arrays and np.array_equal(arrays[a], arrays[b]))
               for a, b in zip(ours, theirs))


def _activation_finding(pair: dict[str, Any]) -> str | None:
    where = (f"int8 file: the QuantizeLinear/DequantizeLinear pair of tensor {pair['tensor']!r} "
             f"(nodes {pair['node']!r} / {pair['dequantizer']!r})")
    if not pair["pair_agrees"]:
        return (f"{where} disagree: the DequantizeLinear reads another scale or zero point than the "
                "QuantizeLinear wrote with, so every value it passes on is moved or scaled")
    wasted = pair["wasted_bits"]
    if math.isinf(wasted):   # the tensor takes only 0 on the feed: no range to hold its scale to
        return None
    if wasted > PAIR_LIMITS["max_wasted_bits"]:
        return (f"{where} represents {2 ** wasted:.1f}x the range the tensor takes on the calibration feed "
                f"({wasted:.2f} of {pair['bits']} bits unused; a correct calibration leaves at most "
                f"{PAIR_LIMITS['max_wasted_bits']:g}): its scale was chosen for another range")
    if wasted < PAIR_LIMITS["min_wasted_bits"]:
        return (f"{where} represents {2 ** wasted:.2f}x the range the tensor takes on the calibration feed "
                f"(a correct calibration represents at least {2 ** PAIR_LIMITS['min_wasted_bits']:.2f}x): "
                f"{pair['clipped']:.1%} of its values are clipped; its scale was chosen for another range")
    return None


def _weight_finding(pair: dict[str, Any]) -> str | None:
    if pair["weight_steps"] <= PAIR_LIMITS["max_weight_steps"]:
        return None
    return (f"int8 file: weight {pair['tensor']!r} (DequantizeLinear {pair['node']!r}) stands "
            f"{pair['weight_steps']:.1f} steps of its scale from the fp32 weight {pair['original']!r} "
            f"(a correct rounding is at most 0.5; limit {PAIR_LIMITS['max_weight_steps']:g}): its scale, zero point "
            "or axis does not match its values")


def _excess(pair: dict[str, Any]) -> float:
    """How far past its limit a pair is, as a share of the limit (> 1 fails); unchecked pairs last."""
    if "unchecked" in pair:
        return -math.inf
    if pair["kind"] == "weight":
        return pair["weight_steps"] / PAIR_LIMITS["max_weight_steps"]
    if not pair["pair_agrees"]:
        return math.inf
    if math.isinf(pair["wasted_bits"]):   # a tensor all 0 on the feed: not judged
        return 0.0
    return max(pair["wasted_bits"] / PAIR_LIMITS["max_wasted_bits"],
               pair["wasted_bits"] / PAIR_LIMITS["min_wasted_bits"])


def check_case(prepared: PreparedCase, calibration: Calibration) -> dict[str, Any] | None:
    """The Q/DQ pairs of a case at int8 whose artifact, or an ONNX file on its path, is a QDQ file
    (the last such), against the fp32 ONNX model of the same case (the last ONNX file before the
    lowering, or the ONNX original, else the floor's fp32 export of the same original: a --converted
    file of another source) on the calibration feed (`calibration`: the run's settings); None where
    the case has no QDQ file. The entry's `findings` fail the case."""
    import onnx

    from harness import backends
    from harness.calibration import calibration_inputs
    from harness.errors import summarize_exception
    from harness.runtimes.binding import bound_names

    case, spec = prepared.case, prepared.spec
    if case.precision != "int8":
        return None
    onnx_files = [(i, path, layouts) for i, (path, layouts, _) in enumerate(prepared.files)
                  if backends.artifact_suffixes().get(path.suffix.lower()) == "onnx"]
    # the files a hop lowered and after; a user's --converted file is the whole path
    lowered_at = case.path.index(case.lowered_by) if case.lowered_by in case.path else 0
    qdq = next((path for i, path, _ in reversed(onnx_files) if i >= lowered_at and is_qdq_file(path)), None)
    if qdq is None:
        return None
    before = [(path, layouts) for i, path, layouts in onnx_files if i < lowered_at]
    # the floor's path exports the same original to fp32 ONNX before lowering it: where the case's path holds
    # no fp32 file (a --converted QDQ file of a torch or Keras original), that export, matched by tensor name
    floor_fp32 = [(path, layouts) for path, layouts, _ in (prepared.floor.files[:-1] if prepared.floor else [])
                  if backends.artifact_suffixes().get(path.suffix.lower()) == "onnx"]
    if before:
        (fp32, layouts), fp32_from = before[-1], "the case's path"
    elif case.source == "onnx":
        fp32, layouts, fp32_from = prepared.model.path, prepared.source_layouts[0], "the ONNX original"
    elif floor_fp32:
        (fp32, layouts), fp32_from = floor_fp32[-1], "the floor's fp32 export (tensors matched by name)"
    else:
        return {"file": str(qdq), "checked": False,
                "reason": f"no fp32 ONNX file on the case's path nor on its floor's to measure its tensors in "
                          f"({case.source} original; the floor: {prepared.provenance.get('floor', {}).get('reason')})"}
    start = time.perf_counter()
    graph = onnx.load(str(fp32), load_external_data=False).graph
    declared = [i.name for i in graph.input if i.name not in {t.name for t in graph.initializer}]
    names = bound_names([i.name for i in spec.inputs], declared)
    if names is None:
        return {"file": str(qdq), "fp32_file": str(fp32), "checked": False,
                "reason": f"the fp32 file's inputs {declared} do not match the spec's"}
    settings = calibration.for_spec(spec)
    feed = [{name: example[i.name] for name, i in zip(names, spec.inputs)}
            for example in calibration_inputs(spec, settings, layouts)]
    try:
        pairs = qdq_pairs(qdq, fp32, feed)
    except Exception as error:   # the check judges beside the verdict: it never stops a case
        return {"file": str(qdq), "fp32_file": str(fp32), "checked": False,
                "reason": f"measuring its pairs failed: {summarize_exception(error, 2)}"}
    return {"file": str(qdq), "fp32_file": str(fp32), "fp32_from": fp32_from, "checked": True,
            "seconds": time.perf_counter() - start,
            "samples": len(feed),
            "calibration": settings.file or settings.distribution, "limits": PAIR_LIMITS, "pairs": pairs,
            "unchecked": sum("unchecked" in p for p in pairs),
            "findings": [p["finding"] for p in pairs if p.get("finding")]}
