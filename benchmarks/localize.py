"""What a failure's localization costs beside the case it explains, and how
much of a large graph the source side maps, on the zoo's largest models.

For each (model, source): the harness converts the model to ONNX as a case
does; the middle weight of the file (by order of its initializers of rank 2 or
more) is scaled by 1.5; the case is run on that file with --converted at the
ci profile, localization on. The table gives the case's own time (preparation
and examples, up to the localization: a --converted case converts nothing),
the conversion a matrix case would add (measured cold), the localization's
time, its ratio to each, the
ONNX nodes, the share whose output had a source value (converter mode), and
whether the node named is the one that reads the planted weight.

    .venv/bin/python benchmarks/localize.py [--models transformer,...] [--json benchmarks/localize.json]

Takes ~5 minutes on 2 cores (the real tier builds transformers and
keras.applications models from code, seeded; nothing is downloaded).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# (model, source): the largest of the core zoo, then of the real tier
MODELS = [("transformer", "torch"), ("mobilenet_v2", "keras"), ("hf_bert", "torch"), ("hf_gpt2", "torch"),
          ("hf_vit", "torch"), ("hf_levit", "torch"), ("resnet50", "keras"), ("convnext_tiny", "keras")]


def planted_copy(source: Path, out: Path) -> str:
    """`source` with its middle weight scaled by 1.5, at `out`; the name of
    the node that reads it."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(source))
    weights = [t for t in model.graph.initializer if len(t.dims) >= 2 and t.data_type == onnx.TensorProto.FLOAT]
    target = weights[len(weights) // 2]
    target.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(target) * np.float32(1.5), target.name))
    onnx.save(model, str(out))
    return next(n.name for n in model.graph.node if target.name in n.input)


def measure(model: str, source: str, folder: Path) -> dict:
    from harness.cache import ArtifactCache
    from harness.engine import prepare_case
    from harness.matrix import build_cases
    from harness.options import RunOptions
    from harness.runner import run_case

    options = RunOptions(models=(model,), sources=(source,), targets=("onnxruntime",), devices=("cpu",),
                         reports_dir=folder / "reports", tiers=("core", "real"))
    cases = [c for c in build_cases(options) if not c.skip and not c.error and c.variant in (None, "nhwc")]
    if not cases:
        return {"model": model, "source": source, "status": "no case"}
    # converted into a cache of its own, cold: what the conversion costs a case that makes it
    prepared = prepare_case(cases[0], options, ArtifactCache(folder / f"cache-{model}", True))
    convert_s = prepared.timings["convert_s"]
    exported = [f for f, _, _ in prepared.files if f.suffix == ".onnx"][-1]
    bad = folder / f"{model}-planted.onnx"
    reader = planted_copy(exported, bad)
    options = replace(options, converted=bad, cache_dir=folder / f"cache-{model}")
    case = [c for c in build_cases(options) if not c.skip and not c.error][0]
    record = run_case(case, options, ArtifactCache(options.cache_dir, True)).to_json()
    localization = record.get("localization") or {}
    first = localization.get("first") or {}
    row = {"model": model, "source": source, "case": case.id, "status": record["status"],
           "case_s": localization.get("case_seconds"), "localize_s": localization.get("seconds"),
           "nodes": localization.get("nodes"), "compared": localization.get("compared"),
           "mapped_nodes": localization.get("mapped_nodes"), "mode": localization.get("mode"),
           "localization": localization.get("status"), "named": first.get("node"), "layer": first.get("layer"),
           "planted_reader": reader, "named_the_reader": first.get("node") == reader
           or any(r["node"] == reader for r in first.get("region", []))}
    if row["case_s"] and row["localize_s"] is not None:
        row["ratio"] = row["localize_s"] / row["case_s"]
        # the same case as the matrix runs it, converting the model (cold)
        row["convert_s"] = round(convert_s, 3)
        row["ratio_with_conversion"] = row["localize_s"] / (row["case_s"] + convert_s)
    if row["nodes"] and row["mapped_nodes"] is not None:
        row["mapped_share"] = row["mapped_nodes"] / row["nodes"]
    return row


def table(rows: list[dict]) -> str:
    lines = ["| model (source) | ONNX nodes | mapped from the source | case s (its conversion s) | localization s | "
             "ratio (with the conversion) | named the planted node |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        if "case_s" not in r:
            lines.append(f"| {r['model']} ({r['source']}) | {r['status']} | | | | | |")
            continue
        share = f"{r['mapped_nodes']} ({r['mapped_share']:.0%})" if "mapped_share" in r else "-"
        lines.append(f"| {r['model']} ({r['source']}) | {r['nodes']} | {share} | {r['case_s']:.2f} "
                     f"({r.get('convert_s', float('nan')):.2f}) | {r['localize_s']:.2f} | "
                     f"{r.get('ratio', float('nan')):.2f} ({r.get('ratio_with_conversion', float('nan')):.2f}) | "
                     f"{'yes' if r['named_the_reader'] else 'no: ' + str(r['named'])} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default=",".join(m for m, _ in MODELS))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    from hypothesis import settings

    from harness.profiles import register_profiles

    register_profiles()
    settings.load_profile("ci")
    wanted = args.models.split(",")
    rows = []
    folder = Path(tempfile.mkdtemp(prefix="parity-localize-bench-"))
    try:
        for model, source in MODELS:
            if model in wanted:
                try:
                    rows.append(measure(model, source, folder))
                except Exception as error:   # one model that cannot be measured does not end the table
                    rows.append({"model": model, "source": source, "status": f"error: {error}"[:200]})
                print(json.dumps(rows[-1]), flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
