"""ONNX file -> OpenVINO IR (model.xml + model.bin) with `openvino.convert_model`
and `openvino.save_model`.

Precision trap: `save_model` compresses float32 weights to float16 unless told
`compress_to_fp16=False` (the compiled model decompresses them, so nothing
says so at run time: the weights are simply off by up to 5e-4 relative, and
the zoo's CNN, MLP and transformer block by 4e-4 to 6e-4 of max|output|, 32
to 41 times the float32 tolerance). This
hop saves float32 weights and checks the file it wrote: no float constant of
the saved IR may be narrower than in the converted model.

The source is checked first as every ONNX the harness writes is
(`onnx.checker`, by path: a file that does not parse, that fails the checker, or
whose external data lies outside its own folder is refused), and the IR must
keep the ONNX's input names and each of its open dims open. OpenVINO keeps
ONNX's layouts.

openvino is imported inside the functions, never at module level.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from harness.converters.onnx_checks import check_source, declared_input_dims
from harness.errors import CaseError, summarize_exception
from harness.model_file import file_sha256
from harness.specs import ModelSpec

NAME = "openvino.convert_model"
READS = ("onnx",)
WRITES = "openvino-ir"
REVISION = 1
FILENAME = "model.xml"
OPTIONS = ()
COMPRESS_TO_FP16 = False


def versions() -> dict[str, str]:
    import onnx
    import openvino as ov

    return {"openvino": ov.__version__, "onnx": onnx.__version__}


def missing() -> str | None:
    try:
        import openvino  # noqa: F401
    except ImportError as error:
        return f"openvino is not installed ({error}); pip install openvino"
    return None


def convert(source: Path, spec: ModelSpec, example: Sequence[np.ndarray], out_dir: Path, *,
            layouts: tuple[dict[str, str | None], dict[str, str | None]]) -> dict[str, Any]:
    """Convert the ONNX file `source` to `out_dir/model.xml` (+ model.bin);
    return the provenance. `example` is not used: the IR takes the ONNX's own
    declared shapes, dynamic dims included."""
    import onnx
    import openvino as ov

    source = Path(source)
    check_source(source, "does not parse or fails onnx.checker, so it is not converted to OpenVINO")
    try:
        model = ov.convert_model(str(source))
    except Exception as error:   # OpenVINO's frontends raise their own types (OpConversionFailure, GeneralFailure)
        raise CaseError("convert", f"openvino.convert_model could not convert {source} for model {spec.name!r}: "
                                   f"{summarize_exception(error, 6)}\nAn op OpenVINO cannot convert is named above: "
                                   "replace it, or run the ONNX file on another target") from None
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    path = Path(out_dir) / FILENAME
    ov.save_model(model, str(path), compress_to_fp16=COMPRESS_TO_FP16)
    # Read back what was written: the weights' element types in the file, not the
    # option passed, say whether they were compressed.
    saved = ov.Core().read_model(str(path))
    weight_types = check_saved_weights(model, saved, path)
    _check_inputs(declared_input_dims(onnx.load(str(source), load_external_data=False)), saved, path)
    return {
        "converter": NAME,
        "tool": "openvino.convert_model + openvino.save_model",
        "tool_version": ov.__version__,
        "source_sha256": file_sha256(source),
        # save_model's default (True) would store the weights as float16
        "compress_to_fp16": COMPRESS_TO_FP16,
        "weight_element_types": weight_types,
        "tensor_names": {"inputs": [sorted(p.get_names()) for p in saved.inputs],
                         "outputs": [sorted(p.get_names()) for p in saved.outputs]},
        # OpenVINO keeps the ONNX's layouts.
        "input_layouts": dict(layouts[0]),
        "output_layouts": dict(layouts[1]),
        "versions": versions(),
    }


def _float_constants(model) -> dict[str, int]:
    """How many float constants of each element type the model holds."""
    counts: dict[str, int] = {}
    for op in model.get_ops():
        if op.get_type_name() == "Constant" and op.get_output_element_type(0).is_real():
            name = op.get_output_element_type(0).get_type_name()
            counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items()))


def check_saved_weights(converted, saved, path: Path) -> dict[str, int]:
    """The saved IR's float constants by element type, refused when any is
    narrower than in the converted model (weights compressed on saving)."""
    before, after = _float_constants(converted), _float_constants(saved)
    if after.get("f16", 0) > before.get("f16", 0):
        raise CaseError("convert", f"the OpenVINO IR {path} holds {after.get('f16', 0)} float16 constants where the "
                                   f"converted model had {before.get('f16', 0)} ({before} -> {after}): its weights "
                                   "were compressed to float16 on saving. This is a harness bug: report it")
    return after


def _check_inputs(declared: dict[str, list[int | None]], saved, path: Path) -> None:
    """The IR takes the ONNX's inputs, each with its fixed dims and its open dims kept open."""
    shapes = {name: port.get_partial_shape() for port in saved.inputs for name in port.get_names()}
    for name, dims in declared.items():
        shape = shapes.get(name)
        if shape is None:
            raise CaseError("convert", f"the OpenVINO IR {path} has no input {name!r}, which the ONNX file "
                                       f"declares (its inputs: {sorted(shapes)})")
        got = None if shape.rank.is_dynamic else [d.get_length() if d.is_static else None for d in shape]
        if got is not None and got != dims:
            raise CaseError("convert", f"the OpenVINO IR {path} takes input {name!r} with shape {shape}, not the "
                                       f"ONNX's {['?' if d is None else d for d in dims]}: it would not accept "
                                       "every shape the ONNX file does")
