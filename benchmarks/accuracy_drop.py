"""fp32 against int8 top-1 accuracy on a labelled set made here, through the
harness end to end (--parity-inputs, --parity-labels, --calibration).

The task: 3x32x32 images of 10 classes, procedurally drawn and seeded (no
download): five shapes (square, disk, horizontal bar, vertical bar, cross),
each filled or outlined, at a random place, size and colour, on a noisy
background. A small CNN is trained on them for a fixed number of steps
with torch (seeded), registered as a model, and each int8 case is the harness's own: the
torch -> ONNX export and the ONNX -> int8 QDQ hop (onnxruntime.quantization,
per-channel weights), calibrated on the feed generated from the input spec
(normal, then uniform) and on 64 training images (`--calibration=PATH`). The
record's `accuracy` holds both sides' top-1 on 500 held-out labelled images.

    .venv/bin/python benchmarks/accuracy_drop.py [--steps 800] [--examples 500]

Prints a markdown table; takes a few minutes on 2 cores (the 500 labelled
images run through both sides of each of the three cases).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SIZE = 32
CLASSES = 10
SHAPES = ("square", "disk", "hbar", "vbar", "cross")


def draw(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` images [count, 3, 32, 32] in 0..1 and their labels (shape index * 2 + outlined)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, count)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    images = rng.normal(0.35, 0.12, (count, 3, SIZE, SIZE))
    for image, label in zip(images, labels):
        shape, outlined = SHAPES[label // 2], bool(label % 2)
        r = rng.uniform(5, 10)
        cy, cx = rng.uniform(r + 1, SIZE - r - 1, 2)
        dy, dx = np.abs(yy - cy), np.abs(xx - cx)
        inside = {"square": np.maximum(dy, dx) <= r, "disk": np.hypot(dy, dx) <= r,
                  "hbar": (dy <= r / 3) & (dx <= r), "vbar": (dx <= r / 3) & (dy <= r),
                  "cross": ((dy <= r / 4) | (dx <= r / 4)) & (np.maximum(dy, dx) <= r)}
        mask = inside[shape]
        if outlined:   # the shape less its interior shrunk by two pixels
            shrunk = {"square": np.maximum(dy, dx) <= r - 2, "disk": np.hypot(dy, dx) <= r - 2,
                      "hbar": (dy <= r / 3 - 2) & (dx <= r - 2), "vbar": (dx <= r / 3 - 2) & (dy <= r - 2),
                      "cross": ((dy <= r / 4 - 2) | (dx <= r / 4 - 2)) & (np.maximum(dy, dx) <= r - 2)}
            mask = mask & ~shrunk[shape]
        image[:, mask] = rng.uniform(0.5, 1.0, (3, 1))
    return np.clip(images, 0, 1).astype(np.float32), labels.astype(np.int64)


def train(images: np.ndarray, labels: np.ndarray, steps: int):
    """A small CNN after `steps` Adam steps of 64 images: a count, not a time, so that the model is the same
    on every machine."""
    import torch

    torch.manual_seed(0)
    torch.set_num_threads(1)   # one thread's sums in one order: the same weights on every machine
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(32, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(), torch.nn.Linear(32, CLASSES))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    x, y = torch.from_numpy(images), torch.from_numpy(labels)
    order = torch.Generator().manual_seed(0)
    for _ in range(steps):
        batch = torch.randint(0, len(x), (64,), generator=order)
        loss = torch.nn.functional.cross_entropy(model(x[batch]), y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=800, help="training steps (about 30 s on one core)")
    parser.add_argument("--examples", type=int, default=500, help="labelled held-out images")
    args = parser.parse_args()

    from harness.cache import ArtifactCache
    from harness.calibration_settings import parse_calibration
    from harness.labels import parse_labels
    from harness.matrix import build_cases
    from harness.options import RunOptions
    from harness.registry import register_model
    from harness.runner import run_case
    from harness.specs import InputSpec, OutputSpec

    start = time.perf_counter()
    model = train(*draw(4000, seed=1), args.steps)
    train_s = time.perf_counter() - start
    register_model("shapes10", inputs=[InputSpec("image", ("N", 3, SIZE, SIZE), dims={"N": (1, 4)},
                                                 layout="NCHW", domain=(0.0, 1.0))],
                   outputs=[OutputSpec("logits", layout="NC", class_axis=-1)], torch=lambda: model)
    held_out, labels = draw(args.examples, seed=2)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        np.savez(folder / "held_out.npz", image=held_out[:, None])   # one example of batch 1 each
        np.save(folder / "labels.npy", labels)
        np.savez(folder / "calibration.npz", image=draw(64, seed=3)[0][:, None])
        print(f"trained {args.steps} steps in {train_s:.0f} s; {args.examples} held-out labelled images\n")
        print("| int8 calibrated on | fp32 top-1 | int8 top-1 | drop | case (labelled examples) |")
        print("| --- | --- | --- | --- | --- |")
        for name, calibration in (("generated: normal (the spec's default)", ""),
                                  ("generated: uniform", "uniform"),
                                  ("64 training images (--calibration=PATH)", str(folder / "calibration.npz"))):
            options = RunOptions(models=("shapes10",), sources=("torch",), targets=("onnxruntime",),
                                 devices=("cpu",), precisions=("int8",), calibration=parse_calibration(calibration), examples=5,
                                 parity_inputs=str(folder / "held_out.npz"),
                                 parity_labels=parse_labels(str(folder / "labels.npy")), cache_dir=folder / "cache",
                                 reports_dir=folder / "reports", localize="off")
            (case,) = build_cases(options)
            record = run_case(case, options, ArtifactCache(options.cache_dir)).to_json()
            accuracy, user = record.get("accuracy"), record.get("user_inputs")
            if accuracy is None:
                print(f"| {name} | - | - | - | {record['status']}: {record['message'].splitlines()[0][:120]} |")
                continue
            print(f"| {name} | {accuracy['original_top1']:.3f} | {accuracy['converted_top1']:.3f} | "
                  f"{accuracy['drop']:+.3f} | {record['status']} ({user['passed']} of {user['examples']} within "
                  "tolerance) |")


if __name__ == "__main__":
    main()
