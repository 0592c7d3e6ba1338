"""Can a failure by the precision floor be localized by holding each tensor to FLOOR_MULTIPLE x the
floor's error on it? Measured: no (harness/localize/locate.py's floor_localization uses the Q/DQ
pairs instead).

For each int8 build of benchmarks/precision_floor.py (six correct recipes, the planted bugs) of the
zoo's cnn, transformer and two_outputs: each tensor of the fp32 export that the build and the
floor (the harness's own build) both name, its RMS error against the fp32 file over 10 drawn
examples, over the floor's; the largest such multiple, and the first tensor in graph order past 3x.

Measured (2026-12, `python benchmarks/floor_per_tensor.py`, ~2 minutes here): the correct asymmetric
recipes reach 71x the floor's error at the CNN's `relu` and 33x at two_outputs' (the tensor of that
name means another thing in their files: fewer names are shared, 3 of 5 and 4 of 5), while an
activation scale x4 stays at 2.10x on the transformer and 1.92x on two_outputs, and a wrong
per-channel axis at 2.11x on two_outputs. No per-tensor multiple names the bugs without naming
correct builds; each Q/DQ pair's own limits do (harness/qdq_check.py).
"""

from __future__ import annotations

import sys
from pathlib import Path
from tempfile import TemporaryDirectory

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import precision_floor as pf  # noqa: E402

MODELS = ("cnn", "transformer", "two_outputs")
DRAWS = 10
MULTIPLE = 3.0   # harness/precision_floor.py's FLOOR_MULTIPLE, as a per-tensor rule would apply it


def tensor_rms_errors(path: Path, fp32: list[dict[str, np.ndarray]], order: list[str],
                      draws: list[dict[str, np.ndarray]]) -> dict[str, float]:
    """Each fp32 tensor that the file at `path` names: its RMS error against the fp32 run, pooled over `draws`."""
    import onnx

    named = {o for n in onnx.load(str(path)).graph.node for o in n.output}
    shared = [t for t in order if t in named]
    runs = pf.run_file(path, draws, shared)
    errors = {}
    for tensor in shared:
        squares = [np.mean((got[tensor].astype(np.float64) - ref[tensor].astype(np.float64)) ** 2)
                   for ref, got in zip(fp32, runs) if tensor in ref and tensor in got]
        if squares:
            errors[tensor] = float(np.sqrt(np.mean(squares)))
    return errors


def main() -> None:
    import onnx

    with TemporaryDirectory() as scratch:
        for spec in MODELS:
            folder = Path(scratch) / spec
            model = pf.export_zoo_model(spec, folder / "fp32")
            floor, correct, bugs = pf.int8_builds(model, spec, folder / "builds")
            order = [o for n in onnx.load(str(model)).graph.node for o in n.output if o]
            draws = pf.drawn_inputs(spec, DRAWS)
            fp32 = pf.run_file(model, draws, order)
            base = tensor_rms_errors(floor, fp32, order, draws)
            print(f"{spec}: {len(order)} fp32 tensors, {len(base)} named by the floor, {DRAWS} draws")
            for kind, builds in (("correct", correct), ("bug", bugs)):
                for name, path in builds.items():
                    errors = tensor_rms_errors(path, fp32, order, draws)
                    multiples = {t: e / base[t] for t, e in errors.items() if base.get(t, 0) > 0}
                    worst = max(multiples, key=multiples.get)
                    first = next((t for t in order if multiples.get(t, 0) > MULTIPLE), None)
                    print(f"  {kind:8} {name:30} shared {len(multiples):3}  largest {multiples[worst]:7.2f}x at "
                          f"{worst!r:24}  first past {MULTIPLE:g}x: {first!r}")


if __name__ == "__main__":
    main()
