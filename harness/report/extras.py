"""A case's numbers for the reports of the pytest ecosystem: JUnit XML
properties (what CI systems show) and the per-output table pytest-html adds
to the case's row."""

from __future__ import annotations

import html
from typing import Any, Mapping

from harness.results import to_jsonable

OUTPUT_METRICS = ("error_ratio", "normalized_error", "max_abs", "max_rel", "mean_abs", "rmse", "cosine", "snr_db",
                  "top1_agreement", "topk_overlap", "max_ulp")


def junit_properties(record: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """(name, value) pairs: the case's status and worst errors, where its values
    first diverge (a localized failure), then each output's metrics; plain Python
    values (pytest-xdist sends them between processes)."""
    return [(name, to_jsonable(value)) for name, value in _properties(record)]


def _properties(record: Mapping[str, Any]) -> list[tuple[str, Any]]:
    properties: list[tuple[str, Any]] = [("parity_status", record.get("status"))]
    for key in ("worst_error_ratio", "worst_normalized_error", "examples", "shrink_steps", "first_failure_at", "stage"):
        if record.get(key) is not None:
            properties.append((key, record[key]))
    localization = record.get("localization") or {}
    first = localization.get("first") or {}
    for key, name in (("node", "localized_node"), ("op_type", "localized_op"), ("layer", "localized_layer"),
                      ("normalized_error", "localized_error")):
        if first.get(key) is not None:
            properties.append((name, first[key]))
    if (localization.get("repro") or {}).get("command"):
        properties.append(("repro", localization["repro"]["command"]))
    for name, output in (record.get("outputs") or {}).items():
        for metric in OUTPUT_METRICS:
            if output.get(metric) is not None:
                properties.append((f"{name}.{metric}", output[metric]))
        noise = output.get("noise") or {}
        if noise.get("error_over_noise") is not None:
            properties.append((f"{name}.error_over_noise", noise["error_over_noise"]))
        if output.get("accepted_by"):
            properties.append((f"{name}.accepted_by", output["accepted_by"]))
        if output.get("failed_thresholds"):
            properties.append((f"{name}.failed_thresholds", ",".join(output["failed_thresholds"])))
        sensitivity = output.get("sensitivity") or {}
        if sensitivity.get("ratio") is not None:
            properties.append((f"{name}.input_sensitivity", sensitivity["ratio"]))
    return properties


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return html.escape("-" if value is None else str(value))


def outputs_table_html(record: Mapping[str, Any]) -> str:
    """The per-output metrics beside their tolerances, as an HTML table."""
    outputs = record.get("outputs") or {}
    if not outputs:
        return f"<p>{html.escape(record.get('status', ''))}: {html.escape(record.get('message') or '')}</p>"
    head = "".join(f"<th>{h}</th>" for h in ("output", "verdict", *OUTPUT_METRICS, "atol", "rtol", "atol_by_max"))
    rows = []
    for name, output in outputs.items():
        tolerance = output.get("tolerance") or {}
        verdict = ("pass (noise)" if output.get("accepted_by") == "noise" else "pass") if output.get("passed") else "fail"
        if output.get("failed_thresholds"):
            verdict += f" ({', '.join(output['failed_thresholds'])})"
        if (output.get("sensitivity") or {}).get("inconclusive"):
            verdict += ", inconclusive"
        cells = [html.escape(name), verdict]
        cells += [_cell(output.get(metric)) for metric in OUTPUT_METRICS]
        cells += [_cell(tolerance.get(key)) for key in ("atol", "rtol", "atol_by_max")]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return f'<table class="parity-outputs"><tr>{head}</tr>{"".join(rows)}</table>'
