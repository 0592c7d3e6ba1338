"""Numerical-parity testing for converted deep-learning models.

The public API for declaring models lives here; everything else is reached
through the pytest plugin (`pytest --target=onnxruntime`) or `python -m harness`.

`import_mxnet()` imports MXNet 1.9.1 with the compatibility shims the harness
itself needs (numpy >= 1.24 removed `np.bool`, onnx >= 1.19 removed
`onnx.mapping`): a user's model file that builds Gluon blocks calls it instead
of `import mxnet`, so that it works beside today's numpy and onnx.
"""

from typing import Any

from harness.registry import register_model
from harness.specs import InputSpec, ModelSpec, OutputSpec, Tolerance


def import_mxnet() -> Any:
    """`import mxnet`, with the harness's shims applied first (once); the shims
    applied are listed in every MXNet case's record (`mxnet_shims`)."""
    from harness.sources.mxnet import import_mxnet as shimmed_import

    return shimmed_import()


__all__ = ["register_model", "import_mxnet", "InputSpec", "ModelSpec", "OutputSpec", "Tolerance"]
