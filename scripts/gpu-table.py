"""One table from several parity.json files: case, run, status, worst error
over tolerance, over max|ref|, over the source's own float32 noise, examples,
milliseconds per example of the reference and the target."""

import json
import sys
from pathlib import Path


def main(paths: list[str]) -> None:
    print(f"{'run':<22} {'case':<40} {'status':<8} {'err/tol':>8} {'err/max':>9} {'noise/max':>9} {'x noise':>8} {'n':>4} {'ref ms':>7} {'tgt ms':>7}")
    for path in paths:
        run = Path(path).stem
        for case in json.loads(Path(path).read_text())["cases"].values():
            if case["status"] == "skipped":
                continue
            outs = [o for o in case.get("outputs", {}).values() if isinstance(o.get("noise"), dict)]
            noise = max((o["noise"].get("noise_normalized") or 0 for o in outs), default=None)
            over = max((o["noise"].get("error_over_noise") or 0 for o in outs), default=None)
            t, n = case.get("timings", {}), case.get("examples") or 0
            ms = lambda k: f"{1000 * t[k] / n:.2f}" if n and k in t else "-"
            f = lambda v: f"{v:.3g}" if isinstance(v, (int, float)) else "-"
            print(f"{run:<22} {case['id']:<40} {case['status']:<8} {f(case.get('worst_error_ratio')):>8} "
                  f"{f(case.get('worst_normalized_error')):>9} {f(noise):>9} {f(over):>8} {n:>4} {ms('reference_s'):>7} {ms('target_s'):>7}")
            if case["status"] == "error":
                print("    ", (case.get("message") or "")[:300].replace("\n", " "))


if __name__ == "__main__":
    main(sys.argv[1:])
