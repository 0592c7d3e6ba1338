"""A TensorFlow graph's ops held against a denylist before it is loaded, as
`saved_model_cli scan` does: ops that touch files, the network or Python make
a SavedModel or a frozen GraphDef a file that needs `--trust-model-code`.

`saved_model_cli scan` (tensorflow/python/tools/saved_model_cli.py) denies
WriteFile, ReadFile and PrintV2, and looks at the top-level graph only; the
ops of a TF2 SavedModel live in its function library, so every function is
scanned here, and the list is extended (DENYLIST, grouped by what the ops do).

The saver. Every SavedModel carries the functions its `saver_def` names
(`_traced_save`, `_traced_restore`), with SaveV2, RestoreV2 and
MergeV2Checkpoints in them (a TF1 SavedModel: the `save/` nodes). Those three
ops are let through in what only the saver reaches (the saver's nodes and the
functions they call, and not reached from anything else), and only those: the
harness never saves, so SaveV2 and MergeV2Checkpoints never run, and a
RestoreV2 that a crafted saver pointed elsewhere would read a checkpoint, which
yields tensors only. Everything else is scanned, not only what the serving
signature reaches: a SavedModel's initializers (table initializers,
`__saved_model_init_op`) run at load, before any signature is called.

A frozen GraphDef has no saver: all of it is scanned, including nodes the
outputs asked for do not need (a graph with such ops is not one to run unasked).

A denylist is incomplete by nature: an op added to TensorFlow later, or one
from a custom op library, is not on it. A graph that needs an op this
TensorFlow does not have fails to load anyway.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

_FILES = {
    # saved_model_cli's own list (PrintV2 only where it prints to a file: see _dangerous)
    "WriteFile", "ReadFile", "PrintV2",
    # checkpoints, file listing, memory-mapped files, vocabulary files
    "MatchingFiles", "Save", "SaveV2", "SaveSlices", "Restore", "RestoreV2", "RestoreSlice", "MergeV2Checkpoints",
    "ImmutableConst", "InitializeTableFromTextFile", "InitializeTableFromTextFileV2", "LoadAndRemapMatrix",
    "GenerateVocabRemapping", "Skipgram", "RecordInput", "FileSystemSetConfiguration",
    # the TF1 readers and the tf.data sources and sinks that open files
    "WholeFileReader", "WholeFileReaderV2", "TextLineReader", "TextLineReaderV2", "FixedLengthRecordReader",
    "FixedLengthRecordReaderV2", "TFRecordReader", "TFRecordReaderV2", "LMDBReader", "TFRecordDataset",
    "TFRecordDatasetV2", "TextLineDataset", "FixedLengthRecordDataset", "FixedLengthRecordDatasetV2", "CSVDataset",
    "CSVDatasetV2", "ExperimentalCSVDataset", "SqlDataset", "ExperimentalSqlDataset", "LMDBDataset",
    "ExperimentalLMDBDataset", "MatchingFilesDataset", "ExperimentalMatchingFilesDataset", "SnapshotDataset",
    "SnapshotDatasetV2", "SnapshotChunkDataset", "SnapshotDatasetReader", "SnapshotNestedDatasetReader",
    "ListSnapshotChunksDataset", "SaveDataset", "SaveDatasetV2", "LoadDataset", "DatasetToTFRecord",
    "ExperimentalDatasetToTFRecord", "DistributedSave",
    # summaries and debug dumps, written to files (or sent to a URL)
    "CreateSummaryFileWriter", "CreateSummaryDbWriter", "WriteSummary", "WriteScalarSummary",
    "WriteHistogramSummary", "WriteImageSummary", "WriteAudioSummary", "WriteGraphSummary", "WriteRawProtoSummary",
    "ImportEvent", "DebugIdentity", "DebugIdentityV2", "DebugIdentityV3", "DebugNanCount", "DebugNumericSummary",
    # protobuf codecs whose descriptor_source may name a file
    "DecodeProtoV2", "EncodeProto",
}
_PYTHON = {"PyFunc", "PyFuncStateless", "EagerPyFunc"}
_NETWORK = {"RpcClient", "RpcCall", "RpcServer", "RpcServerStart", "RpcServerRegister", "RemoteCall"}
DENYLIST = _FILES | _PYTHON | _NETWORK

# Allowed in what only the SavedModel's saver reaches (see the module docstring).
SAVER_OPS = {"SaveV2", "RestoreV2", "MergeV2Checkpoints"}


@dataclass(frozen=True)
class Finding:
    """One denylisted op: its type, its node, and the function holding it (None: the top-level graph)."""

    op: str
    node: str
    function: str | None

    def __str__(self) -> str:
        where = f" in function {self.function!r}" if self.function else ""
        return f"{self.op} (node {self.node!r}{where})"


def scan_saved_model(saved_model: Any) -> list[Finding]:
    """The denylisted ops of a `saved_model_pb2.SavedModel`, in every meta graph."""
    findings: list[Finding] = []
    for meta_graph in saved_model.meta_graphs:
        saver = meta_graph.saver_def
        saver_roots = {_op_name(saver.save_tensor_name), _op_name(saver.restore_op_name)} - {""}
        graph = meta_graph.graph_def
        functions = {f.signature.name: f for f in graph.library.function}
        saver_nodes, saver_functions = _reach(graph.node, saver_roots, functions)
        other_roots = {node.name for node in graph.node} - saver_nodes
        _, other_functions = _reach(graph.node, other_roots, functions)
        other_functions |= set(meta_graph.object_graph_def.concrete_functions)
        saver_only = saver_functions - _called(other_functions, functions)
        findings += [f for f in _scan(graph.node, None) if not (f.node in saver_nodes and f.op in SAVER_OPS)]
        for name, function in functions.items():
            findings += [f for f in _scan(function.node_def, name) if not (name in saver_only and f.op in SAVER_OPS)]
    return _unique(findings)


def scan_graph_def(graph_def: Any) -> list[Finding]:
    """The denylisted ops of a `GraphDef`: its nodes and every function of its library."""
    findings = list(_scan(graph_def.node, None))
    for function in graph_def.library.function:
        findings += _scan(function.node_def, function.signature.name)
    return _unique(findings)


def describe(findings: list[Finding], limit: int = 5) -> str:
    """The findings in one line, the first `limit` named."""
    named = ", ".join(str(f) for f in findings[:limit])
    more = f" and {len(findings) - limit} more" if len(findings) > limit else ""
    return named + more


def _scan(nodes: Iterable[Any], function: str | None) -> Iterator[Finding]:
    for node in nodes:
        if node.op in DENYLIST and _dangerous(node):
            yield Finding(node.op, node.name, function)


def _dangerous(node: Any) -> bool:
    """PrintV2 (tf.print) writes to stderr unless its output_stream names a file."""
    if node.op == "PrintV2":
        return node.attr["output_stream"].s.decode(errors="replace").startswith("file://")
    return True


def _op_name(tensor_name: str) -> str:
    return tensor_name.split(":")[0].lstrip("^")


def _reach(nodes: Iterable[Any], roots: set[str], functions: dict[str, Any]) -> tuple[set[str], set[str]]:
    """The top-level nodes `roots` depend on (through data and control
    inputs), and the functions those nodes call, transitively."""
    by_name = {node.name: node for node in nodes}
    reached = _closure((name for name in roots if name in by_name),
                       lambda name: [_op_name(i) for i in by_name[name].input if _op_name(i) in by_name])
    called = {f for name in reached for f in _functions_named(by_name[name].attr)}
    called |= {by_name[name].op for name in reached if by_name[name].op in functions}  # a function called as an op
    return reached, _called(called, functions)


def _called(names: set[str], functions: dict[str, Any]) -> set[str]:
    """`names` and every library function they call, transitively."""
    def callees(name: str) -> list[str]:
        nodes = functions[name].node_def
        # functions named in attributes, and functions called as an op
        return [f for node in nodes for f in _functions_named(node.attr) if f in functions] + \
               [node.op for node in nodes if node.op in functions]

    return _closure((name for name in names if name in functions), callees) | {n for n in names if n not in functions}


def _closure(start: Iterable[str], successors: Callable[[str], list[str]]) -> set[str]:
    """Every name reachable from `start` through `successors`, `start` included."""
    seen: set[str] = set()
    todo = list(start)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += successors(name)
    return seen


def _functions_named(attrs: Any) -> Iterator[str]:
    """The functions a node's attributes name (`f` of a call, `body`, `then_branch`, ...)."""
    for value in attrs.values():
        if value.HasField("func"):
            yield value.func.name
        elif value.HasField("list"):
            yield from (f.name for f in value.list.func)


def _unique(findings: list[Finding]) -> list[Finding]:
    return list(dict.fromkeys(findings))
