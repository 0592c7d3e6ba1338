"""Numerical-parity testing for converted deep-learning models.

The public API for declaring models lives here; everything else is reached
through the pytest plugin (`pytest --target=onnxruntime`) or `python -m harness`.
"""

from harness.registry import register_model
from harness.specs import InputSpec, ModelSpec, OutputSpec, Tolerance

__all__ = ["register_model", "InputSpec", "ModelSpec", "OutputSpec", "Tolerance"]
