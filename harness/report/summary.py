"""The terminal summary: one line per case, the worst first."""

from __future__ import annotations

from typing import Any, Iterable

ORDER = {"failed": 0, "error": 1, "passed": 2, "skipped": 3}


def _number(value: Any) -> str:
    if isinstance(value, (int, float)):
        return f"{value:.3g}"
    return str(value) if value is not None else "-"


def _noise_multiple(record: dict[str, Any]) -> Any:
    multiples = [o["noise"]["error_over_noise"] for o in record.get("outputs", {}).values()
                 if isinstance(o.get("noise"), dict) and isinstance(o["noise"].get("error_over_noise"), (int, float))]
    return max(multiples) if multiples else None


def summary_lines(records: Iterable[dict[str, Any]]) -> list[str]:
    records = sorted(records, key=lambda r: (ORDER.get(r["status"], 9), -(r.get("worst_error_ratio") or 0)
                                             if isinstance(r.get("worst_error_ratio"), (int, float)) else 0, r["id"]))
    counts: dict[str, int] = {}
    for record in records:
        counts[record["status"]] = counts.get(record["status"], 0) + 1
    width = max([len(r["id"]) for r in records] + [4])
    lines = [", ".join(f"{n} {s}" for s, n in sorted(counts.items(), key=lambda kv: ORDER.get(kv[0], 9))),
             f"{'case':<{width}}  {'status':<7}  {'err/tol':>8}  {'err/max|ref|':>12}  {'x noise':>8}  {'examples':>8}"]
    for r in records:
        if r["status"] in ("passed", "failed"):
            lines.append(f"{r['id']:<{width}}  {r['status']:<7}  {_number(r.get('worst_error_ratio')):>8}  "
                         f"{_number(r.get('worst_normalized_error')):>12}  {_number(_noise_multiple(r)):>8}  "
                         f"{_number(r.get('examples')):>8}")
        else:
            first_line = (r.get("message") or "").splitlines()[0] if r.get("message") else ""
            lines.append(f"{r['id']:<{width}}  {r['status']:<7}  {first_line[:120]}")
    return lines
