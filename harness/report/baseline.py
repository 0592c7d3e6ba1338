"""Baselines: hold today's run against a saved one, and diff two runs.

    save_baseline(results, path)              keep a run's parity.json as the baseline
    compare_to_baseline(current, baseline)    the gate: regressions fail, the rest is listed
    diff_runs(old, new)                       the framework-upgrade view: versions first,
                                              then the drift of every output
    python -m harness diff OLD.json NEW.json  the same outside pytest

Cases are matched by id only: the hypothesis seed, the examples count or the
order of the cases do not matter. The per-output metrics compared are
`normalized_error` (error over max|ref|) and `error_ratio` (error over the
tolerance); a metric that grew beyond the growth limit (`error:10x` by default,
the idiom of pytest-benchmark's `--benchmark-compare-fail`) is a regression
even while the case still passes. Values below `FLOOR` count as `FLOOR`, so
that 0 -> 1e-12 is no growth at all.

Pure Python: no pytest, no deep-learning framework.
"""

from __future__ import annotations

import html
import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from harness.results import atomic_write_text, to_jsonable

FLOOR = 1e-9
DEFAULT_COMPARE_FAIL = "error:10x"
METRICS = ("normalized_error", "error_ratio")
# The names a --compare-fail term may use, and the metrics each one limits.
METRIC_ALIASES = {"error": METRICS, "normalized_error": ("normalized_error",), "error_ratio": ("error_ratio",)}
COMPARE_FAIL_SYNTAX = ("expected METRIC:LIMIT[,METRIC:LIMIT...], where METRIC is one of "
                       f"{', '.join(METRIC_ALIASES)} and LIMIT is a growth factor (10x or 10, above 1) "
                       "or a percent growth (1000%, above 0), e.g. error:10x")
RAN = ("passed", "failed", "inconclusive")  # statuses whose error metrics are compared


class BaselineError(Exception):
    """A baseline that cannot be written or read, or a bad --compare-fail text."""


# ---------------------------------------------------------------- saving, loading

def save_baseline(results: Mapping[str, Any], path: Path, force: bool = False) -> Path:
    """Write the run's results as a baseline (atomically); refuse to replace one
    unless `force`."""
    path = Path(path)
    if path.exists() and not force:
        raise BaselineError(f"baseline {path} already exists; pass --parity-save-baseline-force to overwrite it")
    data = dict(to_jsonable(results))
    data["baseline_saved"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    atomic_write_text(path, json.dumps(data, indent=1))
    return path


def load_baseline(path: Path) -> dict[str, Any]:
    """Read a results or baseline file; BaselineError names the file when it
    is missing, not JSON, or not a results file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise BaselineError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise BaselineError(f"{path}: cannot be read ({error})") from None
    except json.JSONDecodeError as error:
        raise BaselineError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(data, dict) or not isinstance(data.get("cases"), dict):
        raise BaselineError(f"{path}: not a parity results file (no 'cases' mapping)")
    return data


def parse_compare_fail(text: str) -> dict[str, float]:
    """`error:10x`, `error:10`, `error:1000%` (percent growth: factor 1 + p/100),
    several comma-separated; returns {metric name: growth factor}, with metric
    names as written (`error` limits both normalized_error and error_ratio)."""
    limits: dict[str, float] = {}
    terms = [t.strip() for t in (text or "").split(",")]
    if not any(terms):
        raise BaselineError(f"empty --compare-fail value: {COMPARE_FAIL_SYNTAX}")
    for term in terms:
        match = re.fullmatch(r"([a-z_]+)\s*:\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(x|%)?", term)
        if not match or match.group(1) not in METRIC_ALIASES:
            raise BaselineError(f"bad --compare-fail term {term!r}: {COMPARE_FAIL_SYNTAX}")
        name, number, unit = match.group(1), float(match.group(2)), match.group(3)
        factor = 1.0 + number / 100.0 if unit == "%" else number
        if (unit == "%" and number <= 0) or (unit != "%" and factor <= 1.0) or not math.isfinite(factor):
            raise BaselineError(f"bad --compare-fail term {term!r}: the limit must grow: {COMPARE_FAIL_SYNTAX}")
        limits[name] = factor
    return limits


def _limits(growth_limit: float | Mapping[str, float]) -> dict[str, float]:
    """{metric: factor} for each of METRICS."""
    if isinstance(growth_limit, Mapping):
        resolved = {m: 10.0 for m in METRICS} if "error" not in growth_limit else {}
        for name in ("error", "normalized_error", "error_ratio"):  # the general name first
            if name in growth_limit:
                for metric in METRIC_ALIASES[name]:
                    resolved[metric] = float(growth_limit[name])
        return resolved
    return {m: float(growth_limit) for m in METRICS}


# ---------------------------------------------------------------- comparing

@dataclass
class Change:
    """One thing that changed in one case (or one output of it)."""
    case_id: str
    what: str                      # a sentence for people
    kind: str                      # status | growth | shrink | new | vanished | skip | output
    old: Any = None                # the old value (a status or a metric)
    new: Any = None
    ratio: float | None = None     # new/old of the metric (floored), when there is one
    output: str | None = None
    metric: str | None = None


@dataclass
class Comparison:
    growth_limits: dict[str, float]
    regressions: list[Change] = field(default_factory=list)
    improvements: list[Change] = field(default_factory=list)
    new: list[Change] = field(default_factory=list)        # cases in the current run only
    vanished: list[Change] = field(default_factory=list)   # cases in the baseline only
    skipped: list[Change] = field(default_factory=list)    # a skip on either side; never failing
    changed: list[Change] = field(default_factory=list)    # other changes, listed, not failing
    unchanged: list[str] = field(default_factory=list)     # case ids

    @property
    def failed(self) -> bool:
        return bool(self.regressions)

    @property
    def vanished_coverage(self) -> list[Change]:
        """Cases that ran in the baseline and are skipped now."""
        return [c for c in self.skipped if c.old in RAN and c.new == "skipped"]


def _value(value: Any) -> float | None:
    """A metric as a float (JSON writes inf/nan as strings); nan counts as inf."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if not isinstance(value, (int, float)):
        return None
    value = float(value)
    return math.inf if math.isnan(value) else value


def drift(old: Any, new: Any) -> float | None:
    """new/old, both floored at FLOOR; None when either is missing."""
    a, b = _value(old), _value(new)
    if a is None or b is None:
        return None
    a, b = max(abs(a), FLOOR), max(abs(b), FLOOR)
    if math.isinf(a) and math.isinf(b):
        return 1.0
    return b / a


def _num(value: Any) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (int, float)):
        return f"{value:.3g}"
    return "-" if value is None else str(value)


def _status(record: Mapping[str, Any]) -> str:
    return str(record.get("status", "error"))


def _message(record: Mapping[str, Any]) -> str:
    lines = (record.get("message") or "").splitlines()
    return lines[0][:160] if lines else ""


def _compare_case(case_id: str, old: Mapping[str, Any], new: Mapping[str, Any],
                  limits: Mapping[str, float], out: Comparison) -> None:
    before, after = _status(old), _status(new)
    regressions, improvements = len(out.regressions), len(out.improvements)
    changed, skipped = len(out.changed), len(out.skipped)

    if "skipped" in (before, after):
        if before == after == "skipped":
            out.skipped.append(Change(case_id, "still skipped", "skip", before, after))
        elif after == "skipped":
            what = ("vanished coverage: ran, now skipped" if before in RAN else f"{before}, now skipped")
            out.skipped.append(Change(case_id, f"{what}: {_message(new)}", "skip", before, after))
        else:
            out.skipped.append(Change(case_id, f"new coverage: skipped, now {after}", "skip", before, after))
        return
    if before in ("passed", "inconclusive") and after == "failed":
        out.regressions.append(Change(case_id, f"{before}, now fails: {_message(new)}", "status", before, after,
                                      drift(old.get("worst_error_ratio"), new.get("worst_error_ratio")),
                                      metric="worst_error_ratio"))
    elif before in RAN and after == "error":
        out.regressions.append(Change(case_id, f"{before}, now errors: {_message(new)}", "status", before, after))
    elif before in ("failed", "error") and after == "passed":
        out.improvements.append(Change(case_id, f"{before}, now passes", "status", before, after))
    elif before != after:
        out.changed.append(Change(case_id, f"{before}, now {after}: {_message(new)}", "status", before, after))

    if before in RAN and after in RAN and not (before == "failed" and after == "passed"):
        old_outputs, new_outputs = old.get("outputs") or {}, new.get("outputs") or {}
        for name in sorted(set(old_outputs) | set(new_outputs)):
            if name not in new_outputs:
                out.changed.append(Change(case_id, f"output {name} no longer measured", "output", output=name))
                continue
            if name not in old_outputs:
                out.changed.append(Change(case_id, f"output {name} measured, not in the baseline", "output", output=name))
                continue
            for metric in METRICS:
                a, b = old_outputs[name].get(metric), new_outputs[name].get(metric)
                ratio = drift(a, b)
                if ratio is None:
                    continue
                limit = limits[metric]
                if ratio > limit:
                    out.regressions.append(Change(
                        case_id, f"{name}: {metric} grew {_num(ratio)}x (limit {_num(limit)}x)"
                        + (" while still passing" if after == "passed" else ""),
                        "growth", a, b, ratio, name, metric))
                elif ratio < 1.0 / limit:
                    out.improvements.append(Change(
                        case_id, f"{name}: {metric} shrank {_num(1 / ratio)}x", "shrink", a, b, ratio, name, metric))

    if (len(out.regressions), len(out.improvements), len(out.changed), len(out.skipped)) == (
            regressions, improvements, changed, skipped):
        out.unchanged.append(case_id)


def compare_to_baseline(current: Mapping[str, Any], baseline: Mapping[str, Any],
                        growth_limit: float | Mapping[str, float] = 10.0) -> Comparison:
    """Hold the current run against the baseline, case by case (by id).

    `growth_limit`: a factor for both metrics, or the dict of parse_compare_fail."""
    limits = _limits(growth_limit)
    out = Comparison(growth_limits=limits)
    now, then = current.get("cases") or {}, baseline.get("cases") or {}
    for case_id in sorted(set(now) | set(then)):
        if case_id not in then:
            status = _status(now[case_id])
            out.new.append(Change(case_id, f"new case ({status})", "new", None, status))
        elif case_id not in now:
            status = _status(then[case_id])
            out.vanished.append(Change(case_id, f"not in this run (was {status})", "vanished", status, None))
        else:
            _compare_case(case_id, then[case_id], now[case_id], limits, out)
    out.regressions.sort(key=lambda c: (c.kind != "status", -(c.ratio or 0.0), c.case_id))
    out.improvements.sort(key=lambda c: (c.kind != "status", c.ratio if c.ratio is not None else 0.0, c.case_id))
    return out


def render_comparison_text(comparison: Comparison, title: str = "parity baseline") -> list[str]:
    """The terminal block: counts, then regressions, improvements, new, vanished, skips."""
    c = comparison
    limits = ", ".join(f"{m} {_num(f)}x" for m, f in c.growth_limits.items())
    verdict = "FAILED" if c.failed else "ok"
    lines = [f"{title}: {verdict}: {len(c.regressions)} regressions, {len(c.improvements)} improvements, "
             f"{len(c.new)} new, {len(c.vanished)} vanished, {len(c.vanished_coverage)} vanished coverage, "
             f"{len(c.unchanged)} unchanged (growth limit: {limits})"]

    def block(name: str, entries: list[Change]) -> None:
        if not entries:
            return
        lines.append(f"{name}:")
        for e in entries:
            values = ""
            if e.kind in ("growth", "shrink") or (e.ratio is not None):
                values = f"  [{_num(e.old)} -> {_num(e.new)}, x{_num(e.ratio)}]"
            lines.append(f"  {e.case_id}: {e.what}{values}")

    block("regressions", c.regressions)
    block("improvements", c.improvements)
    block("new cases", c.new)
    block("vanished cases", c.vanished)
    block("skips", [s for s in c.skipped if s.what != "still skipped"])
    block("other changes", c.changed)
    return lines


# ---------------------------------------------------------------- diffing two runs

@dataclass
class VersionChange:
    package: str
    old: str | None                # None: not installed then
    new: str | None
    scope: str                     # "environment" or "cases"
    cases: list[str] = field(default_factory=list)


@dataclass
class OutputDrift:
    case_id: str
    output: str | None             # None: a case with no output on one side
    old_status: str
    new_status: str
    old_normalized: Any = None
    new_normalized: Any = None
    normalized_drift: float | None = None
    old_ratio: Any = None
    new_ratio: Any = None
    ratio_drift: float | None = None
    regression: bool = False

    @property
    def drift(self) -> float:
        values = [d for d in (self.normalized_drift, self.ratio_drift) if d is not None]
        return max(values) if values else 0.0


@dataclass
class Diff:
    old_label: str
    new_label: str
    versions: list[VersionChange]
    drifts: list[OutputDrift]
    comparison: Comparison

    @property
    def failed(self) -> bool:
        return self.comparison.failed


def _version_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[VersionChange]:
    changes: list[VersionChange] = []
    old_env, new_env = old.get("environment") or {}, new.get("environment") or {}
    for key in ("python", "platform"):
        if old_env.get(key) != new_env.get(key):
            changes.append(VersionChange(key, old_env.get(key), new_env.get(key), "environment"))
    ov, nv = old_env.get("versions") or {}, new_env.get("versions") or {}
    for package in sorted(set(ov) | set(nv)):
        if ov.get(package) != nv.get(package):
            changes.append(VersionChange(package, ov.get(package), nv.get(package), "environment"))
    seen = {(c.package, c.old, c.new) for c in changes}
    per_case: dict[tuple[str, str | None, str | None], list[str]] = {}
    old_cases, new_cases = old.get("cases") or {}, new.get("cases") or {}
    for case_id in sorted(set(old_cases) & set(new_cases)):
        a = old_cases[case_id].get("versions") or {}
        b = new_cases[case_id].get("versions") or {}
        if not a or not b:
            continue
        for package in sorted(set(a) | set(b)):
            if a.get(package) != b.get(package):
                per_case.setdefault((package, a.get(package), b.get(package)), []).append(case_id)
    for (package, a, b), ids in sorted(per_case.items(), key=lambda kv: (kv[0][0], str(kv[0][1]), str(kv[0][2]))):
        if (package, a, b) in seen:  # the same change as the environment's: name its cases there
            for change in changes:
                if (change.package, change.old, change.new) == (package, a, b):
                    change.cases = ids
        else:
            changes.append(VersionChange(package, a, b, "cases", ids))
    return changes


def diff_runs(old: Mapping[str, Any], new: Mapping[str, Any], growth_limit: float | Mapping[str, float] = 10.0,
              old_label: str = "old", new_label: str = "new") -> Diff:
    """Versions that changed, then the drift new/old of each output of each
    case in both runs, regressions first, then by drift, largest first."""
    comparison = compare_to_baseline(new, old, growth_limit)
    regressed_outputs = {(c.case_id, c.output) for c in comparison.regressions if c.output}
    regressed_cases = {c.case_id for c in comparison.regressions if c.kind == "status"}
    drifts: list[OutputDrift] = []
    old_cases, new_cases = old.get("cases") or {}, new.get("cases") or {}
    for case_id in sorted(set(old_cases) & set(new_cases)):
        a, b = old_cases[case_id], new_cases[case_id]
        ao, bo = a.get("outputs") or {}, b.get("outputs") or {}
        common = [n for n in ao if n in bo]
        if not common:
            drifts.append(OutputDrift(case_id, None, _status(a), _status(b), regression=case_id in regressed_cases))
            continue
        for name in common:
            x, y = ao[name], bo[name]
            drifts.append(OutputDrift(
                case_id, name, _status(a), _status(b),
                x.get("normalized_error"), y.get("normalized_error"), drift(x.get("normalized_error"), y.get("normalized_error")),
                x.get("error_ratio"), y.get("error_ratio"), drift(x.get("error_ratio"), y.get("error_ratio")),
                regression=case_id in regressed_cases or (case_id, name) in regressed_outputs))
    drifts.sort(key=lambda d: (not d.regression, -d.drift, d.case_id, d.output or ""))
    return Diff(old_label, new_label, _version_changes(old, new), drifts, comparison)


def _version_line(v: VersionChange) -> str:
    where = "environment" if v.scope == "environment" else "cases"
    count = f", {len(v.cases)} cases" if v.cases else ""
    return f"  {v.package}: {v.old or '(absent)'} -> {v.new or '(absent)'}  ({where}{count})"


def render_diff_text(diff: Diff) -> str:
    lines = [f"versions ({diff.old_label} -> {diff.new_label}):"]
    lines += [_version_line(v) for v in diff.versions] or ["  no version changed"]
    lines.append("")
    lines += render_comparison_text(diff.comparison, title="parity diff")
    lines.append("")
    width = max([len(d.case_id) for d in diff.drifts] + [4])
    outw = max([len(d.output or "-") for d in diff.drifts] + [6])
    lines.append(f"{'case':<{width}}  {'output':<{outw}}  {'status':<15}  {'err/max|ref| old -> new':>24}  "
                 f"{'drift':>8}  {'err/tol old -> new':>20}  {'drift':>8}")
    for d in diff.drifts:
        mark = "  REGRESSION" if d.regression else ""
        status = d.old_status if d.old_status == d.new_status else f"{d.old_status}->{d.new_status}"
        lines.append(f"{d.case_id:<{width}}  {d.output or '-':<{outw}}  {status:<15}  "
                     f"{_num(d.old_normalized) + ' -> ' + _num(d.new_normalized):>24}  {_num(d.normalized_drift):>8}  "
                     f"{_num(d.old_ratio) + ' -> ' + _num(d.new_ratio):>20}  {_num(d.ratio_drift):>8}{mark}")
    return "\n".join(lines) + "\n"


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.3em}h2{font-size:1.1em;margin-top:1.5em}
table{border-collapse:collapse;margin:.5em 0}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;font-size:.9em}
td.num{text-align:right;font-variant-numeric:tabular-nums}
th{background:#f0f0f0}
tr.regression td{background:#fde2e2}
tr.improvement td{background:#e2f6e2}
.verdict-failed{color:#b00020;font-weight:bold}.verdict-ok{color:#1b7f2a;font-weight:bold}
ul{margin:.3em 0}
"""


def render_diff_html(diff: Diff) -> str:
    e = html.escape
    c = diff.comparison
    improved = {(i.case_id, i.output) for i in c.improvements} | {(i.case_id, None) for i in c.improvements
                                                                   if i.kind == "status"}
    parts = ["<!DOCTYPE html>", "<html><head><meta charset='utf-8'>",
             f"<title>parity diff: {e(diff.old_label)} → {e(diff.new_label)}</title>",
             f"<style>{_CSS}</style></head><body>",
             f"<h1>parity diff: {e(diff.old_label)} → {e(diff.new_label)}</h1>",
             f"<p class='verdict-{'failed' if c.failed else 'ok'}'>{'FAILED' if c.failed else 'ok'}: "
             f"{len(c.regressions)} regressions, {len(c.improvements)} improvements, {len(c.new)} new, "
             f"{len(c.vanished)} vanished, {len(c.vanished_coverage)} vanished coverage, "
             f"{len(c.unchanged)} unchanged (growth limit: "
             f"{e(', '.join(f'{m} {_num(f)}x' for m, f in c.growth_limits.items()))})</p>",
             "<h2>Versions</h2>"]
    if diff.versions:
        parts.append("<table><tr><th>package</th><th>old</th><th>new</th><th>where</th></tr>")
        for v in diff.versions:
            where = v.scope + (f" ({len(v.cases)} cases: {', '.join(v.cases)})" if v.cases else "")
            parts.append(f"<tr><td>{e(v.package)}</td><td>{e(v.old or '(absent)')}</td>"
                         f"<td>{e(v.new or '(absent)')}</td><td>{e(where)}</td></tr>")
        parts.append("</table>")
    else:
        parts.append("<p>No version changed.</p>")

    def changes(title: str, entries: list[Change]) -> None:
        if entries:
            parts.append(f"<h2>{e(title)}</h2><ul>")
            for x in entries:
                values = f" [{_num(x.old)} → {_num(x.new)}, ×{_num(x.ratio)}]" if x.ratio is not None else ""
                parts.append(f"<li><code>{e(x.case_id)}</code>: {e(x.what)}{e(values)}</li>")
            parts.append("</ul>")

    changes("Regressions", c.regressions)
    changes("Improvements", c.improvements)
    changes("New cases", c.new)
    changes("Vanished cases", c.vanished)
    changes("Skips", [s for s in c.skipped if s.what != "still skipped"])
    changes("Other changes", c.changed)
    parts.append("<h2>Cases</h2><table><tr><th>case</th><th>output</th><th>status</th>"
                 "<th>err/max|ref| old</th><th>new</th><th>drift</th>"
                 "<th>err/tol old</th><th>new</th><th>drift</th></tr>")
    for d in diff.drifts:
        css = "regression" if d.regression else ("improvement" if (d.case_id, d.output) in improved else "")
        status = d.old_status if d.old_status == d.new_status else f"{d.old_status} → {d.new_status}"
        cells = [d.old_normalized, d.new_normalized, d.normalized_drift, d.old_ratio, d.new_ratio, d.ratio_drift]
        parts.append(f"<tr class='{css}'><td>{e(d.case_id)}</td><td>{e(d.output or '-')}</td><td>{e(status)}</td>"
                     + "".join(f"<td class='num'>{e(_num(v))}</td>" for v in cells) + "</tr>")
    parts.append("</table></body></html>")
    return "\n".join(parts) + "\n"


def write_diff_html(diff: Diff, path: Path) -> Path:
    atomic_write_text(Path(path), render_diff_html(diff))
    return Path(path)
