"""A markdown table from one or more parity.json files, one row per case that
ran: status, worst error over tolerance, over max|ref|, over the source's own
float32 noise, examples, milliseconds per example of the reference, of the
target and of the harness's own work, and that work over the models'
inference time (the `cost` of each record).

    python benchmarks/parity_table.py reports/parity.json [more.json ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from harness.report.summary import noise_multiple, passed_by_noise  # noqa: E402


def _f(value) -> str:
    return f"{value:.3g}" if isinstance(value, (int, float)) else "-"


def rows(path: Path, label: str | None) -> list[str]:
    lines = []
    for case in json.loads(path.read_text())["cases"].values():
        if case["status"] == "skipped":
            continue
        cost = case.get("cost") or {}
        ms = cost.get("per_example_ms") or {}
        harness_ms = sum(v for k, v in ms.items() if k not in ("reference", "target")) if ms else None
        status = case["status"] + (" (noise)" if passed_by_noise(case) else "")
        if case["status"] == "error":
            status += f": {(case.get('message') or '').splitlines()[0][:80]}"
        cells = ([label] if label else []) + [
            case["id"], status, _f(case.get("worst_error_ratio")), _f(case.get("worst_normalized_error")),
            _f(noise_multiple(case)), _f(case.get("examples")), _f(ms.get("reference")), _f(ms.get("target")),
            _f(harness_ms), _f(100 * cost["harness_over_inference"]) + "%" if cost.get("harness_over_inference")
            is not None else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main(paths: list[str]) -> None:
    several = len(paths) > 1
    head = (["run"] if several else []) + ["case", "status", "err/tol", "err/max\\|ref\\|", "x noise", "examples",
                                           "ref ms", "target ms", "harness ms", "harness/inference"]
    print("| " + " | ".join(head) + " |")
    print("|" + " --- |" * len(head))
    for path in paths:
        print("\n".join(rows(Path(path), Path(path).stem if several else None)))


if __name__ == "__main__":
    main(sys.argv[1:])
