"""One run out of the parity.json files of its shards (CI jobs on machines of different kinds).

    merge_shards(paths, prefer_newest, expected)   the merged results, ready to write
    write_expected_cases(path, ids)                the whole matrix's case ids (`pytest --parity --collect-only`)
    load_expected_cases(path)                      read them back (--expect)
    python -m harness merge SHARD.json... -o parity.json [--html parity.html] [--prefer=newest] [--expect=CASES.json]

The merged file is a parity.json of the usual schema, so the HTML report, the gate
(`--parity-baseline`, `python -m harness diff`) and `diff` read it unchanged. What
differs is where the environment lives: each shard ran on its own machine, so
`shards` holds each input's environment (versions, CPU, GPU, driver), run options and
times, keyed by the file as named on the command line; every case names its own under
`shard`; and the run's `environment` keeps only what all the shards share, so that
`diff` reports a version change of the whole run there and the rest per case (every
record carries its own `versions`).

A case id recorded by two shards with different records is refused, unless
`prefer_newest`: the record that finished later (its `finished` time; a record of an
older harness has none and counts as its file's `updated`) is kept. Identical records
are one case. An expected case no readable shard recorded is a record of status
"missing", which the gate fails (report/baseline.py): a shard that died before writing
anything shows as what it did not run, not as a smaller matrix. The shards of one split
(`--parity-shard=K/N`, in each file's run header) must all be there and split one
collection: a shard no input holds is named ("2/3"; with `--expect` its cases are the
missing ones), and shards of N split from different collections, or balanced by different
durations, are refused.

Pure Python: no pytest, no deep-learning framework.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping

from harness.report.baseline import MISSING, BaselineError, load_baseline
from harness.results import SCHEMA, atomic_write_text
from harness.user_json import UserJSONError, read_user_json

EXPECTED_CASES_FILE = "expected-cases.json"   # written in --parity-reports by `pytest --parity --collect-only`
EXPECTED_KIND = "parity expected cases"
HEADER_TIME = "%Y-%m-%dT%H:%M:%S%z"           # how results.py stamps a file's started and updated


class MergeError(Exception):
    """Inputs that cannot be merged into one run (one line, naming the files)."""


@dataclass
class Merged:
    results: dict[str, Any]
    unreadable: list[str] = field(default_factory=list)   # one line per input that is no parity.json
    missing: list[str] = field(default_factory=list)      # expected case ids no shard recorded
    missing_shards: list[str] = field(default_factory=list)   # "K/N" of a split that no input holds


def write_expected_cases(path: Path, case_ids: Iterable[str]) -> Path:
    """The case ids of a whole matrix, for `merge --expect`: the collection of an unsharded run."""
    data = {"kind": EXPECTED_KIND, "schema": SCHEMA, "written": time.strftime(HEADER_TIME), "cases": list(case_ids)}
    atomic_write_text(Path(path), json.dumps(data, indent=1))
    return Path(path)


def load_expected_cases(path: Path) -> list[str]:
    """The case ids write_expected_cases wrote; MergeError, one line naming the file, for anything else."""
    try:
        data = read_user_json(Path(path))
    except UserJSONError as error:
        raise MergeError(f"--expect: {error}") from None
    if (not isinstance(data, dict) or data.get("kind") != EXPECTED_KIND or not isinstance(data.get("cases"), list)
            or not all(isinstance(case_id, str) for case_id in data["cases"])):
        raise MergeError(f"--expect: {path} is not a list of expected cases: write one with pytest --parity "
                         f"--collect-only and the whole matrix's options (it goes to REPORTS/{EXPECTED_CASES_FILE})")
    return data["cases"]


def _finish_time(record: Mapping[str, Any], shard: Mapping[str, Any]) -> datetime:
    """When the record was finished: its own time, else its file's last update, else never."""
    for text, form in ((record.get("finished"), None), (shard.get("updated"), HEADER_TIME)):
        if isinstance(text, str):
            try:
                return datetime.fromisoformat(text) if form is None else datetime.strptime(text, form)
            except ValueError:
                continue
    return datetime.min.replace(tzinfo=timezone.utc)


def _shared_environment(environments: list[Mapping[str, Any]]) -> dict[str, Any]:
    """What every shard's environment says alike, versions one by one."""
    if not environments:
        return {"versions": {}}
    first, rest = environments[0], environments[1:]
    shared = {key: value for key, value in first.items()
              if key != "versions" and all(env.get(key) == value for env in rest)}
    versions = first.get("versions") or {}
    shared["versions"] = {name: version for name, version in versions.items()
                          if all((env.get("versions") or {}).get(name) == version for env in rest)}
    return shared


def _short_hash(value: Any) -> str:
    """A header's sha256 as a message quotes it; null (no durations) as JSON writes it."""
    return "null" if value is None else f"{str(value)[:12]}..."


def missing_shards(shards: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """"K/N" for each shard of a split (the inputs whose run header says `shard` of N) that no input
    holds; MergeError where two shards of N were split from different collections (their
    `collected_sha256`) or balanced by different durations (their `durations_sha256`): they are no
    one split, and their cases would overlap or fall between them."""
    splits: dict[int, tuple[str, str, set[int]]] = {}   # N -> (collected_sha256, the first file, its indexes)
    balances: dict[int, tuple[str | None, str]] = {}     # N -> (durations_sha256, the first file saying it)
    for label, shard in shards.items():
        header = (shard.get("run") or {}).get("shard")
        if not isinstance(header, dict) or not isinstance(header.get("count"), int):
            continue   # an unsharded run (the GPU job) or a file of an older harness: nothing to complete
        count, index, collected = header["count"], header.get("index"), header.get("collected_sha256")
        first_collected, first_label, indexes = splits.setdefault(count, (collected, label, set()))
        if collected != first_collected:
            raise MergeError(f"{first_label} and {label} are shards of {count} split from different collections "
                             f"(collected_sha256 {_short_hash(first_collected)} and {_short_hash(collected)}): run "
                             f"every shard of one split with the same matrix options")
        if "durations_sha256" in header:   # a file of an older harness does not say: nothing to hold it to
            durations = header["durations_sha256"]
            first_durations, balanced_label = balances.setdefault(count, (durations, label))
            if durations != first_durations:
                raise MergeError(f"{balanced_label} and {label} are shards of {count} balanced by different durations "
                                 f"(durations_sha256 {_short_hash(first_durations)} and {_short_hash(durations)}): "
                                 f"give every shard the same --parity-durations file")
        indexes.add(index)
    return [f"{index}/{count}" for count, (_, _, indexes) in sorted(splits.items())
            for index in range(1, count + 1) if index not in indexes]


def merge_shards(paths: list[Path], prefer_newest: bool = False, expected: list[str] | None = None) -> Merged:
    """One run out of the shards' results files. An input that cannot be read is
    named in `unreadable` and left out; MergeError where two shards disagree on a case."""
    shards: dict[str, dict[str, Any]] = {}
    unreadable: list[str] = []
    for path in paths:
        label = str(path)
        if label in shards:   # the same file named twice: its records are identical
            continue
        try:
            shards[label] = load_baseline(Path(path))
        except BaselineError as error:
            unreadable.append(str(error))
    kept: dict[str, tuple[dict[str, Any], str]] = {}
    for label, shard in shards.items():
        for case_id, record in shard["cases"].items():
            if case_id in kept:
                earlier, earlier_label = kept[case_id]
                if earlier == record:
                    continue
                if not prefer_newest:
                    raise MergeError(f"case {case_id} is in {earlier_label} and in {label} with different records: "
                                     f"pass --prefer=newest to keep the later one")
                if _finish_time(record, shard) < _finish_time(earlier, shards[earlier_label]):
                    continue
            kept[case_id] = (record, label)
    absent_shards = missing_shards(shards)
    expected = list(expected or [])
    listed = set(expected)
    order = expected + [case_id for case_id in kept if case_id not in listed]
    why = (f"; unreadable: {'; '.join(unreadable)}" if unreadable else "") + (
        f"; no input holds shard {', '.join(absent_shards)}" if absent_shards else "")
    cases: dict[str, Any] = {}
    missing: list[str] = []
    for case_id in order:
        if case_id in kept:
            record, label = kept[case_id]
            cases[case_id] = {**record, "shard": label}
        else:
            missing.append(case_id)
            cases[case_id] = {"id": case_id, "status": MISSING,
                              "message": f"no shard recorded this case, which the whole matrix holds{why}"}
    inputs = list(shards.values())
    results = {
        "schema": SCHEMA,
        "started": min((s.get("started", "") for s in inputs), default=""),
        "updated": max((s.get("updated", "") for s in inputs), default=""),
        "environment": _shared_environment([s.get("environment") or {} for s in inputs]),
        "run": {"merged": [str(path) for path in paths],
                **({"missing_shards": absent_shards} if absent_shards else {})},
        "shards": {label: {"environment": shard.get("environment") or {}, "run": shard.get("run") or {},
                           "started": shard.get("started"), "updated": shard.get("updated"),
                           "cases": len(shard["cases"]),
                           **({"shard": shard["shard"]} if "shard" in shard else {})}
                   for label, shard in shards.items()},
        "cases": cases,
    }
    return Merged(results, unreadable, missing, absent_shards)
