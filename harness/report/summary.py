"""The terminal summary: one line per case that ran or failed to, the worst first; the skipped
cases one line per reason (each case on a line of its own when asked: every_skip)."""

from __future__ import annotations

import re
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


def _first_line(record: dict[str, Any]) -> str:
    return record["message"].splitlines()[0] if record.get("message") else ""


SKIP_EXAMPLES = 3   # case ids named beside a reason; the rest are counted
MODEL_PLACEHOLDER = "\0"   # stands for the model's name in a reason while grouping; no message holds it


def skip_reasons(skipped: list[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    """The skipped cases grouped by reason, the most common first: (the reason, its cases). Reasons
    are grouped by their text with the case's model name taken out where the reason names it (as a
    whole word), so that one limitation of a path met by several models ("known limitation of
    torch->tflite for gru: ..." and "... for lstm: ...", the same words after the colon) is one
    reason naming them all; a stable prefix would instead merge different limitations of one
    path, which a reader needs apart."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for record in skipped:
        model = str(record.get("model") or "")
        reason = _one_line(_first_line(record)) or "no reason recorded"
        if model:
            reason = re.sub(rf"(?<![\w-]){re.escape(model)}(?![\w-])", MODEL_PLACEHOLDER, reason)
        groups.setdefault(reason, []).append(record)
    return [(reason.replace(MODEL_PLACEHOLDER, ", ".join(dict.fromkeys(str(r.get("model")) for r in cases))), cases)
            for reason, cases in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))]


def skip_reason_lines(skipped: list[dict[str, Any]]) -> list[str]:
    """One line per reason among the skipped cases (skip_reasons): the count, the reason and a few
    of its cases' ids."""
    lines = []
    for reason, cases in skip_reasons(skipped):
        text = reason if len(reason) <= 120 else reason[:117] + "..."
        examples = ", ".join(r["id"] for r in cases[:SKIP_EXAMPLES])
        more = f" and {len(cases) - SKIP_EXAMPLES} more" if len(cases) > SKIP_EXAMPLES else ""
        lines.append(f"{len(cases)} skipped: {text} ({examples}{more})")
    return lines


def summary_lines(records: Iterable[dict[str, Any]], every_skip: bool = False) -> list[str]:
    """The run's counts, a line per case that ran or could not (failures and errors first), and the
    skipped cases one line per reason (skip_reason_lines); every_skip: a line per skipped case too,
    as pytest's -rs or -v asks."""
    records = sorted(records, key=lambda r: (ORDER.get(r["status"], 9), -(r.get("worst_error_ratio") or 0)
                                             if isinstance(r.get("worst_error_ratio"), (int, float)) else 0, r["id"]))
    counts: dict[str, int] = {}
    for record in records:
        counts[record["status"]] = counts.get(record["status"], 0) + 1
    skipped = [] if every_skip else [r for r in records if r["status"] == "skipped"]
    records_by_line = [r for r in records if every_skip or r["status"] != "skipped"]
    width = max([len(r["id"]) for r in records_by_line] + [4])
    lines = [", ".join(f"{n} {s}" for s, n in sorted(counts.items(), key=lambda kv: ORDER.get(kv[0], 9))),
             f"{'case':<{width}}  {'status':<12}  {'err/tol':>8}  {'err/max|ref|':>12}  {'x noise':>8}  "
             f"{'examples':>8}"]
    by_noise = False
    for r in records_by_line:
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
            lines.append(f"{r['id']:<{width}}  {r['status']:<12}  {_first_line(r)[:120]}")
    reason_lines = skip_reason_lines(skipped)
    lines += reason_lines
    if len(skipped) > len(reason_lines):   # cases share a line: say how to list each
        lines.append("skipped: one line per reason; -rs or -v lists each case")
    if by_noise:
        lines.append("*: out of its elementwise tolerance, but within its noise multiple of the original's own "
                     "float32 error (x noise)")
    if any(r.get("shrink_steps") for r in records):
        lines.append("examples: drawn (corners first, then hypothesis); +N: shrinking steps after a failure")
    return lines
