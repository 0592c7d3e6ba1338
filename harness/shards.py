"""One share of a run's parity cases, for a CI job matrix (`--parity-shard=K/N`).

The split is greedy longest-processing-time: cases by decreasing expected
duration (ties by case id) each go to the shard with the least expected time so
far (ties by the lower index). It depends only on the case ids and the
durations file, never on hash seeds, dict order or what is installed, so every
job of a matrix computes the same split and each case falls in exactly one
shard. Durations are the `duration_s` of a previous run's parity.json records
(`--parity-durations`); a case it does not hold counts as the median of those it
does, and with none known every case counts alike. Knows nothing of pytest.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from harness.errors import OptionError
from harness.results import load_results

DURATIONS_EXAMPLE = "--parity-durations=reports/parity.json (the parity.json of an earlier run)"


@dataclass(frozen=True)
class Shard:
    """The cases of shard `index` (1-based) of `count`, out of `collected` ids."""

    index: int
    count: int
    case_ids: frozenset[str]
    collected: tuple[str, ...]
    expected_s: float | None   # the shard's expected duration; None where no duration was known
    # A hash of the (case id, seconds) pairs the split was balanced by; None where no collected case had one.
    durations_sha256: str | None

    def header(self) -> dict[str, Any]:
        """What parity.json's run header says of the shard, so that a merge can check that
        the shards it holds are every shard of one split: one collection, one set of durations."""
        return {"index": self.index, "count": self.count, "cases": len(self.case_ids),
                "collected": len(set(self.collected)),
                "collected_sha256": hashlib.sha256("\n".join(sorted(set(self.collected))).encode()).hexdigest(),
                "durations_sha256": self.durations_sha256,
                "expected_s": None if self.expected_s is None else round(self.expected_s, 3)}


def nothing_to_run(header: Mapping[str, Any]) -> str | None:
    """The line of a job whose shard (parity.json's run header, Shard.header) the split left with none of
    the cases collected: its share is empty, its configuration right. None where it holds cases, or where
    none was collected (`-k` matching nothing: a mistake pytest's exit 5 should still show)."""
    if header.get("cases") or not header.get("collected"):
        return None
    return (f"shard {header['index']}/{header['count']} holds none of the {header['collected']} parity cases "
            f"collected: nothing to run here")


def read_durations(path: Path) -> dict[str, float]:
    """case id -> seconds, from the records of a parity.json; OptionError, one line
    naming the option, for a file that cannot be read or is not a parity.json."""
    try:
        data = load_results(path)
    except ValueError as error:   # UserJSONError: missing, a folder, past its budget, not JSON
        raise OptionError(f"--parity-durations={path}: {error}; give e.g. {DURATIONS_EXAMPLE}") from None
    cases = data.get("cases") if isinstance(data, dict) else None
    if not isinstance(cases, dict) or not all(isinstance(record, dict) for record in cases.values()):
        raise OptionError(f"--parity-durations={path}: not a parity.json (it has no \"cases\" object of case "
                          f"records); give e.g. {DURATIONS_EXAMPLE}")
    # A record without a finite duration (written by an older harness, or cut short) is a case not known.
    return {case_id: float(record["duration_s"]) for case_id, record in cases.items()
            if isinstance(record.get("duration_s"), (int, float)) and not isinstance(record["duration_s"], bool)
            and math.isfinite(record["duration_s"]) and record["duration_s"] >= 0}


def case_costs(case_ids: Sequence[str], durations: Mapping[str, float]) -> dict[str, float]:
    """Each case's expected seconds: its recorded duration, else the median of the
    recorded ones among `case_ids` (the run's own cases: a GPU job's durations in the
    file do not weigh on a CPU job's); 1.0 each where none is recorded."""
    known = [durations[case_id] for case_id in set(case_ids) if case_id in durations]
    fallback = statistics.median(known) if known else 1.0
    return {case_id: durations.get(case_id, fallback) for case_id in case_ids}


def assign_shards(costs: Mapping[str, float], count: int) -> list[list[str]]:
    """The case ids of each of `count` shards, by greedy longest-processing-time."""
    bins: list[list[str]] = [[] for _ in range(count)]
    loads = [(0.0, index) for index in range(count)]   # a heap of (expected seconds, shard index)
    for case_id in sorted(costs, key=lambda c: (-costs[c], c)):
        load, index = heapq.heappop(loads)
        bins[index].append(case_id)
        heapq.heappush(loads, (load + costs[case_id], index))
    return bins


def select_shard(case_ids: Sequence[str], durations: Mapping[str, float], index: int, count: int) -> Shard:
    """Shard `index` (1-based) of `count` of `case_ids`."""
    costs = case_costs(case_ids, durations)
    chosen = assign_shards(costs, count)[index - 1]
    # Only the collected cases' durations decide the split, so only theirs are hashed: two jobs whose files
    # differ elsewhere (a GPU job's cases) still compute one split.
    used = sorted((case_id, durations[case_id]) for case_id in costs if case_id in durations)
    return Shard(index, count, frozenset(chosen), tuple(case_ids),
                 sum(costs[c] for c in chosen) if used else None,
                 hashlib.sha256(json.dumps(used).encode()).hexdigest() if used else None)
