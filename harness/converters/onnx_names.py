"""Renaming an ONNX graph's inputs and outputs to the spec's names, for the
converters whose tools name them otherwise (tf2onnx, mx2onnx), so that every
runtime binds by name."""

from __future__ import annotations

from typing import Sequence

from harness.errors import CaseError


def rename_values(graph, values, wanted: Sequence[str], kind: str, tool: str) -> dict[str, str]:
    """Rename the graph's inputs or outputs (`values`) to `wanted`; return
    {old: new} for those renamed.

    A value keeps its name when it already is a wanted one; tf2onnx's
    uniquified "NAME__1" maps back to NAME; what is left follows the traced
    function's order, which for its dict output is the keys' sorted order
    (tf.nest sorts dicts), not the spec's."""
    check_count(values, wanted, kind, tool)
    present = [v.name for v in values]
    mapping: dict[str, str] = {name: name for name in present if name in wanted}
    for name in present:
        base = name.split("__")[0]
        if name not in mapping and base in wanted and base not in mapping.values():
            mapping[name] = base
    left_old = [name for name in present if name not in mapping]
    left_new = sorted(name for name in wanted if name not in mapping.values())
    mapping.update(zip(left_old, left_new))
    renamed: dict[str, str] = {}
    for old, new in mapping.items():
        if old == new:
            continue
        if new in all_names(graph):  # make room: some other tensor already has the name
            rename_tensor(graph, new, fresh_name(graph, new))
        rename_tensor(graph, old, new)
        renamed[old] = new
    return renamed


def check_count(values, wanted: Sequence[str], kind: str, tool: str) -> None:
    """The converted graph must have as many inputs (or outputs) as the spec.

    The converters hand their tool a model that takes and returns exactly the
    spec's tensors (a traced function with the spec's signature, an exported
    block run on one example per spec input), so a difference is the tool's
    doing: an input more is typically a value the model holds (a constant, a
    parameter) that the tool made a graph input. The message names those
    values and says whose fault it is, rather than suggesting the spec is short."""
    if len(values) == len(wanted):
        return
    present = [v.name for v in values]
    unmatched = [name for name in present if name not in wanted and name.split("__")[0] not in wanted]
    if len(values) > len(wanted):
        surplus = len(values) - len(wanted)
        which = (f"{unmatched}" if len(unmatched) == surplus
                 else f"{surplus} of {unmatched or present}")
        raise CaseError("convert", f"{tool} added {kind}(s) to the converted graph: {which}. The model it was given "
                                   f"has exactly the spec's {len(wanted)} {kind}(s) {list(wanted)}, the graph has "
                                   f"{len(values)}: {present}. This is a converter fault, not a short spec "
                                   "(an added input is usually a value the model holds, such as a constant, that "
                                   "the converter did not fold into the graph).")
    missing = [name for name in wanted if name not in present]
    raise CaseError("convert", f"{tool} dropped {kind}(s) from the converted graph: it has {len(values)} {present} "
                               f"where the model it was given has the spec's {len(wanted)} {list(wanted)} (not "
                               f"in the graph by name: {missing}). This is a converter fault: an input the model "
                               "does not use may have been pruned.")


def all_names(graph) -> set[str]:
    names = {v.name for v in graph.input} | {v.name for v in graph.output} | {t.name for t in graph.initializer}
    for node in graph.node:
        names.update(node.input)
        names.update(node.output)
        for attribute in node.attribute:
            for sub in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
                names |= all_names(sub)
    return names


def fresh_name(graph, base: str) -> str:
    taken = all_names(graph)
    index = 1
    while f"{base}__{index}" in taken:
        index += 1
    return f"{base}__{index}"


def rename_tensor(graph, old: str, new: str) -> None:
    """Rename tensor `old` to `new` everywhere in `graph`, subgraphs included
    (they may read the outer graph's tensors)."""
    for collection in (graph.input, graph.output, graph.value_info, graph.initializer):
        for value in collection:
            if value.name == old:
                value.name = new
    for node in graph.node:
        for field in (node.input, node.output):
            for index, name in enumerate(field):
                if name == old:
                    field[index] = new
        for attribute in node.attribute:
            for sub in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
                rename_tensor(sub, old, new)
