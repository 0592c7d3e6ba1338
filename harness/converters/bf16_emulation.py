"""ONNX -> ONNX that computes as a bf16 runtime does, in float32 types: the
bf16 floor's build (harness/precision_floor.py).

No standard tool writes a bf16 ONNX file that ONNX Runtime's CPU provider runs
(most of its kernels have no bfloat16 type), and a bf16 runtime does not
compute in bf16 throughout anyway: OpenVINO's CPU plugin, TensorRT and AMX
all store tensors in bf16 and accumulate in float32 (a bf16 dot product is
float32 sums of bf16 products). So the floor is the case's own fp32 ONNX file
with
- every float32 initializer rounded to bfloat16 (round to nearest even) and
  stored back as float32, which represents it exactly;
- every float32 graph input and every float32 node output rounded the same
  way, by a Cast to BFLOAT16 and a Cast back to FLOAT after it (ONNX Runtime's
  CPU Cast rounds to nearest even, and its optimizer keeps such a pair), so
  each node reads bf16 values and computes in float32;
- the graph's outputs left as their nodes computed them, as a runtime hands
  float32 outputs back.
This rounds a little more than OpenVINO's CPU plugin does: it keeps in float32
what it fuses into a convolution's or a matrix product's kernel (a bias, an
activation) and the subgraphs that compute shapes, so the floor is a little
wider than the runtime's own error, never narrower. Subgraphs (If, Loop, Scan
bodies) are left in float32.

onnx and ml_dtypes are imported inside the functions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from harness.cache import ArtifactCache
from harness.errors import CaseError
from harness.model_file import file_sha256

NAME = "bf16-emulation"
REVISION = 1
FILENAME = "model.onnx"
MIN_OPSET = 13   # the first opset whose Cast takes BFLOAT16


def versions() -> dict[str, str]:
    import ml_dtypes
    import onnx

    return {"onnx": onnx.__version__, "ml_dtypes": ml_dtypes.__version__}


def to_bfloat16(array: np.ndarray) -> np.ndarray:
    """`array` rounded to bfloat16 (to nearest even), as float32."""
    import ml_dtypes

    return np.asarray(array, dtype=np.float32).astype(ml_dtypes.bfloat16).astype(np.float32)


def rounded_model(model: Any) -> tuple[Any, dict[str, int]]:
    """A copy of the ONNX `model` with its initializers, float inputs and float
    node outputs rounded to bfloat16 (see the module's docstring), and how many
    of each were rounded."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < MIN_OPSET:
        raise CaseError("convert", f"{NAME}: the fp32 file's opset is {opset}; a Cast to BFLOAT16 needs opset "
                                   f"{MIN_OPSET} or later: export the model at opset {MIN_OPSET} or later")
    model = onnx.shape_inference.infer_shapes(model)
    graph = model.graph
    typed = {v.name: v.type.tensor_type.elem_type for v in (*graph.value_info, *graph.input, *graph.output)}
    float_tensors = {name for name, elem_type in typed.items() if elem_type == TensorProto.FLOAT}
    counts = {"initializers": 0, "inputs": 0, "node_outputs": 0, "untyped_outputs": 0}
    for index, tensor in enumerate(graph.initializer):
        if tensor.data_type == TensorProto.FLOAT:
            graph.initializer[index].CopyFrom(numpy_helper.from_array(to_bfloat16(numpy_helper.to_array(tensor)),
                                                                      tensor.name))
            counts["initializers"] += 1
    outputs = {o.name for o in graph.output}
    initializers = {t.name for t in graph.initializer}

    def rounding(raw: str, rounded: str) -> list:
        return [helper.make_node("Cast", [raw], [f"{rounded}__bf16"], to=TensorProto.BFLOAT16,
                                 name=f"{rounded}__to_bf16"),
                helper.make_node("Cast", [f"{rounded}__bf16"], [rounded], to=TensorProto.FLOAT,
                                 name=f"{rounded}__from_bf16")]

    nodes = []
    renamed_inputs = {}
    for graph_input in graph.input:
        if graph_input.name in float_tensors and graph_input.name not in initializers:
            renamed_inputs[graph_input.name] = f"{graph_input.name}__bf16_input"
            nodes += rounding(graph_input.name, renamed_inputs[graph_input.name])
            counts["inputs"] += 1
    for node in graph.node:
        for slot, name in enumerate(node.input):
            if name in renamed_inputs:
                node.input[slot] = renamed_inputs[name]
        following = []
        for slot, name in enumerate(node.output):
            if not name or name in outputs:
                continue
            if name not in float_tensors:
                # a tensor shape inference left untyped may be a float one: counted, so the provenance says so
                counts["untyped_outputs"] += name not in typed
                continue
            node.output[slot] = f"{name}__fp32"
            following += rounding(node.output[slot], name)
            counts["node_outputs"] += 1
        nodes += [node, *following]
    del graph.node[:]
    graph.node.extend(nodes)
    return model, counts


def convert(source: Path, out_dir: Path) -> dict[str, Any]:
    """Write the fp32 ONNX file `source` rounded to bfloat16 as `out_dir/model.onnx`; return the provenance."""
    import onnx

    from harness.converters.onnx_checks import check_file

    model, counts = rounded_model(onnx.load(str(source)))
    path = Path(out_dir) / FILENAME
    onnx.save(model, str(path))
    check_file(path, path.stem)
    return {"converter": NAME, "precision": "bf16", "source_sha256": file_sha256(Path(source)),
            "tool": (f"bf16 storage, float32 arithmetic: {counts['initializers']} initializers, "
                     f"{counts['inputs']} inputs and {counts['node_outputs']} node outputs rounded to bfloat16"),
            "rounded": counts, "versions": versions()}


def cached(source: Path, provenance: dict[str, Any], cache: ArtifactCache) -> tuple[Path, dict[str, Any], bool]:
    """The bf16 floor of the fp32 file `source` (whose provenance gives the layouts)
    through the artifact cache, keyed by the file's content: its path, provenance
    and whether it came from the cache."""
    layouts = {key: provenance[key] for key in ("input_layouts", "output_layouts") if key in provenance}
    key = {"source_sha256": file_sha256(Path(source)), "converter": f"{NAME}@{REVISION}", "versions": versions()}
    folder, made, hit = cache.get_or_create(key, lambda out: {**convert(source, out), **layouts})
    return folder / FILENAME, made, hit
