"""The HTML report: one self-contained file rendered from the results JSON.

No network: the CSS, the few lines of script (open the drill-down a matrix cell
links to) and the histograms (inline SVG) are all in the file.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Mapping

from harness.report.summary import skip_reasons
from harness.results import atomic_write_text

STATUS_ORDER = ("failed", "error", "missing", "inconclusive", "passed", "skipped")
TIMINGS = (("build_s", "build"), ("convert_s", "convert"), ("load_s", "load"),
           ("reference_s", "reference"), ("target_s", "target"), ("compare_s", "compare"), ("noise_s", "noise floor"))
# Shown first in a provenance table, in this order; every other key follows.
PROVENANCE_FIRST = ("converter", "tool", "tool_version", "versions", "exporter", "exporter_requested",
                    "opset_requested", "opset", "ir_version", "layout_variant", "precision", "options",
                    "edits", "shims", "input_layouts", "output_layouts")


def _column(case: Mapping[str, Any]) -> str:
    parts = f"{case['source']} → {case['target']} / {case['device']}"
    if case.get("variant"):
        parts += f" / {case['variant']}"
    if case.get("precision", "fp32") != "fp32":
        parts += f" / {case['precision']}"
    if case.get("reference_device", case["device"]) != case["device"]:
        parts += f" / reference on {case['reference_device']}"
    return parts


def anchor(case_id: str) -> str:
    """The drill-down's element id for a case id (safe in an URL fragment)."""
    return "case-" + re.sub(r"[^A-Za-z0-9_.-]", "_", str(case_id))


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if value in ("inf", "-inf", "nan"):
        return float(value)
    return None


def fmt(value: Any) -> str:
    """Numbers to 3 significant digits; '-' for a missing one."""
    if value is None:
        return "-"
    number = _number(value)
    if number is None:
        return str(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return f"{number:.3g}"


def fmt_seconds(value: Any) -> str:
    number = _number(value)
    if number is None:
        return "-"
    return f"{number * 1e3:.1f} ms" if number < 1 else f"{number:.2f} s"


def cell_style(case: Mapping[str, Any]) -> str:
    """Background of a passed cell: green for a tiny error, through yellow, to
    amber as the worst error nears its tolerance (log scale, 1e-6 .. 1)."""
    if case.get("status") != "passed":
        return ""
    ratio = _number(case.get("worst_error_ratio"))
    if ratio is None or not math.isfinite(ratio):
        return ""
    t = 0.0 if ratio <= 1e-6 else min(1.0, (math.log10(ratio) + 6) / 6)
    hue = 125 - 80 * t
    return f"background:hsl({hue:.0f},65%,{80 - 8 * t:.0f}%)"


def _edge_label(edge: Any) -> str:
    number = _number(edge)
    if number is None:
        return str(edge)
    if number == 0:
        return "0"
    if math.isinf(number):
        return "∞"
    exponent = round(math.log10(number))
    return "1" if exponent == 0 else ("10" if exponent == 1 else ("100" if exponent == 2 else f"1e{exponent}"))


def histogram_svg(hist: Mapping[str, Any] | None) -> str:
    """Bars of the error-over-tolerance histogram (log-scaled heights), with the
    tolerance (ratio 1) marked; '' when there is none."""
    if not hist or not hist.get("counts"):
        return ""
    from markupsafe import Markup, escape

    counts = [int(c) for c in hist["counts"]]
    edges = list(hist.get("edges") or [])
    if len(edges) != len(counts) + 1:
        edges = [""] * (len(counts) + 1)
    bar_w, gap, left, top, height = 34, 4, 8, 16, 90
    width = left * 2 + len(counts) * (bar_w + gap)
    scale = math.log10(1 + max(counts)) or 1.0
    total = sum(counts) or 1
    parts = [f'<svg class="hist" width="{width}" height="{top + height + 30}" '
             f'viewBox="0 0 {width} {top + height + 30}" role="img" aria-label="error over tolerance histogram">']
    tol_x = None
    for i, count in enumerate(counts):
        x = left + i * (bar_w + gap)
        h = 0 if count == 0 else max(2.0, height * math.log10(1 + count) / scale)
        lo, hi = _number(edges[i]), _number(edges[i + 1])
        over = lo is not None and lo >= 1
        if hi is not None and hi == 1:
            tol_x = x + bar_w + gap / 2
        label = f"({_edge_label(edges[i])}, {_edge_label(edges[i + 1])}]: {count} ({100 * count / total:.3g}%)"
        parts.append(f'<rect class="bar {"over" if over else "within"}" x="{x}" y="{top + height - h:.1f}" '
                     f'width="{bar_w}" height="{h:.1f}"><title>{escape(label)}</title></rect>')
        if count:
            parts.append(f'<text x="{x + bar_w / 2}" y="{top + height - h - 3:.1f}" class="cnt">{count}</text>')
        parts.append(f'<text x="{x}" y="{top + height + 12}" class="edge">{escape(_edge_label(edges[i]))}</text>')
    if tol_x is not None:
        parts.append(f'<line class="tol" x1="{tol_x}" y1="4" x2="{tol_x}" y2="{top + height + 2}"/>'
                     f'<text x="{tol_x + 3}" y="11" class="tollabel">tolerance (ratio 1)</text>')
    parts.append(f'<text x="{left}" y="{top + height + 26}" class="edge">error / tolerance, log decades'
                 + (f"; every {int(hist['sampled'])}th element" if int(hist.get("sampled") or 1) > 1 else "")
                 + "</text></svg>")
    return Markup("".join(parts))


def _first_diverging(localization: Mapping[str, Any]) -> int | None:
    """The position on the localization's path of its first diverging tensor:
    the entry that is `first`, else the first one marked diverged."""
    path = list(localization.get("path") or [])
    tensor = (localization.get("first") or {}).get("tensor")
    for i, entry in enumerate(path):
        if tensor is not None and entry.get("tensor") == tensor:
            return i
    return next((i for i, entry in enumerate(path) if entry.get("diverged")), None)


def path_rows(localization: Mapping[str, Any], limit: int = 12) -> list[dict[str, Any]]:
    """The path's rows to show, in order: {"position", "entry", "first"}, and
    {"skipped": n} where n rows are left out. A path longer than `limit` keeps
    its ends and the first diverging tensor with its neighbours, so a table of
    a deep network's hundred nodes still reads in one screen."""
    path = list(localization.get("path") or [])
    first = _first_diverging(localization)
    keep = set(range(len(path)))
    if len(path) > limit:
        ends = max(1, limit // 4)
        keep = set(range(ends)) | set(range(len(path) - ends, len(path)))
        if first is not None:
            keep |= {first - 1, first, first + 1}
    rows: list[dict[str, Any]] = []
    for i, entry in enumerate(path):
        if i not in keep:
            if rows and "skipped" in rows[-1]:
                rows[-1]["skipped"] += 1
            else:
                rows.append({"skipped": 1})
            continue
        rows.append({"position": i, "entry": entry, "first": i == first})
    return rows


def divergence_svg(localization: Mapping[str, Any] | None) -> str:
    """Error over magnitude along the path (log10 scale), a point per compared
    tensor: the line breaks where a tensor was not compared (a null is no
    number, not a zero), a zero sits on its own '0' line under the decades, a
    non-finite error at the top; the allowed error is a dashed line and the
    first diverging point is ringed. '' for an empty path."""
    path = list((localization or {}).get("path") or [])
    if not path:
        return ""
    from markupsafe import Markup, escape

    values = [_number(entry.get("normalized_error")) for entry in path]
    allowed = _number(localization.get("allowed"))
    scaled = [v for v in values + [allowed] if v is not None and math.isfinite(v) and v > 0]
    hi = math.ceil(math.log10(max(scaled))) if scaled else 0
    lo = math.floor(math.log10(min(scaled))) if scaled else hi - 8
    lo = min(max(lo, hi - 12), hi - 1)  # at most 12 decades: tinier errors sit on the bottom line
    left, top, height = 46, 16, 120
    span = min(640, max(300, 28 * (len(path) - 1)))  # points 28 px apart, spread over 300 to 640 px
    step = max(4.0, span / max(1, len(path) - 1))
    bottom = top + height
    zero_y, over_y = bottom + 14, top - 8
    width = int(left + 16 + step * max(1, len(path) - 1))

    def y_of(value: float) -> float:
        if value == 0:
            return zero_y
        if not math.isfinite(value):
            return over_y
        decade = min(hi, max(lo, math.log10(abs(value))))
        return bottom - height * (decade - lo) / (hi - lo)

    first = _first_diverging(localization)
    output = escape(localization.get("output") or "the output")
    parts = [f'<svg class="path-chart" width="{width}" height="{zero_y + 30}" viewBox="0 0 {width} {zero_y + 30}" '
             f'role="img" aria-label="error over magnitude along the path to {output}">']
    label_every = math.ceil((hi - lo + 1) / 7)
    for decade in range(lo, hi + 1):
        y = bottom - height * (decade - lo) / (hi - lo)
        parts.append(f'<line class="grid" x1="{left}" y1="{y:.1f}" x2="{width - 8}" y2="{y:.1f}"/>')
        if (hi - decade) % label_every == 0:
            parts.append(f'<text class="axis" x="{left - 4}" y="{y + 3:.1f}">1e{decade}</text>')
    if 0 in values:
        parts.append(f'<text class="axis" x="{left - 4}" y="{zero_y + 3}">0</text>')
    if any(v is not None and not math.isfinite(v) for v in values):
        parts.append(f'<text class="axis" x="{left - 4}" y="{over_y + 3}">∞</text>')
    if allowed is not None and math.isfinite(allowed) and allowed > 0:
        y = y_of(allowed)
        parts.append(f'<line class="allowed" x1="{left}" y1="{y:.1f}" x2="{width - 8}" y2="{y:.1f}"/>'
                     f'<text class="allowedlabel" x="{left + 3}" y="{y - 3:.1f}">allowed {escape(fmt(allowed))}</text>')
    points = [(left + 8 + i * step, None if v is None else y_of(v)) for i, v in enumerate(values)]
    segment: list[str] = []
    for x, y in points + [(0.0, None)]:  # the sentinel closes the last segment
        if y is not None:
            segment.append(f"{x:.1f},{y:.1f}")
            continue
        if len(segment) > 1:
            parts.append(f'<polyline class="err" points="{" ".join(segment)}"/>')
        segment = []
    for i, ((x, y), entry) in enumerate(zip(points, path)):
        name = f"{entry.get('tensor')} ({entry.get('op_type')})"
        if y is None:
            parts.append(f'<line class="gap" x1="{x:.1f}" y1="{bottom - 4}" x2="{x:.1f}" y2="{bottom + 4}">'
                         f'<title>{escape(name)}: not compared</title></line>')
            continue
        kind = "first" if i == first else ("diverged" if entry.get("diverged") else "agrees")
        parts.append(f'<circle class="{kind}" cx="{x:.1f}" cy="{y:.1f}" r="{5 if i == first else 3}">'
                     f'<title>{i}: {escape(name)}: {escape(fmt(entry.get("normalized_error")))}</title></circle>')
    if first is not None and points[first][1] is not None:
        x, y = points[first]
        name = str(path[first].get("tensor"))
        name = name if len(name) <= 32 else name[:31] + "…"
        anchor_at = "end" if x > width / 2 else "start"  # the label stays inside the chart
        parts.append(f'<text class="firstlabel" x="{x + (-8 if anchor_at == "end" else 8):.1f}" y="{y - 7:.1f}" '
                     f'text-anchor="{anchor_at}">first: {escape(name)}</text>')
    parts.append(f'<text class="caption" x="8" y="{zero_y + 24}">error / max|ref|, input to output; '
                 f'tick: not compared</text></svg>')
    return Markup("".join(parts))


def _ordered_provenance(provenance: Mapping[str, Any] | None) -> dict[str, Any]:
    if not isinstance(provenance, Mapping):
        return {}
    first = {k: provenance[k] for k in PROVENANCE_FIRST if k in provenance}
    return {**first, **{k: v for k, v in provenance.items() if k not in first}}


def _table_of_dicts(value: Any) -> tuple[list[str], dict[str, Mapping]] | None:
    """{row: {col: v}} as (columns, rows) when every value is a mapping."""
    if isinstance(value, Mapping) and value and all(isinstance(v, Mapping) for v in value.values()):
        columns: list[str] = []
        for row in value.values():
            columns += [k for k in row if k not in columns]
        return columns, dict(value)
    return None


def render_html(results: Mapping[str, Any]) -> str:
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("harness.report", "templates"),
                             autoescape=jinja2.select_autoescape(["html", "j2"]),
                             trim_blocks=True, lstrip_blocks=True)
    env.filters.update(num=fmt, secs=fmt_seconds, anchor=anchor, hist=histogram_svg,
                       provenance=_ordered_provenance, rows=_table_of_dicts, path_rows=path_rows,
                       divergence=divergence_svg)
    env.globals.update(cell_style=cell_style, timings=TIMINGS)
    env.tests["mapping"] = lambda v: isinstance(v, Mapping)
    env.tests["listlike"] = lambda v: isinstance(v, (list, tuple))
    cases = list(results.get("cases", {}).values())
    placed = [c for c in cases if c.get("source")]
    # A column where every case skipped (CUDA and TensorRT on a CPU machine) is left out of the
    # matrix, its cases' reasons on one line under it, so that the matrix fits a laptop's screen.
    shown = {_column(c) for c in placed if c.get("status") != "skipped"}
    folded = [c for c in placed if _column(c) not in shown]
    placed = [c for c in placed if _column(c) in shown]
    models = sorted({c["model"] for c in placed})
    columns = sorted(shown)
    cells = {(c["model"], _column(c)): c for c in placed}
    counts = {s: sum(1 for c in cases if c.get("status") == s) for s in STATUS_ORDER}
    ordered = sorted(cases, key=lambda c: (STATUS_ORDER.index(c["status"]) if c.get("status") in STATUS_ORDER else 9,
                                           c["id"]))
    environment = dict(results.get("environment") or {})
    return env.get_template("parity.html.j2").render(
        results=results, models=models, columns=columns, cells=cells, counts=counts, cases=ordered,
        folded_columns=sorted({_column(c) for c in folded}),
        folded_reasons=[(reason, len(skipped)) for reason, skipped in skip_reasons(folded)],
        unplaced=[c for c in cases if not c.get("source") and c.get("status") != "missing"],
        missing=[c for c in ordered if c.get("status") == "missing"], environment=environment,
        env_versions=environment.pop("versions", {}) or {})


def write_html_report(results: Mapping[str, Any], path: Path) -> Path:
    atomic_write_text(Path(path), render_html(results))
    return Path(path)
