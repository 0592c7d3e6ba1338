"""torch module -> OpenVINO IR directly, with `openvino.convert_model(module,
example_input=...)`: the second path to OpenVINO, beside torch -> ONNX ->
OpenVINO, and the one OpenVINO's documentation leads PyTorch users to.

The spec's symbolic dims are declared open (`input=` partial shapes), so the
IR takes every shape the spec allows; the IR's inputs and outputs are renamed
to the spec's names. It is saved with `compress_to_fp16=False` and read back
(the same precision trap as the ONNX hop: see `onnx_openvino`). OpenVINO keeps
torch's layouts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from harness.converters.onnx_openvino import COMPRESS_TO_FP16, check_saved_weights
from harness.errors import CaseError, summarize_exception
from harness.specs import ModelSpec

NAME = "openvino.convert_model(torch)"
READS = ("torch",)
WRITES = "openvino-ir"
REVISION = 1
FILENAME = "model.xml"
OPTIONS = ()


def versions() -> dict[str, str]:
    import openvino as ov
    import torch

    return {"openvino": ov.__version__, "torch": torch.__version__}


def convert(model: Any, spec: ModelSpec, example: Sequence[np.ndarray], out_dir: Path, *,
            layouts: tuple[dict[str, str | None], dict[str, str | None]]) -> dict[str, Any]:
    """Convert the torch module (bound to the spec's inputs, in order) to
    `out_dir/model.xml`; return the provenance."""
    import openvino as ov
    import torch

    shapes = [ov.PartialShape([-1 if isinstance(d, str) else d for d in i.shape]) for i in spec.inputs]
    try:
        with torch.inference_mode():
            converted = ov.convert_model(model, example_input=tuple(torch.from_numpy(x) for x in example),
                                         input=shapes)
    except Exception as error:   # OpenVINO's frontend traces the user's forward(): any type
        raise CaseError("convert", f"openvino.convert_model could not convert torch model {spec.name!r}: "
                                   f"{summarize_exception(error, 6)}\nThe path through ONNX (the default) may "
                                   "still work: --path=onnx") from None
    if len(converted.inputs) != len(spec.inputs) or len(converted.outputs) != len(spec.outputs):
        raise CaseError("convert", f"openvino.convert_model made {len(converted.inputs)} input(s) and "
                                   f"{len(converted.outputs)} output(s) of torch model {spec.name!r}, whose spec has "
                                   f"{len(spec.inputs)} and {len(spec.outputs)}")
    for port, item in [*zip(converted.inputs, spec.inputs), *zip(converted.outputs, spec.outputs)]:
        port.get_tensor().set_names({item.name})
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    path = Path(out_dir) / FILENAME
    ov.save_model(converted, str(path), compress_to_fp16=COMPRESS_TO_FP16)
    weight_types = check_saved_weights(converted, ov.Core().read_model(str(path)), path)
    return {
        "converter": NAME,
        "tool": "openvino.convert_model(torch module, example_input) + openvino.save_model",
        "tool_version": ov.__version__,
        "compress_to_fp16": COMPRESS_TO_FP16,
        "weight_element_types": weight_types,
        "input_shapes": {i.name: str(s) for i, s in zip(spec.inputs, shapes)},
        "input_layouts": dict(layouts[0]),
        "output_layouts": dict(layouts[1]),
        "versions": versions(),
    }
