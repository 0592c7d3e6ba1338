"""ONNX file -> ncnn (.param + .bin) through pnnx's ONNX import: the other
road ncnn's documentation gives ("use ncnn with pytorch or onnx"), and the one
that reaches ncnn from every source that exports ONNX (keras and mxnet; torch
keeps its shorter torch->ncnn hop, this one with --path all).

The pnnx executable is run as torch->ncnn runs it (harness/converters/
pnnx_exec.py, which both hops share): in a subprocess with a
timeout, fp16=0 (pnnx's default is fp16 weights), every path absolute, and a
crash, a hang or a missing output is this case's error quoting pnnx's last
lines. Layer types ncnn does not know are refused, naming them; pnnx's blobs
in0.../out0... map to the spec's inputs and outputs by position.

pnnx writes its intermediate files (model.pnnx.param, model.pnnxsim.onnx...)
beside the file it is given: it is given a link to the ONNX file (and to its
external data) inside its own work folder, so that nothing is written beside
the upstream hop's cached file.

The file is read first (`onnx.load`): one that does not parse is refused with
a clear error before pnnx sees it, and its graph inputs must be the spec's
inputs in the spec's order, with the ranks and fixed dims of the shapes given
to pnnx (the example's first sample, laid out as the file takes them: keras's
ONNX may be NHWC). The ncnn model keeps the ONNX's layouts, without the batch.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from harness.converters.onnx_checks import declared_input_dims
from harness.converters import pnnx_exec
from harness.converters.pnnx_exec import run_pnnx, second_shapes
from harness.errors import CaseError, summarize_exception
from harness.layouts import relaid
from harness.model_file import file_sha256
from harness.specs import ModelSpec

NAME = "pnnx (onnx)"
READS = ("onnx",)
WRITES = "ncnn"
# The pip distributions whose versions every record carries, where installed (backends.distributions).
DISTRIBUTIONS = ("pnnx",)
REVISION = 1
FILENAME = "model.ncnn.param"   # model.ncnn.bin beside it
OPTIONS = ()


def versions() -> dict[str, str]:
    import ncnn
    import onnx
    import pnnx

    return {"pnnx": getattr(pnnx, "__version__", "unknown"), "ncnn": ncnn.__version__, "onnx": onnx.__version__}


def convert(source: Path, spec: ModelSpec, example: Sequence[np.ndarray], out_dir: Path, *,
            layouts: tuple[dict[str, str | None], dict[str, str | None]]) -> dict[str, Any]:
    """Convert the ONNX file `source` with pnnx to `out_dir/model.ncnn.param`
    (+ .bin); return the provenance. The shapes given to pnnx are those of the
    engine's example (batch one), laid out as the file takes them (`layouts`)."""
    source = Path(source).resolve()   # pnnx runs in its work folder: every path it is given is absolute
    proto = _read_onnx(source, spec)
    # The example again in the spec's layouts (the `example` given is laid out as the source holds
    # it, which may not be the file's layouts), batch one, then laid out as the file takes it.
    from harness.inputs import example_recipe, make_inputs

    drawn = make_inputs(spec, example_recipe(spec))
    in_spec = [np.ascontiguousarray(drawn[i.name][:1]) for i in spec.inputs]
    second_spec = second_shapes(spec, in_spec)
    first = [relaid(x, i.layout, layouts[0].get(i.name, i.layout)) for i, x in zip(spec.inputs, in_spec)]
    second = (None if second_spec is None else
              [relaid(x, i.layout, layouts[0].get(i.name, i.layout)) for i, x in zip(spec.inputs, second_spec)])
    _check_inputs(proto, spec, first, source)
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pnnx-", dir=out_dir) as work:
        work_dir = Path(work)
        linked = _link_into(source, proto, work_dir)
        arguments, layers, (in_blobs, out_blobs), seconds = run_pnnx(
            linked, work_dir, out_dir, FILENAME, spec, first, second,
            f"the ONNX file {source} of model {spec.name!r}")
    return {
        "converter": NAME,
        "tool": "the pnnx executable (ONNX -> ncnn)",
        "tool_version": versions()["pnnx"],
        "fp16": pnnx_exec.FP16,
        "weights": "model.ncnn.bin beside model.ncnn.param",
        "pnnx_arguments": arguments,
        "source_sha256": file_sha256(source),
        "input_shapes": {i.name: list(x.shape) for i, x in zip(spec.inputs, first)},
        "second_shapes": ({i.name: list(x.shape) for i, x in zip(spec.inputs, second)} if second is not None
                          else None),
        "blobs": {"inputs": dict(zip([i.name for i in spec.inputs], in_blobs)),
                  "outputs": dict(zip([o.name for o in spec.outputs], out_blobs)),
                  "matched_by": "position (pnnx names blobs in0.../out0... in the ONNX graph's order)"},
        "batch": "converted at batch one; ncnn has no batch axis, the runtime runs a batch sample by sample",
        "layer_count": len(layers),
        "pnnx_seconds": round(seconds, 3),
        # The ONNX file's layouts: the runtime splits the batch, ncnn's blob is the file's tensor without N.
        "input_layouts": dict(layouts[0]),
        "output_layouts": dict(layouts[1]),
        "versions": versions(),
    }


def _read_onnx(source: Path, spec: ModelSpec) -> Any:
    """The ONNX model (without its external data), or this case's error for a
    file that is missing or does not parse."""
    import onnx
    from google.protobuf.message import DecodeError

    if not source.is_file():
        raise CaseError("convert", f"the ONNX file {source} does not exist or is not a file: export the model "
                                   "to ONNX first, or give the path of an .onnx file")
    try:
        proto = onnx.load(str(source), load_external_data=False)
    except (OSError, DecodeError) as error:
        raise CaseError("convert", f"the ONNX file {source} of model {spec.name!r} does not parse as an ONNX "
                                   f"model, so pnnx is not run on it: {summarize_exception(error, 4)}\nExport it "
                                   "again: the file is truncated, or is not an ONNX model") from None
    if not proto.graph.node:
        raise CaseError("convert", f"the ONNX file {source} of model {spec.name!r} holds no graph (no nodes): "
                                   "it is not an exported model; export it again")
    return proto


def _check_inputs(proto: Any, spec: ModelSpec, first: Sequence[np.ndarray], source: Path) -> None:
    """The file's graph inputs must be the spec's, in order (pnnx names them
    in0, in1... in the graph's order, and the runtime binds by position), and
    take the shapes given to pnnx (rank, fixed dims)."""
    declared = declared_input_dims(proto)
    wanted = [i.name for i in spec.inputs]
    if list(declared) != wanted and sorted(declared) == sorted(wanted):
        raise CaseError("convert", f"the ONNX file {source} takes its inputs in the order {list(declared)}, not "
                                   f"the spec's {wanted}: pnnx names ncnn's input blobs by the graph's order and "
                                   "the ncnn runtime binds them by position; export the inputs in the spec's order")
    if len(declared) != len(wanted):
        raise CaseError("convert", f"the ONNX file {source} has {len(declared)} input(s) {list(declared)}, but the "
                                   f"spec of model {spec.name!r} has {len(wanted)}: {wanted}")
    for (name, dims), inp, array in zip(declared.items(), spec.inputs, first):
        fits = len(dims) == array.ndim and all(d is None or d == s for d, s in zip(dims, array.shape))
        if not fits:
            raise CaseError("convert", f"the ONNX file {source} declares input {name!r} (the spec's {inp.name!r}) "
                                       f"with dims {dims}, which shape {list(array.shape)} (the spec's example at "
                                       "batch one, in the file's layout) does not fit: check the input's layout "
                                       "and shape")


def _link_into(source: Path, proto: Any, work_dir: Path) -> Path:
    """A link to `source` in `work_dir` (pnnx writes its side files beside the
    file it is given), with links to the external data files it names."""
    linked = work_dir / "model.onnx"
    os.symlink(source, linked)
    locations = {entry.value for tensor in _tensors(proto) for entry in tensor.external_data
                 if entry.key == "location"}
    for location in sorted(locations):
        target, link = source.parent / location, work_dir / location
        if target.is_file() and not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(target.resolve(), link)
    return linked


def _tensors(proto: Any):
    from onnx.external_data_helper import _get_all_tensors

    return _get_all_tensors(proto)
