"""What every converter that writes ONNX does last: pass `onnx.checker`, and
read the opset the file is stamped with."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from harness.errors import CaseError, summarize_exception

# The lowest ONNX opset ONNX Runtime still runs; the highest is what the installed onnx knows.
LOWEST_OPSET = 7


def opset_problem(value: Any) -> str | None:
    """Why --opset VALUE is no ONNX opset the installed onnx knows and ONNX Runtime runs, or None."""
    import onnx

    highest = onnx.defs.onnx_opset_version()
    if value is None or (type(value) is int and LOWEST_OPSET <= value <= highest):
        return None
    return (f"--opset {value}: no such ONNX opset here; choose from {LOWEST_OPSET}..{highest} "
            f"(the highest is what onnx {onnx.__version__} knows)")


def opset_option() -> Any:
    """The `opset` field of the Options of every hop that writes ONNX: one --opset flag,
    older than the contract, whose value each of them is given (None: the hop's own default)."""
    return dataclasses.field(default=None, metadata={
        "flag": "--opset", "type": int, "check": opset_problem, "metavar": None, "unused": "converts to ONNX",
        "flag_help": "ONNX opset to export (default: 18 dynamo, 17 torchscript)"})


def main_opset(proto) -> int | None:
    """The default-domain opset an ONNX model is stamped with."""
    return max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=None)


def check_opset(proto, requested: int | None, tool: str, model_name: str, advice: str) -> None:
    """Refuse a file stamped with another default-domain opset than the one
    `--opset` asked for: an exporter that cannot write an opset may write
    another and say nothing (torch's dynamo exporter translates at 18 and keeps
    18 where its down-conversion fails). `requested` None: the converter's own
    default, which is recorded, not enforced. `advice`: what to try instead."""
    used = main_opset(proto)
    if requested is not None and used != requested:
        raise CaseError("convert", f"{tool} wrote opset {used} for model {model_name!r}, not the opset "
                                   f"{requested} asked for (--opset). {advice}")


def check_file(path: Path, model_name: str) -> None:
    """`onnx.checker` on the written file (by path, so models over 2 GiB work too)."""
    import onnx

    try:
        onnx.checker.check_model(str(path))
    except onnx.checker.ValidationError as error:   # by path, a file that does not parse raises it too
        raise CaseError("convert", f"the ONNX file converted for {model_name!r} fails onnx.checker: "
                                   f"{summarize_exception(error, 4)}") from None


def declared_input_dims(proto) -> dict[str, list[int | None]]:
    """Each graph input's declared dims: a size, or None where it is left open
    (a dim_param, or no dim value). Initializers listed as inputs are left out."""
    weights = {t.name for t in proto.graph.initializer}
    return {value.name: [d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim]
            for value in proto.graph.input if value.name not in weights}


def check_source(source: Path, refusal: str) -> None:
    """onnx.checker on an ONNX file a hop is about to convert, by path (its
    external data checked to lie in its own folder); `refusal` says what the
    file does and what is not done ("does not parse or fails onnx.checker, so
    it is not converted to OpenVINO")."""
    import onnx

    if not source.is_file():
        raise CaseError("convert", f"the ONNX file {source} does not exist or is not a file: export the model "
                                   "to ONNX first, or give the path of an .onnx file")
    try:
        onnx.checker.check_model(str(source))
    except onnx.checker.ValidationError as error:   # by path, a file that does not parse raises it too
        raise CaseError("convert", f"the ONNX file {source} {refusal}: {summarize_exception(error, 4)}\nExport it "
                                   "again, or fix what the checker names (external data must lie in the model's "
                                   "own folder)") from None
