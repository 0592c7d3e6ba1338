"""MXNet (Gluon) -> ONNX with mxnet's own exporter (`mxnet.onnx`, "mx2onnx").

The block is exported to a symbol json + params pair in the output folder
(`harness.sources.mxnet.export_pair`), which is then converted with the
exporter at the requested opset, with `dynamic=True` and the spec's symbolic
dims as None (`dynamic_input_shapes`, in the source's layout). The written
file is then edited, and every edit is listed in the provenance ("edits"):
its initializers leave the graph inputs, its inputs and outputs take the
spec's names (mx2onnx names them after the symbol: "data", "<layer>_fwd",
...). The file must pass `onnx.checker`.

Exporter quirks worked around here (mxnet 1.9.1, the last 1.x release;
tests/test_mxnet_conversion.py keeps canaries):
- `mx.onnx.export_model` takes no `opset_version`: it translates for, and
  stamps the file with, onnx's newest opset (28 with onnx 1.23) and IR
  version, although its translations are written for opsets 12 and 13 (an
  opset-13 ReduceMean with an `axes` attribute is not a valid opset-18+ node).
  Where export_model takes no opset this module runs export_model's own steps
  (`MXNetGraph.create_onnx_graph_proto(opset_version=...)`, then
  `onnx.helper.make_model`) with the requested opset, stamps that opset, and
  the lowest IR version that opset needs.
- mx2onnx checks each graph against onnx's newest opset whatever opset it
  translates for (`onnx.checker.check_graph` without an opset), so an opset-12
  translation that opset 13 changed fails there: at opset 12 the LSTM (its
  RNN translation squeezes with an `axes` attribute) is a CaseError naming
  Squeeze; opset 13, the default, exports it.
- mx2onnx lists every initializer among the graph inputs (ONNX Runtime warns
  and cannot constant-fold them; older runtimes reject the file): they are
  removed from the inputs.
- mx2onnx orders the graph outputs alphabetically by their mxnet names, not
  as the symbol returns them: outputs are matched to the spec's by the
  symbol's own output order.
- mxnet 1.9 needs `np.bool` and `onnx.mapping`, gone from today's numpy and
  onnx; `harness.sources.mxnet.import_mxnet` shims them and the provenance
  lists the shims applied.

mxnet and onnx are imported inside the functions, never at module level.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import re
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from harness.converters.onnx_names import check_count, rename_values
from harness.converters.onnx_checks import check_file, check_opset, main_opset, opset_option
from harness.errors import CaseError, summarize_exception
from harness.layouts import permutation
from harness.specs import ModelSpec

NAME = "mxnet->onnx"
READS = ("mxnet",)
WRITES = "onnx"
REVISION = 1
OPTIONS = ()
DEFAULT_OPSET = 13
FILENAME = "model.onnx"
PAIR_PREFIX = "mxnet_model"


@dataclasses.dataclass
class Options:
    """mx2onnx's settings: the --opset every hop that writes ONNX shares."""

    opset: int | None = opset_option()


def versions() -> dict[str, str]:
    import onnx

    mx = _mxnet()
    return {"mxnet": mx.__version__, "onnx": onnx.__version__}


def _mxnet():
    from harness.sources.mxnet import import_mxnet

    return import_mxnet()


def _shims_applied() -> list[str]:
    try:
        from harness.sources.mxnet import SHIMS_APPLIED
    except ImportError:
        return []
    if isinstance(SHIMS_APPLIED, dict):  # {shim: applied?}
        return [name for name, done in SHIMS_APPLIED.items() if done]
    return list(SHIMS_APPLIED)


def source_shape(spec_input, layout: str | None) -> list[int | None]:
    """The input's shape as the source holds it, None for symbolic dims."""
    shape = list(spec_input.shape)
    if spec_input.layout and layout and layout != spec_input.layout:
        shape = [shape[axis] for axis in permutation(spec_input.layout, layout)]
    return [None if isinstance(d, str) else int(d) for d in shape]


def convert(model: Any, spec: ModelSpec, example: Sequence[np.ndarray], out_dir: Path, *,
            layouts: tuple[dict[str, str | None], dict[str, str | None]],
            opset: int | None = None) -> dict[str, Any]:
    """Convert the Gluon HybridBlock `model` to `out_dir/model.onnx`; return the provenance.

    layouts: (input layouts, output layouts) of the model as mxnet holds it
    (`ModelSpec.source_layouts("mxnet")`); the file keeps them. example: inputs
    in the spec's order, laid out so, whose symbolic dims are pairwise distinct.
    """
    import onnx

    mx = _mxnet()
    from harness.sources.mxnet import export_pair

    opset = int(opset or DEFAULT_OPSET)
    input_layouts, output_layouts = dict(layouts[0]), dict(layouts[1])
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / FILENAME

    dynamic_shapes = [source_shape(i, input_layouts.get(i.name, i.layout)) for i in spec.inputs]
    for inp, array, dynamic in zip(spec.inputs, example, dynamic_shapes):
        if not _fits(list(np.shape(array)), dynamic):
            raise CaseError("convert", f"example input {inp.name!r} has shape {list(np.shape(array))} but the spec, "
                                       f"laid out as mxnet holds it, says {dynamic}: check the input's layout "
                                       "(ModelSpec.layouts) and shape")
    try:
        symbol_file, params_file = export_pair(model, out_dir / PAIR_PREFIX, example)
    except CaseError:
        raise
    except Exception as error:   # mxnet raises MXNetError, the user's hybrid_forward any type
        raise CaseError("convert", f"exporting model {spec.name!r} to an mxnet symbol/params pair failed: "
                                   f"{summarize_exception(error, 6)}\nThe model must be a HybridBlock whose "
                                   "hybrid_forward runs on the example inputs.") from None

    from mxnet.onnx.mx2onnx._export_helper import load_module

    sym, params = load_module(str(symbol_file), str(params_file))
    _check_supported(mx, sym, spec, opset)
    in_shapes = [tuple(int(d) for d in np.shape(a)) for a in example]
    in_types = [np.dtype(np.asarray(a).dtype) for a in example]
    edits: list[str] = []
    try:
        with _quiet():
            proto, tool = _export(mx, sym, params, in_shapes, in_types, dynamic_shapes, opset, out_dir, edits)
    except CaseError:
        raise
    except Exception as error:   # mx2onnx's translations raise any type (AttributeError, KeyError, MXNetError)
        raise CaseError("convert", f"mx.onnx.export_model (opset {opset}) failed for model {spec.name!r}: "
                                   f"{summarize_exception(error, 8)}\n"
                                   "An mxnet op without an ONNX translation must be replaced in the model "
                                   "(mx.onnx.get_operator_support() lists those it has); otherwise try another "
                                   "--opset.") from None
    # The default opset is held too: it is asked for explicitly, so another is the exporter's doing.
    check_opset(proto, opset, tool, spec.name, "Ask for another --opset.")

    # Initializers among the graph inputs: mx2onnx lists every one.
    initializers = {t.name for t in proto.graph.initializer}
    kept = [v for v in proto.graph.input if v.name not in initializers]
    removed = len(proto.graph.input) - len(kept)
    if removed:
        del proto.graph.input[:]
        proto.graph.input.extend(kept)
        edits.append(f"removed {removed} initializers from graph inputs")

    renamed_inputs = _rename(proto.graph, proto.graph.input, [i.name for i in spec.inputs], "input")
    output_order = _output_order(sym, proto, spec)
    renamed_outputs = _rename(proto.graph, output_order, [o.name for o in spec.outputs], "output")
    if [v.name for v in proto.graph.output] != [o.name for o in spec.outputs]:
        by_name = {v.name: v for v in proto.graph.output}
        ordered = [type(by_name[o.name])() for o in spec.outputs]
        for new, o in zip(ordered, spec.outputs):
            new.CopyFrom(by_name[o.name])
        del proto.graph.output[:]
        proto.graph.output.extend(ordered)
        edits.append(f"reordered graph outputs to the spec's order {[o.name for o in spec.outputs]}")
    if renamed_inputs:
        edits.append(f"renamed inputs {renamed_inputs}")
    if renamed_outputs:
        edits.append(f"renamed outputs {renamed_outputs}")
    _check_dynamic(proto, spec, dynamic_shapes)

    onnx.save(proto, str(path))
    check_file(path, spec.name)
    return {
        "converter": NAME,
        "tool": tool,
        "opset_requested": opset,
        "opset": main_opset(proto),
        "ir_version": proto.ir_version,
        "edits": edits,
        "in_shapes": [list(s) for s in in_shapes],
        "dynamic_input_shapes": {i.name: shape for i, shape in zip(spec.inputs, dynamic_shapes)},
        "symbol_files": [Path(symbol_file).name, Path(params_file).name],
        "shims": _shims_applied(),
        # mx2onnx keeps the block's own layouts.
        "input_layouts": input_layouts,
        "output_layouts": output_layouts,
        "versions": versions(),
    }


def _export(mx, sym, params, in_shapes, in_types, dynamic_shapes, opset: int, out_dir: Path,
            edits: list[str]) -> tuple[Any, str]:
    """The ONNX ModelProto of `sym`, translated for and stamped with `opset`,
    and the name of the call that made it."""
    import onnx
    from onnx import helper

    export_model = mx.onnx.export_model
    if "opset_version" in inspect.signature(export_model).parameters:  # not in mxnet 1.9.1
        scratch = out_dir / "mx2onnx_raw.onnx"
        export_model(sym, params, in_shapes=in_shapes, in_types=in_types, onnx_file_path=str(scratch),
                     dynamic=True, dynamic_input_shapes=dynamic_shapes, opset_version=opset)
        proto = onnx.load(str(scratch))
        scratch.unlink()
        tool = "mx.onnx.export_model"
    else:
        # export_model's own steps, with the opset it cannot take (see the module docstring).
        from mxnet.onnx.mx2onnx._export_onnx import MXNetGraph

        in_types_t = [helper.np_dtype_to_tensor_dtype(t) for t in in_types]
        graph = MXNetGraph().create_onnx_graph_proto(sym, params, in_shapes, in_types_t, opset_version=opset,
                                                      dynamic=True, dynamic_input_shapes=dynamic_shapes)
        proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        edits.append(f"stamped opset {opset} (mx.onnx.export_model of mxnet {mx.__version__} takes no opset and "
                     f"stamps onnx's newest, {onnx.defs.onnx_opset_version()})")
        tool = "mx.onnx.export_model steps (MXNetGraph.create_onnx_graph_proto + onnx.helper.make_model)"
    lowest_ir = helper.find_min_ir_version_for(list(proto.opset_import))
    if proto.ir_version > lowest_ir:
        edits.append(f"ir_version {proto.ir_version} -> {lowest_ir} (the lowest that opset {opset} needs)")
        proto.ir_version = lowest_ir
    return proto, tool


def _check_supported(mx, sym, spec: ModelSpec, opset: int) -> None:
    """Name every op of the symbol that mx2onnx cannot translate at `opset`,
    rather than the first one it trips on."""
    from mxnet.onnx.mx2onnx._export_model import get_operator_support

    ops = [node["op"] for node in json.loads(sym.tojson())["nodes"] if node["op"] != "null"]
    supported = set(get_operator_support(max(opset, 12)))
    missing = sorted(set(ops) - supported)
    if missing:
        raise CaseError("convert", f"mx.onnx (mxnet {mx.__version__}, opset {opset}) has no ONNX translation for "
                                   f"the mxnet op(s) {missing} of model {spec.name!r}.\n"
                                   "Replace them in the model's hybrid_forward with supported ops "
                                   "(mx.onnx.get_operator_support() lists them), or export through another "
                                   "framework.")


def onnx_output_name(name: str) -> str:
    """The ONNX name mx2onnx gives a symbol output (MXNetGraph.get_outputs' rule)."""
    if name.endswith("_state_output"):
        return name[:-len("_state_output")] + "1"
    if name.endswith("_statecell_output"):
        return name[:-len("_statecell_output")] + "2"
    if name.endswith("_output"):
        return name[:-len("_output")]
    if re.search(".*_output[0-9]$", name):
        return name[:-len("_output0")] + name[-1]
    return name


def _output_order(sym, proto, spec: ModelSpec) -> list:
    """The graph's outputs in the symbol's output order (mx2onnx sorts them by name)."""
    expected = [onnx_output_name(n) for n in sym.list_outputs()]
    by_name = {v.name: v for v in proto.graph.output}
    if sorted(expected) != sorted(by_name):
        if len(by_name) == 1 and len(expected) == 1:
            return list(proto.graph.output)
        raise CaseError("convert", f"cannot match the ONNX outputs {sorted(by_name)} of model {spec.name!r} to the "
                                   f"symbol's outputs {sym.list_outputs()}")
    return [by_name[n] for n in expected]


def _rename(graph, values: Sequence, wanted: Sequence[str], kind: str) -> dict[str, str]:
    """Rename values[i] to wanted[i], one at a time (so that rename_values
    cannot pair them by sorted name); return {original name: new name}."""
    check_count(values, wanted, kind, "mx.onnx.export_model")
    original = [v.name for v in values]
    for value, new in zip(values, wanted):
        rename_values(graph, [value], [new], kind, "mx.onnx.export_model")
    return {old: v.name for old, v in zip(original, values) if old != v.name}


def _fits(shape: list[int], dynamic: list[int | None]) -> bool:
    return len(shape) == len(dynamic) and all(d is None or d == s for s, d in zip(shape, dynamic))


def _check_dynamic(proto, spec: ModelSpec, dynamic_shapes: list[list[int | None]]) -> None:
    """Every symbolic dim of the spec must be left free in the declared input shapes."""
    for value, inp, expected in zip(proto.graph.input, spec.inputs, dynamic_shapes):
        dims = value.type.tensor_type.shape.dim
        declared = [d.dim_value if d.HasField("dim_value") else None for d in dims]
        fixed = [axis for axis, (d, e) in enumerate(zip(declared, expected)) if e is None and d is not None]
        if len(declared) != len(expected) or fixed:
            raise CaseError("convert", f"the ONNX input {inp.name!r} of {spec.name!r} is declared {declared}, "
                                       f"but the spec's symbolic dims (axes {fixed}) must stay free: {expected}")


class _quiet:
    """mx2onnx logs every node at INFO level and warns about its own opset."""

    def __enter__(self):
        self._logger = logging.getLogger()
        self._level = self._logger.level
        self._logger.setLevel(logging.WARNING)
        self._warnings = warnings.catch_warnings()
        self._warnings.__enter__()
        warnings.simplefilter("ignore")
        return self

    def __exit__(self, *exc):
        self._warnings.__exit__(*exc)
        self._logger.setLevel(self._level)
        return False
