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
that 0 -> 1e-12 is no growth at all. A metric that became inf or nan (written
"inf", "nan") is a regression; one that is not a number at all is listed as not
comparable, and the gate does not say ok.

The whole-output scores, higher is better, are held as the relative error
each implies, so that one growth factor means one change of the error for
every metric (`error:10x` limits them too; `cosine:`, `snr_db:` alone):
- `snr_db` as 10**(-snr_db/20), the error's RMS over the reference's: a
  factor F is a drop of 20*log10(F) dB (20 dB at 10x);
- `cosine` as sqrt(2*(1 - cos)), the distance between the two outputs scaled
  to length 1: 1 - cos grows as the square of the error, so a factor F lets
  it grow F**2 (100x at 10x), not F, which an error grown sqrt(F) would trip.
Both count below `SCORE_FLOOR` (1e-6: SNR 120 dB, 1 - cos 5e-13) as
`SCORE_FLOOR`: finer than that is float32 rounding, which the error metrics
already track, and the cosine's own float64 rounding. An SNR of inf (no error)
is no error at all; -inf and NaN are a regression.
The agreements `top1_agreement` and `topk_overlap` (fractions of positions)
regress when they drop by more than an absolute slack, 0.01 by default
(`top1_agreement:0.05` or `:5%`, in points; `agreement:` sets both): a
factor on the disagreement would call one flipped row in a clean run
infinite growth, and let 10% -> 50% of rows flipped pass.
A metric absent from either side (a baseline saved before it was measured) is
not compared and says nothing; that is no lost coverage either, which is
counted in cases.

The gate also fails when this run covers less than the baseline: a case that ran
there (passed, failed, inconclusive or error) is missing now, or skips now. A
deliberate change of the matrix passes with `allow_lost_coverage`
(`--parity-allow-lost-coverage`, `diff --allow-lost-coverage`). A case of status
"missing" (a merged run's expected case that no shard recorded, harness/merge.py)
is a regression, allowed by nothing.

A file read as a baseline is checked against the results schema first
(`load_baseline`), so that a file of another shape is one message, not a traceback.

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

from harness.results import SCHEMA, atomic_write_text, to_jsonable
from harness.user_json import UserJSONError, read_user_json

FLOOR = 1e-9
SCORE_FLOOR = 1e-6
DEFAULT_COMPARE_FAIL = "error:10x"
DEFAULT_GROWTH = 10.0
DEFAULT_AGREEMENT_DROP = 0.01
METRICS = ("normalized_error", "error_ratio")      # errors: lower is better
SCORES = ("cosine", "snr_db")                      # higher is better, held as the error they imply
AGREEMENTS = ("top1_agreement", "topk_overlap")    # fractions, higher is better, held to an absolute drop
GATED = METRICS + SCORES + AGREEMENTS
# The names a --compare-fail term may use, and the metrics each one limits (the general names first).
METRIC_ALIASES = {"error": METRICS + SCORES, "normalized_error": ("normalized_error",), "error_ratio": ("error_ratio",),
                  "cosine": ("cosine",), "snr_db": ("snr_db",), "agreement": AGREEMENTS,
                  "top1_agreement": ("top1_agreement",), "topk_overlap": ("topk_overlap",)}
COMPARE_FAIL_SYNTAX = ("expected METRIC:LIMIT[,METRIC:LIMIT...], where METRIC is one of "
                       f"{', '.join(METRIC_ALIASES)} and LIMIT is a growth factor (10x or 10, above 1) "
                       "or a percent growth (1000%, above 0), e.g. error:10x; for agreement, top1_agreement and "
                       "topk_overlap, LIMIT is the drop allowed (0.01, or 1% in points, below 1)")
# The option of `python -m harness diff` that lets lost coverage pass (the plugin's is --parity-allow-lost-coverage).
DIFF_ALLOW_OPTION = "--allow-lost-coverage"
RAN = ("passed", "failed", "inconclusive")  # statuses whose error metrics are compared
COVERED = RAN + ("error",)  # a case that ran: missing or skipped now, it is coverage lost
# A case of the whole matrix that no shard recorded (harness/merge.py): the gate fails it, whatever it was before.
MISSING = "missing"
STATUSES = COVERED + ("skipped", MISSING)
NON_FINITE = ("inf", "-inf", "nan")  # how to_jsonable writes non-finite metrics


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
    is missing, past the size or depth budget of JSON from a user, not JSON,
    or not a results file."""
    path = Path(path)
    try:
        data = read_user_json(path)
    except UserJSONError as error:
        raise BaselineError(str(error)) from None
    problem = _schema_problem(data)
    if problem:
        raise BaselineError(f"{path}: not a parity results file of schema {SCHEMA}: {problem}. Give a parity.json "
                            "written by this harness, or save a new baseline from a run (--parity-save-baseline)")
    return data


def _json_type(value: Any) -> str:
    for kind, name in ((bool, "a boolean"), (dict, "an object"), (list, "an array"), (str, "a string"),
                       ((int, float), "a number")):
        if isinstance(value, kind):
            return name
    return "null"


def _schema_problem(data: Any) -> str | None:
    """What the gate would trip on in `data`, or None: the shape of what it reads
    (metric values are judged one by one when compared)."""
    if not isinstance(data, dict):
        return f"the file holds {_json_type(data)}, not an object"
    if "schema" not in data:
        return "it has no 'schema' field"
    if data["schema"] != SCHEMA:
        return f"it is of schema {data['schema']!r}"
    if not isinstance(data.get("cases"), dict):
        return f"'cases' is {_json_type(data.get('cases'))}, not an object of case ids"
    environment = data.get("environment") or {}
    if not isinstance(environment, dict) or not isinstance(environment.get("versions") or {}, dict):
        return "'environment' is not an object with a 'versions' object"
    for case_id, case in data["cases"].items():
        if not isinstance(case, dict):
            return f"case {case_id!r} is {_json_type(case)}, not an object"
        if case.get("status") not in STATUSES:
            return f"case {case_id!r} has status {case.get('status')!r}, not one of {', '.join(STATUSES)}"
        for name in ("outputs", "versions"):
            if not isinstance(case.get(name) or {}, dict):
                return f"case {case_id!r}: '{name}' is {_json_type(case[name])}, not an object"
        for output, metrics in (case.get("outputs") or {}).items():
            if not isinstance(metrics, dict):
                return f"case {case_id!r}: output {output!r} is {_json_type(metrics)}, not an object of metrics"
    return None


def parse_compare_fail(text: str, flag: str = "--compare-fail") -> dict[str, float]:
    """`error:10x`, `error:10`, `error:1000%` (percent growth: factor 1 + p/100),
    several comma-separated; returns {metric name: growth factor}, with metric
    names as written (`error` limits normalized_error, error_ratio and the error
    cosine and snr_db imply). For the agreements the limit is the drop allowed:
    `top1_agreement:0.02` or `:2%` (points). `flag`: the option that gave
    the text, as the command that read it spells it (pytest's is --parity-compare-fail)."""
    limits: dict[str, float] = {}
    terms = [t.strip() for t in (text or "").split(",")]
    if not any(terms):
        raise BaselineError(f"empty {flag} value: {COMPARE_FAIL_SYNTAX}")
    for term in terms:
        match = re.fullmatch(r"([a-z][a-z0-9_]*)\s*:\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(x|%)?", term)
        if not match or match.group(1) not in METRIC_ALIASES:
            raise BaselineError(f"bad {flag} term {term!r}: {COMPARE_FAIL_SYNTAX}")
        name, number, unit = match.group(1), float(match.group(2)), match.group(3)
        if set(METRIC_ALIASES[name]) <= set(AGREEMENTS):
            drop = number / 100.0 if unit == "%" else number
            if unit == "x" or not drop < 1.0:
                raise BaselineError(f"bad {flag} term {term!r}: an agreement's limit is the drop "
                                    f"allowed: {COMPARE_FAIL_SYNTAX}")
            limits[name] = drop
            continue
        factor = 1.0 + number / 100.0 if unit == "%" else number
        if (unit == "%" and number <= 0) or (unit != "%" and factor <= 1.0) or not math.isfinite(factor):
            raise BaselineError(f"bad {flag} term {term!r}: the limit must grow: {COMPARE_FAIL_SYNTAX}")
        limits[name] = factor
    return limits


def _limits(growth_limit: float | Mapping[str, float]) -> dict[str, float]:
    """{metric: limit} for each of GATED: a growth factor, or for AGREEMENTS the drop allowed."""
    given = growth_limit if isinstance(growth_limit, Mapping) else {"error": growth_limit}
    resolved = {**{m: DEFAULT_GROWTH for m in METRICS + SCORES}, **{m: DEFAULT_AGREEMENT_DROP for m in AGREEMENTS}}
    for name, metrics in METRIC_ALIASES.items():
        if name in given:
            resolved.update({metric: float(given[name]) for metric in metrics})
    return resolved


def _limit_text(metric: str, limit: float) -> str:
    if metric in AGREEMENTS:
        return f"{metric} drop {_num(limit)}"
    if metric == "snr_db":
        return f"{metric} {_num(limit)}x ({_num(20 * math.log10(limit))} dB)"
    return f"{metric} {_num(limit)}x"


# ---------------------------------------------------------------- comparing

@dataclass
class Change:
    """One thing that changed in one case (or one output of it)."""
    case_id: str
    what: str                      # a sentence for people
    kind: str                      # status | growth | shrink | drop | rise | new | vanished | skip | output
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
    skipped: list[Change] = field(default_factory=list)    # a skip on either side
    changed: list[Change] = field(default_factory=list)    # other changes, listed, not failing
    uncomparable: list[Change] = field(default_factory=list)  # metrics that are not numbers: failing
    unchanged: list[str] = field(default_factory=list)     # case ids
    matched: int = 0                                       # cases in both runs
    allow_lost_coverage: bool = False

    @property
    def lost_coverage(self) -> list[Change]:
        """Cases that ran in the baseline and are missing or skipped now."""
        return [c for c in self.vanished if c.old in COVERED] + self.vanished_coverage

    @property
    def failed(self) -> bool:
        return bool(self.regressions or self.uncomparable or (self.lost_coverage and not self.allow_lost_coverage))

    @property
    def vanished_coverage(self) -> list[Change]:
        """Cases that ran in the baseline and are skipped now."""
        return [c for c in self.skipped if c.old in COVERED and c.new == "skipped"]


def _number(value: Any) -> float | None:
    """A metric as a float, inf for inf and nan (as floats, or the strings to_jsonable
    writes); None where it was not measured (null: an empty output, a comparison that
    never ran). ValueError for anything else: the file was not written by the harness."""
    if value is None:
        return None
    if isinstance(value, str) and value in NON_FINITE:
        return math.inf
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"not a number: {value!r}")
    return float(value) if math.isfinite(value) else math.inf


def drift(old: Any, new: Any) -> float | None:
    """new/old, both floored at FLOOR; None when either is not a finite number."""
    try:
        a, b = _number(old), _number(new)
    except ValueError:
        return None
    if a is None or b is None or math.isinf(a) or math.isinf(b):
        return None
    return max(abs(b), FLOOR) / max(abs(a), FLOOR)


def _num(value: Any) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (int, float)):
        return f"{value:.3g}"
    return "-" if value is None else str(value)


def _status(record: Mapping[str, Any]) -> str:
    return str(record.get("status", "error"))


def _message(record: Mapping[str, Any]) -> str:
    lines = str(record.get("message") or "").splitlines()
    return lines[0][:160] if lines else ""


def _compare_case(case_id: str, old: Mapping[str, Any], new: Mapping[str, Any],
                  limits: Mapping[str, float], out: Comparison) -> None:
    before, after = _status(old), _status(new)
    counts = _counts(out)

    if "skipped" in (before, after):
        if before == after == "skipped":
            out.skipped.append(Change(case_id, "still skipped", "skip", before, after))
        elif after == "skipped":
            what = f"vanished coverage: {before}, now skipped" if before in COVERED else f"{before}, now skipped"
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
            for metric in GATED:
                if metric not in METRICS and not (metric in old_outputs[name] and metric in new_outputs[name]):
                    continue  # measured on one side only: a file from before the metric
                _compare_metric(case_id, name, metric, old_outputs[name].get(metric), new_outputs[name].get(metric),
                                limits[metric], " while still passing" if after == "passed" else "", out)

    if _counts(out) == counts:
        out.unchanged.append(case_id)


def _counts(out: Comparison) -> tuple[int, ...]:
    return (len(out.regressions), len(out.improvements), len(out.changed), len(out.skipped), len(out.uncomparable))


def _gate_value(metric: str, value: Any) -> float | None:
    """The metric as the gate holds it, lower is better: an error as it is, a
    score as the relative error it implies (inf where it is NaN, or an SNR of
    -inf), an agreement as the fraction that disagrees. None: not measured;
    ValueError: not a number (an agreement: not a fraction)."""
    if metric in METRICS:
        return _number(value)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) and value not in NON_FINITE:
        raise ValueError(f"not a number: {value!r}")
    number = float(value)   # "inf", "-inf", "nan" as to_jsonable writes them, with their signs
    if metric in AGREEMENTS:
        if not 0.0 <= number <= 1.0:
            raise ValueError(f"not a fraction: {value!r}")
        return 1.0 - number
    if metric == "snr_db":
        exponent = -number / 20   # NaN fails every comparison: the second test below
        return 0.0 if exponent == -math.inf else (10.0 ** exponent if exponent <= 300 else math.inf)
    return math.sqrt(max(2.0 * (1.0 - number), 0.0)) if math.isfinite(number) else math.inf


def _compare_metric(case_id: str, output: str, metric: str, old: Any, new: Any, limit: float, passing: str,
                    out: Comparison) -> None:
    """One metric of one output, old against new, into `out`: growth beyond `limit`
    or to a non-finite value is a regression (an agreement: a drop beyond it);
    a value that is not a number, not comparable."""
    try:
        a, b = _gate_value(metric, old), _gate_value(metric, new)
    except ValueError:
        out.uncomparable.append(Change(
            case_id, f"{output}: {metric} is not a number (baseline {old!r}, now {new!r}): the file was not "
                     "written by this harness, or was edited", "metric", old, new, output=output, metric=metric))
        return
    if a is None or b is None:
        if a is not b:
            where = "in the baseline" if a is None else "now"
            out.changed.append(Change(case_id, f"{output}: {metric} not measured {where}", "output", old, new,
                                      output=output, metric=metric))
        return
    if metric in AGREEMENTS:
        # 1e-9: fractions such as 0.76 - 0.75 are a hair above 0.01 in binary.
        if b - a > limit + 1e-9:
            out.regressions.append(Change(case_id, f"{output}: {metric} dropped {_num(old)} -> {_num(new)} (allowed "
                                                   f"{_num(limit)}){passing}", "drop", old, new, output=output,
                                          metric=metric))
        elif a - b > limit + 1e-9:
            out.improvements.append(Change(case_id, f"{output}: {metric} rose {_num(old)} -> {_num(new)}", "rise",
                                           old, new, output=output, metric=metric))
        return
    if math.isinf(a) or math.isinf(b):
        if not math.isinf(a):
            out.regressions.append(Change(case_id, f"{output}: {metric} became {new}{passing}", "growth", old, new,
                                          math.inf, output, metric))
        elif not math.isinf(b):
            out.improvements.append(Change(case_id, f"{output}: {metric} finite again (was {old})", "shrink", old,
                                           new, output=output, metric=metric))
        return
    floor = SCORE_FLOOR if metric in SCORES else FLOOR
    ratio = max(b, floor) / max(a, floor)
    if metric in SCORES:
        if ratio > limit or ratio < 1.0 / limit:
            change = _score_change(metric, old, new, ratio, limit)
            (out.regressions if ratio > limit else out.improvements).append(Change(
                case_id, f"{output}: {change}{passing if ratio > limit else ''}", "drop" if ratio > limit else "rise",
                old, new, output=output, metric=metric))
    elif ratio > limit:
        out.regressions.append(Change(case_id, f"{output}: {metric} grew {_num(ratio)}x (limit {_num(limit)}x)"
                                      f"{passing}", "growth", old, new, ratio, output, metric))
    elif ratio < 1.0 / limit:
        out.improvements.append(Change(case_id, f"{output}: {metric} shrank {_num(1 / ratio)}x", "shrink", old, new,
                                       ratio, output, metric))


def _score_change(metric: str, old: Any, new: Any, ratio: float, limit: float) -> str:
    """A score that moved beyond its limit, in its own unit ("fell" or "rose") and
    as the error it implies (the old and new values are in the sentence: a
    cosine to three digits would read 1 -> 1)."""
    verb = "fell" if ratio > 1 else "rose"
    if metric == "snr_db":
        return (f"snr_db {verb} {_num(old)} -> {_num(new)} dB, by {_num(abs(20 * math.log10(ratio)))} dB "
                f"(limit {_num(20 * math.log10(limit))} dB)")
    return (f"cosine {verb} {float(old):.9g} -> {float(new):.9g}: the error it implies "
            f"{'grew' if ratio > 1 else 'shrank'} {_num(max(ratio, 1 / ratio))}x (limit {_num(limit)}x)")


def compare_to_baseline(current: Mapping[str, Any], baseline: Mapping[str, Any],
                        growth_limit: float | Mapping[str, float] = 10.0,
                        allow_lost_coverage: bool = False) -> Comparison:
    """Hold the current run against the baseline, case by case (by id).

    `growth_limit`: a factor for every error metric and score, or the dict of parse_compare_fail.
    `allow_lost_coverage`: cases that ran in the baseline and are missing or skipped
    now are listed, not failing (a deliberate change of the matrix)."""
    limits = _limits(growth_limit)
    out = Comparison(growth_limits=limits, allow_lost_coverage=allow_lost_coverage)
    now, then = current.get("cases") or {}, baseline.get("cases") or {}
    out.matched = len(set(now) & set(then))
    for case_id in sorted(set(now) | set(then)):
        if case_id in now and _status(now[case_id]) == MISSING:
            before = _status(then[case_id]) if case_id in then else None
            out.regressions.append(Change(case_id, f"{before or 'new case'}, now missing: {_message(now[case_id])}",
                                          "status", before, MISSING))
        elif case_id not in then:
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


def _verdict(c: Comparison) -> str:
    limits = ", ".join(_limit_text(m, f) for m, f in c.growth_limits.items())
    return (f"{'FAILED' if c.failed else 'ok'}: {len(c.regressions)} regressions, "
            f"{len(c.lost_coverage)} lost coverage, {len(c.uncomparable)} not comparable, "
            f"{len(c.improvements)} improvements, {len(c.new)} new, {len(c.vanished)} vanished, "
            f"{len(c.vanished_coverage)} vanished coverage, {len(c.unchanged)} unchanged (growth limit: {limits})")


def _notes(c: Comparison, allow_option: str) -> list[str]:
    """Sentences on what the counts cannot say: lost coverage and metrics that are not numbers."""
    notes = []
    if c.lost_coverage:
        note = (f"lost coverage: {len(c.lost_coverage)} case(s) that ran in the baseline are missing or skip now "
                "(listed under vanished cases and skips)")
        if c.matched == 0:
            note += "; no case id of the baseline is in this run: is it the same matrix?"
        notes.append(note + (f"; allowed by {allow_option}" if c.allow_lost_coverage else
                             f"; the gate fails on it: pass {allow_option} if the matrix changed on purpose"))
    if c.uncomparable:
        notes.append(f"not comparable: {len(c.uncomparable)} metric(s) are not numbers; the gate cannot vouch for "
                     "them: compare files written by this harness")
    return notes


def render_comparison_text(comparison: Comparison, title: str = "parity baseline",
                           allow_option: str = "--parity-allow-lost-coverage") -> list[str]:
    """The terminal block: counts, then regressions, improvements, new, vanished, skips.
    `allow_option`: the option that lets lost coverage pass, named where coverage was lost."""
    c = comparison
    lines = [f"{title}: {_verdict(c)}", *_notes(c, allow_option)]

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
    block("metrics that are not numbers", c.uncomparable)
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
              old_label: str = "old", new_label: str = "new", allow_lost_coverage: bool = False) -> Diff:
    """Versions that changed, then the drift new/old of each output of each
    case in both runs, regressions first, then by drift, largest first."""
    comparison = compare_to_baseline(new, old, growth_limit, allow_lost_coverage)
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
    lines += render_comparison_text(diff.comparison, title="parity diff", allow_option=DIFF_ALLOW_OPTION)
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
             f"<p class='verdict-{'failed' if c.failed else 'ok'}'>{e(_verdict(c))}</p>",
             *(f"<p>{e(note)}</p>" for note in _notes(c, DIFF_ALLOW_OPTION)),
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
    changes("Metrics that are not numbers", c.uncomparable)
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
