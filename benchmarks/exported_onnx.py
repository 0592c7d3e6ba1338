"""ONNX files as users export them, through the harness with default options.

Four models built from code (seeded, nothing downloaded) and exported the way a
user would, with dynamic batch (and sequence) axes:

- torch_cnn: conv-bn-relu x2, max-pool, linear (eval mode), torch.onnx.export
  with the dynamo exporter (the harness's own torch->onnx default);
- torch_bert: transformers' BertModel from a tiny random BertConfig (hidden 32,
  2 layers, 2 heads), input_ids and attention_mask, the same exporter;
- keras_cnn: a functional Keras CNN, tf2onnx.convert.from_keras;
- keras_transformer: token ids through an Embedding, MultiHeadAttention,
  LayerNormalization, Dense, tf2onnx.convert.from_keras.

Each file is then run as `pytest --model=FILE --target=onnxruntime,openvino
--device=cpu` would run it, in process (`harness.matrix.build_cases`,
`harness.runner.run_case`), with default options only (the symbolic dims
bounded by default, each case warning of them); then the same file with one
weight scaled by 1.05 as the --converted file, and for the Keras transformer
a file with embedding rows 5..45 scaled by 1.05 (rows that ids drawn from
-4..4 never reach). Every case's status, error ratio, message and wall time
is printed.
tests/test_exported_onnx.py builds the same files.

    .venv/bin/python benchmarks/exported_onnx.py [--out DIR] [--models torch_cnn,keras_cnn]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

SEED = 0
BERT_VOCAB = 100
KERAS_VOCAB = 50
TARGETS = ("onnxruntime", "openvino")


def torch_cnn(out: Path) -> Path:
    """A small torch CNN, exported with a dynamic batch axis."""
    import torch

    torch.manual_seed(SEED)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, 10))
    with torch.no_grad():   # running statistics that are not the identity, as a trained model's are
        for layer in model:
            if isinstance(layer, torch.nn.BatchNorm2d):
                layer.running_mean.uniform_(-0.5, 0.5)
                layer.running_var.uniform_(0.5, 2.0)
    model.eval()
    path = out / "torch_cnn.onnx"
    batch = torch.export.Dim("batch", min=1, max=64)
    torch.onnx.export(model, (torch.randn(2, 3, 32, 32),), str(path), dynamo=True, input_names=["image"],
                      output_names=["logits"], dynamic_shapes=({0: batch},), verbose=False)
    return path


def torch_bert(out: Path) -> Path:
    """A tiny random BertModel taking input_ids and attention_mask, dynamic batch and sequence."""
    import torch
    import transformers

    torch.manual_seed(SEED)
    config = transformers.BertConfig(vocab_size=BERT_VOCAB, hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
    model = transformers.BertModel(config).eval()
    ids = torch.randint(0, BERT_VOCAB, (2, 7))
    mask = torch.ones(2, 7, dtype=torch.int64)
    batch, sequence = torch.export.Dim("batch", min=1, max=16), torch.export.Dim("sequence", min=2, max=64)
    path = out / "torch_bert.onnx"
    torch.onnx.export(model, (ids, mask), str(path), dynamo=True, input_names=["input_ids", "attention_mask"],
                      output_names=["last_hidden_state", "pooler_output"],
                      dynamic_shapes={"input_ids": {0: batch, 1: sequence}, "attention_mask": {0: batch, 1: sequence}},
                      verbose=False)
    return path


def _from_keras(model: Any, signature: tuple, path: Path) -> Path:
    import tf2onnx

    tf2onnx.convert.from_keras(model, input_signature=signature, opset=17, output_path=str(path))
    return path


def keras_cnn(out: Path) -> Path:
    """A functional Keras CNN (NHWC, as Keras holds it), converted by tf2onnx."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(SEED)
    image = keras.Input((32, 32, 3), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same")(image)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(16, 3, padding="same")(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    logits = keras.layers.Dense(10, name="logits")(x)
    model = keras.Model(image, logits)
    signature = (tf.TensorSpec((None, 32, 32, 3), tf.float32, name="image"),)
    return _from_keras(model, signature, out / "keras_cnn.onnx")


def keras_transformer(out: Path) -> Path:
    """Token ids -> Embedding -> self-attention + LayerNorm -> Dense + LayerNorm, converted by tf2onnx."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(SEED)
    ids = keras.Input((None,), dtype="int32", name="input_ids")
    x = keras.layers.Embedding(KERAS_VOCAB, 32)(ids)
    attended = keras.layers.MultiHeadAttention(num_heads=2, key_dim=16)(x, x)
    x = keras.layers.LayerNormalization()(x + attended)
    hidden = keras.layers.Dense(64, activation="relu")(x)
    x = keras.layers.LayerNormalization()(x + keras.layers.Dense(32)(hidden))
    model = keras.Model(ids, x)
    signature = (tf.TensorSpec((None, None), tf.int32, name="input_ids"),)
    return _from_keras(model, signature, out / "keras_transformer.onnx")


BUILDERS: dict[str, Callable[[Path], Path]] = {
    "torch_cnn": torch_cnn, "torch_bert": torch_bert,
    "keras_cnn": keras_cnn, "keras_transformer": keras_transformer,
}


def scaled_weight_twin(path: Path, out: Path, factor: float = 1.05) -> Path:
    """A copy of the ONNX file at `path` with the weight initializer of its last
    Conv, MatMul or Gemm node scaled by `factor`: a conversion that got one
    layer's weights wrong, handed over as the user's converted file. The last,
    because in a tiny random BERT the first (the query projection) moves the
    outputs by 4e-6 of their magnitude: its attention scores are near zero and
    the softmax near uniform whatever their scale, and float32 tolerance is right
    to pass that."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    initializers = {t.name: t for t in model.graph.initializer}
    weight = next(initializers[name] for node in reversed(model.graph.node)
                  if node.op_type in ("Conv", "MatMul", "Gemm")
                  for name in node.input if name in initializers and len(initializers[name].dims) >= 2)
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * np.float32(factor), weight.name))
    onnx.save(model, str(out))
    return out


def embedding_rows_twin(path: Path, out: Path, rows: slice = slice(5, 46), factor: float = 1.05) -> Path:
    """A copy of the ONNX file at `path` with `rows` of its first embedding
    table (the 2-D initializer a Gather reads rows of) scaled by `factor`."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    initializers = {t.name: t for t in model.graph.initializer}
    table = next(initializers[node.input[0]] for node in model.graph.node
                 if node.op_type == "Gather" and node.input[0] in initializers
                 and len(initializers[node.input[0]].dims) == 2)
    values = numpy_helper.to_array(table).copy()
    values[rows] *= np.float32(factor)
    table.CopyFrom(numpy_helper.from_array(values, table.name))
    onnx.save(model, str(out))
    return out


def run_file(model: Path, out: Path, converted: Path | None = None,
             targets: tuple[str, ...] = TARGETS) -> list[dict[str, Any]]:
    """Every case's record, as `pytest --model=MODEL --target=... --device=cpu
    [--converted ...]` makes them, in process."""
    from harness.cache import ArtifactCache
    from harness.matrix import build_cases
    from harness.options import RunOptions
    from harness.profiles import load_default_profile
    from harness.runner import run_case

    load_default_profile()   # the plugin's default budget (the `dev` profile)
    options = RunOptions(models=(str(model),), targets=targets, devices=("cpu",),
                         converted=converted,
                         cache_dir=out / "cache", reports_dir=out / "reports")
    cache = ArtifactCache(options.cache_dir)
    return [run_case(case, options, cache).to_json() for case in build_cases(options)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/exported-onnx"))
    parser.add_argument("--models", default=",".join(BUILDERS))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.models.split(","):
        started = time.perf_counter()
        path = BUILDERS[name](args.out)
        built = time.perf_counter()
        print(f"{name}: exported in {built - started:.1f} s")
        records = run_file(path, args.out / name)
        for warning in dict.fromkeys(w["message"] for r in records for w in r.get("warnings", ())):
            print(f"  warning: {warning}")
        ran = time.perf_counter()
        twin = run_file(path, args.out / f"{name}-twin",
                        converted=scaled_weight_twin(path, args.out / f"{name}-twin.onnx"))
        if name == "keras_transformer":
            twin += run_file(path, args.out / f"{name}-rows-twin",
                             converted=embedding_rows_twin(path, args.out / f"{name}-rows-twin.onnx"))
        for record in records + twin:
            ratio = record.get("worst_error_ratio")
            print(f"  {record['id']:<48} {record['status']:<12} {'-' if ratio is None else f'{ratio:.3g}':>8} "
                  f"{record.get('duration_s') or 0:6.2f} s  {(record.get('message') or '').splitlines()[0][:110]}")
        print(f"  run: {ran - built:.1f} s, planted twins: {time.perf_counter() - ran:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
