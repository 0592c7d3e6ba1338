"""The HTML report: one self-contained file rendered from the results JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from harness.results import atomic_write_text

STATUS_ORDER = ("failed", "error", "passed", "skipped")


def _column(case: Mapping[str, Any]) -> str:
    parts = f"{case['source']} → {case['target']} / {case['device']}"
    return parts + (f" / {case['variant']}" if case.get("variant") else "")


def render_html(results: Mapping[str, Any]) -> str:
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("harness.report", "templates"),
                             autoescape=jinja2.select_autoescape(["html", "j2"]))
    env.filters["num"] = lambda v: f"{v:.3g}" if isinstance(v, (int, float)) and not isinstance(v, bool) else ("-" if v is None else v)
    cases = list(results.get("cases", {}).values())
    models = sorted({c["model"] for c in cases})
    columns = sorted({_column(c) for c in cases if c.get("source")})
    cells = {(c["model"], _column(c)): c for c in cases if c.get("source")}
    counts = {s: sum(1 for c in cases if c["status"] == s) for s in STATUS_ORDER}
    ordered = sorted(cases, key=lambda c: (STATUS_ORDER.index(c["status"]) if c["status"] in STATUS_ORDER else 9, c["id"]))
    return env.get_template("parity.html.j2").render(
        results=results, models=models, columns=columns, cells=cells, counts=counts, cases=ordered,
        unplaced=[c for c in cases if not c.get("source")])


def write_html_report(results: Mapping[str, Any], path: Path) -> Path:
    atomic_write_text(Path(path), render_html(results))
    return Path(path)
