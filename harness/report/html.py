"""The HTML report: one self-contained file rendered from the results JSON.

No network: the CSS, the few lines of script (open the drill-down a matrix cell
links to) and the histograms (inline SVG) are all in the file.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Mapping

from harness.results import atomic_write_text

STATUS_ORDER = ("failed", "error", "inconclusive", "passed", "skipped")
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
                       provenance=_ordered_provenance, rows=_table_of_dicts)
    env.globals.update(cell_style=cell_style, timings=TIMINGS)
    env.tests["mapping"] = lambda v: isinstance(v, Mapping)
    env.tests["listlike"] = lambda v: isinstance(v, (list, tuple))
    cases = list(results.get("cases", {}).values())
    placed = [c for c in cases if c.get("source")]
    models = sorted({c["model"] for c in placed})
    columns = sorted({_column(c) for c in placed})
    cells = {(c["model"], _column(c)): c for c in placed}
    counts = {s: sum(1 for c in cases if c.get("status") == s) for s in STATUS_ORDER}
    ordered = sorted(cases, key=lambda c: (STATUS_ORDER.index(c["status"]) if c.get("status") in STATUS_ORDER else 9,
                                           c["id"]))
    environment = dict(results.get("environment") or {})
    return env.get_template("parity.html.j2").render(
        results=results, models=models, columns=columns, cells=cells, counts=counts, cases=ordered,
        unplaced=[c for c in cases if not c.get("source")], environment=environment,
        env_versions=environment.pop("versions", {}) or {})


def write_html_report(results: Mapping[str, Any], path: Path) -> Path:
    atomic_write_text(Path(path), render_html(results))
    return Path(path)
