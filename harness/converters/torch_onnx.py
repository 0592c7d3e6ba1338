"""torch -> ONNX with `torch.onnx.export`: the dynamo exporter by default, the
TorchScript-based one on request. Symbolic dims of the spec become dynamic axes
(with the spec's bounds, for the dynamo exporter); the file must pass
`onnx.checker`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import inspect
import logging
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from harness.converters.onnx_checks import check_file, check_opset, declared_input_dims, main_opset, opset_option
from harness.errors import CaseError, summarize_exception
from harness.shape_check import input_findings
from harness.specs import ModelSpec

NAME = "torch->onnx"
READS = ("torch",)
WRITES = "onnx"
# The pip distributions whose versions every record carries, where installed (backends.distributions).
DISTRIBUTIONS = ("onnxscript",)   # the dynamo exporter's
# Bumped whenever this module changes what it writes, so that cached artifacts
# (and their provenance) from an older harness are not reused.
# 5: a file at another opset than --opset asked for is refused, not cached.
REVISION = 5
# The ONNX protobuf limit is 2 GiB; below this the weights stay inside the file
# rather than in a "model.onnx.data" sidecar that would have to travel with it.
EXTERNAL_DATA_ABOVE_BYTES = 1 << 30
DEFAULT_OPSET = {"dynamo": 18, "torchscript": 17}
EXPORTERS = tuple(DEFAULT_OPSET)
OPTIONS = ()
FILENAME = "model.onnx"


@dataclasses.dataclass
class Options:
    """torch.onnx.export's settings: flags older than the contract, named and described as they always were."""

    exporter: str = dataclasses.field(default="dynamo", metadata={
        "flag": "--exporter", "choices": EXPORTERS, "metavar": f"{{{','.join(EXPORTERS)}}}",
        "unused": "exports torch to ONNX", "flag_help": "torch.onnx exporter (default: dynamo)"})
    opset: int | None = opset_option()


def versions() -> dict[str, str]:
    import onnx
    import torch

    found = {"torch": torch.__version__, "onnx": onnx.__version__}
    # The dynamo exporter translates through onnxscript: its version changes the result. Read from the
    # installed package's metadata (the same string as onnxscript.__version__), not by importing it: the
    # cache key is computed on every warm run, where nothing is exported and the import cost 0.6 s.
    try:
        found["onnxscript"] = importlib.metadata.version("onnxscript")
    except importlib.metadata.PackageNotFoundError:
        pass
    return found


def convert(model: Any, spec: ModelSpec, example: Sequence[np.ndarray], out_dir: Path, *,
            layouts: tuple[dict, dict], exporter: str = "dynamo", opset: int | None = None) -> dict[str, Any]:
    """Export `model` (on the CPU) to `out_dir/model.onnx`; return the provenance.

    layouts: (input layouts, output layouts) of the model as torch holds it;
    the exported file keeps them.
    example: inputs in the spec's order whose symbolic dims are >= 2 and
    pairwise distinct, so that the exporter does not specialize them.
    """
    import onnx
    import torch

    requested = exporter
    if isinstance(model, torch.jit.ScriptModule):
        exporter = "torchscript"  # torch.export cannot trace a ScriptModule; the TorchScript-based exporter can
    asked_opset, opset = opset, opset or DEFAULT_OPSET[exporter]
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    path = Path(out_dir) / FILENAME
    args = tuple(torch.from_numpy(np.asarray(x, order="C")) for x in example)
    input_names = [i.name for i in spec.inputs]
    output_names = [o.name for o in spec.outputs]
    dynamic_axes = {i.name: {axis: d for axis, d in enumerate(i.shape) if isinstance(d, str)} for i in spec.inputs}
    kwargs: dict[str, Any] = dict(input_names=input_names, output_names=output_names, opset_version=opset)
    guards = contextlib.nullcontext()
    if exporter == "dynamo":
        dims = {name: torch.export.Dim(name, min=low, max=high) for name, (low, high) in spec.dim_bounds.items()}
        shapes = tuple({axis: dims[d] for axis, d in axes.items()} or None for axes in dynamic_axes.values())
        # torch.export matches dynamic_shapes to forward's parameters: a forward(*inputs)
        # (the harness's SpecBound among them) takes them all as one parameter.
        kwargs["dynamic_shapes"] = (shapes,) if takes_varargs(model) else shapes
        size = sum(p.numel() * p.element_size() for p in model.parameters())
        kwargs["external_data"] = size > EXTERNAL_DATA_ABOVE_BYTES
        guards = rnn_export_guards()
    else:
        kwargs["dynamic_axes"] = {name: axes for name, axes in dynamic_axes.items() if axes}
    try:
        with warnings.catch_warnings(), guards, quiet_export_logs():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, args, str(path), dynamo=(exporter == "dynamo"), verbose=False, **kwargs)
    except Exception as error:   # the exporters run the user's forward() and raise any type
        other = "torchscript" if exporter == "dynamo" else "dynamo"
        raise CaseError("convert", f"torch.onnx.export ({exporter} exporter, opset {opset}) failed for model "
                                   f"{spec.name!r}: {summarize_exception(error, 8)}\n"
                                   f"Try --exporter={other}, another --opset, or simplify the model's forward().") from None
    check_file(path, spec.name)
    written = onnx.load(str(path), load_external_data=False)
    check_opset(written, asked_opset, f"torch.onnx.export ({exporter} exporter)", spec.name, _OPSET_ADVICE[exporter])
    _check_dims_kept(written, spec, layouts[0], exporter)
    return {
        "converter": NAME,
        "tool": "torch.onnx.export",
        "exporter": exporter,
        "exporter_requested": requested,
        "opset_requested": opset,
        "opset": main_opset(written),
        "ir_version": written.ir_version,
        "dynamic_axes": {k: {str(a): d for a, d in v.items()} for k, v in dynamic_axes.items()},
        # torch.onnx.export keeps the module's own layouts.
        "input_layouts": dict(layouts[0]),
        "output_layouts": dict(layouts[1]),
        "versions": versions(),
    }


_OPSET_ADVICE = {
    "dynamo": f"The dynamo exporter translates at opset {DEFAULT_OPSET['dynamo']} and converts down only where onnx's "
              f"version converter can: ask for {DEFAULT_OPSET['dynamo']} or above, or use --exporter=torchscript for "
              "a lower opset.",
    "torchscript": "Ask for another --opset, or use --exporter=dynamo.",
}


def _check_dims_kept(proto, spec: ModelSpec, input_layouts: dict, exporter: str) -> None:
    """Refuse a file whose inputs fix a dim that the spec lets vary: the export
    specialized it to the example's size (the dynamo exporter does so without
    an error where a model turns a size into a Python number, e.g. a padding
    computed from the input's height), and every other size would be refused."""
    fixed = [f for f in input_findings(spec.inputs, declared_input_dims(proto), input_layouts, "the exported file")
             if f.kind == "fixed_dim"]
    if fixed:
        dims = ", ".join(f"{f.dim}={f.value} (input {f.tensor!r}, spec {spec.dim_bounds[f.dim][0]}.."
                         f"{spec.dim_bounds[f.dim][1]})" for f in fixed)
        other = "torchscript" if exporter == "dynamo" else "dynamo"
        raise CaseError("convert", f"torch.onnx.export ({exporter} exporter) fixed {dims} to the example's sizes, "
                                   f"although the spec lets them vary: the model's code turns those sizes into "
                                   f"Python numbers (a padding or a reshape computed from the input's shape) and the "
                                   f"export specialized them; the file would refuse every other size. Try "
                                   f"--exporter={other}, or declare those dims fixed in the spec.")


@contextlib.contextmanager
def quiet_export_logs():
    """The dynamo exporter logs dozens of empty DEBUG records to "torch.__trace",
    warns, per export, that torchvision's ops are not registered, and torch.export
    logs "always_classified is unsupported" as an ERROR for models that export
    fine: none says anything of the user's model (an export that fails raises,
    and its error is the case's), and pytest would show them all under a failed
    case. They are kept from propagating while the export runs."""
    loggers = [logging.getLogger(name) for name in ("torch.__trace", "torch.onnx._internal.exporter._registration",
                                                    "torch.export._trace")]
    saved = [logger.propagate for logger in loggers]
    for logger in loggers:
        logger.propagate = False
    try:
        yield
    finally:
        for logger, propagate in zip(loggers, saved):
            logger.propagate = propagate


def takes_varargs(model: Any) -> bool:
    try:
        parameters = inspect.signature(model.forward).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.kind == p.VAR_POSITIONAL for p in parameters)


def _clear_rnn_dispatch_caches() -> None:
    import torch

    for packet in (torch.ops.aten.lstm, torch.ops.aten.gru):
        for overload in packet.overloads():
            cache = getattr(getattr(packet, overload), "_dispatch_cache", None)
            if cache is not None:
                cache.clear()


@contextlib.contextmanager
def rnn_export_guards():
    """Work around two torch 2.13 dynamo-exporter bugs with LSTM/GRU (both seen
    here, both silent):
    - torch's while_loop LSTM/GRU decompositions are active only while the graph
      is captured, not while it is decomposed afterwards, so the example's T is
      baked into the declared output shape ([N, 3, 20] instead of [N, T, 20]);
      keeping them active for the whole call avoids it;
    - that swap edits the ops' kernels without clearing their dispatch caches, so
      the next LSTM/GRU export in the same process comes out with T fixed on the
      inputs too; clearing the caches around each export keeps exports independent.
    Uses private torch API: where it is missing the export runs unguarded.
    tests/test_zoo.py keeps a canary that says when torch no longer needs this."""
    try:
        from torch.export._patches import (register_gru_while_loop_decomposition,
                                           register_lstm_while_loop_decomposition)
    except ImportError:
        yield
        return
    _clear_rnn_dispatch_caches()
    try:
        with register_lstm_while_loop_decomposition(), register_gru_while_loop_decomposition():
            _clear_rnn_dispatch_caches()  # so that the new kernels are the ones dispatched to
            yield
    finally:
        _clear_rnn_dispatch_caches()
