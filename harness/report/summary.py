"""The terminal summary: one line per case, the worst first."""

from __future__ import annotations

from typing import Any, Iterable

from harness.accuracy import accuracy_line

ORDER = {"failed": 0, "error": 1, "inconclusive": 2, "passed": 3, "skipped": 4}
RAN = ("passed", "failed", "inconclusive")


def _number(value: Any) -> str:
    if isinstance(value, (int, float)):
        return f"{value:.3g}"
    return str(value) if value is not None else "-"


def noise_multiple(record: dict[str, Any]) -> Any:
    """The largest error over the source's own float32 noise among the case's outputs."""
    multiples = [o["noise"]["error_over_noise"] for o in record.get("outputs", {}).values()
                 if isinstance(o.get("noise"), dict) and isinstance(o["noise"].get("error_over_noise"), (int, float))]
    return max(multiples) if multiples else None


def passed_by_noise(record: dict[str, Any]) -> bool:
    return record.get("status") in ("passed", "inconclusive") and any(
        o.get("accepted_by") == "noise" for o in (record.get("outputs") or {}).values())


def _one_line(value: Any) -> str:
    """A name from a user's model on one line (it may hold newlines)."""
    return " ".join(str(value).split())


def localization_lines(record: dict[str, Any]) -> list[str]:
    """At most two lines under a localized case: the first diverging node with its
    layer and error, and the command that reproduces it; or why none was named."""
    localization = record.get("localization")
    if not isinstance(localization, dict):
        return []
    if localization.get("status") != "found":
        return [f"    localization: {_one_line(localization.get('message') or localization.get('status'))[:200]}"]
    first = localization.get("first") or {}
    where = " ".join([_one_line(first.get("op_type") or "node")]
                     + ([repr(str(first["node"]))] if first.get("node") else [])
                     + ([f"({_one_line(first['layer'])})"] if first.get("layer") else []))
    output = f" for {_one_line(localization['output'])}" if localization.get("output") else ""
    lines = [f"    first diverging{output}: {where} {_number(first.get('normalized_error'))} of its magnitude "
             f"(allowed {_number(localization.get('allowed'))})"]
    if (localization.get("repro") or {}).get("command"):
        lines.append(f"    repro: {localization['repro']['command']}")
    return lines


def summary_lines(records: Iterable[dict[str, Any]]) -> list[str]:
    records = sorted(records, key=lambda r: (ORDER.get(r["status"], 9), -(r.get("worst_error_ratio") or 0)
                                             if isinstance(r.get("worst_error_ratio"), (int, float)) else 0, r["id"]))
    counts: dict[str, int] = {}
    for record in records:
        counts[record["status"]] = counts.get(record["status"], 0) + 1
    width = max([len(r["id"]) for r in records] + [4])
    lines = [", ".join(f"{n} {s}" for s, n in sorted(counts.items(), key=lambda kv: ORDER.get(kv[0], 9))),
             f"{'case':<{width}}  {'status':<12}  {'err/tol':>8}  {'err/max|ref|':>12}  {'x noise':>8}  "
             f"{'examples':>8}"]
    by_noise = False
    for r in records:
        if r["status"] in RAN:
            status = r["status"] + ("*" if passed_by_noise(r) else "")
            by_noise |= passed_by_noise(r)
            examples = _number(r.get("examples"))
            if r.get("shrink_steps"):
                examples += f" +{r['shrink_steps']}"
            lines.append(f"{r['id']:<{width}}  {status:<12}  {_number(r.get('worst_error_ratio')):>8}  "
                         f"{_number(r.get('worst_normalized_error')):>12}  {_number(noise_multiple(r)):>8}  "
                         f"{examples:>8}")
            # a pass on stored examples alone, or on them where the drawn ones could not judge, says so
            if r["status"] == "inconclusive" or r.get("drawn_error") or r.get("drawn_inconclusive"):
                lines.append(f"    {r.get('message', '').splitlines()[0][:200]}")
            if isinstance(r.get("file_precision"), dict):   # computed wider than the file's types (file_precision.py)
                lines.append(f"    {_one_line(r['file_precision'].get('message'))[:200]}")
            if isinstance(r.get("accuracy"), dict):   # top-1 on the user's labelled examples (accuracy.py)
                lines.append(f"    {accuracy_line(r['accuracy'])}")
            lines += localization_lines(r)
        else:
            first_line = (r.get("message") or "").splitlines()[0] if r.get("message") else ""
            lines.append(f"{r['id']:<{width}}  {r['status']:<12}  {first_line[:120]}")
    if by_noise:
        lines.append("*: out of its elementwise tolerance, but within its noise multiple of the original's own "
                     "float32 error (x noise)")
    if any(r.get("shrink_steps") for r in records):
        lines.append("examples: drawn (corners first, then hypothesis); +N: shrinking steps after a failure")
    return lines
