"""The record ledger: what became of every input record, read from the streams themselves.

The promise under test: every input record ends as exactly one prediction event or exactly one dead-letter
event; a record may be written again only by a batch that was not checkpointed, and its copies carry the same
``event_id`` (``<shard>:<sequence number>:<sub-sequence number>``, :func:`consumer.pipeline.events.event_id`), so
downstream can drop them. The ledger reads the input, prediction and dead-letter streams from TRIM_HORIZON
(:class:`~consumer.tools.tail.StreamReader`, parents before children), matches the events to the input records by
event id and gives every input record one :class:`Outcome`, with the number of copies found.

It also checks what the ids alone cannot show:

- *mismatched*: an event whose content does not belong to its input record (a prediction for another
  ``ride_id``, a dead letter whose ``payload_sha256`` is not the input's);
- *differing copies*: copies of one id whose bytes differ (a replay by another model version does that);
- *unmatched*: events whose id names no input record of this stream;
- *order*: after a resharding, every event of a parent shard precedes every event of its children in each
  output shard (the daemon starts a child only once its parent is checkpointed at SHARD_END).

The ledger assumes one user record per Kinesis record (sub-sequence 0), as the replayer and the seed's producer
write them; KPL-aggregated input would show up as unmatched sub-sequence numbers. It reads whole streams, so it
is a tool for tests and for operators looking at a bounded stream, not a monitor for a stream of millions.

:func:`read_ledger` reads the streams; :func:`build_ledger` is the pure part, for tests.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import orjson

from consumer.errors import ConsumerError
from consumer.runtime.aws import KinesisClient
from consumer.tools.streams import list_shards
from consumer.tools.tail import StreamReader, TailedRecord

__all__ = [
    "Ledger",
    "LedgerError",
    "Outcome",
    "RecordFate",
    "build_ledger",
    "format_ledger",
    "read_ledger",
    "read_stream",
    "shard_parents",
]


class LedgerError(ConsumerError):
    """A stream could not be read to its end."""


class Outcome(StrEnum):
    """What became of one input record (copies are counted apart: see :attr:`RecordFate.copies`)."""

    PREDICTED = "predicted"
    DEAD_LETTERED = "dead_lettered"
    #: Both a prediction and a dead letter: a replay decided differently (e.g. the record went stale meanwhile).
    CONFLICTING = "conflicting"
    MISSING = "missing"
    #: No event yet, but the record arrived less than ``settle`` ago: a running consumer is still on it.
    IN_FLIGHT = "in_flight"


@dataclass(frozen=True, slots=True)
class RecordFate:
    """One input record and the events found for it."""

    event_id: str
    shard_id: str
    sequence_number: str
    outcome: Outcome
    predictions: int
    dead_letters: int
    reason: str | None = None

    @property
    def copies(self) -> int:
        return self.predictions + self.dead_letters

    @property
    def duplicated(self) -> bool:
        return self.copies > 1


@dataclass(frozen=True)
class Ledger:
    """Every input record's fate, in input order, and the checks that span records."""

    records: tuple[RecordFate, ...]
    unmatched: tuple[str, ...] = ()
    mismatched: tuple[str, ...] = ()
    differing: tuple[str, ...] = ()
    undecodable: int = 0
    order_violations: tuple[str, ...] = ()
    reasons: Mapping[str, int] = field(default_factory=dict)

    def ids(self, outcome: Outcome) -> list[str]:
        return [fate.event_id for fate in self.records if fate.outcome is outcome]

    @property
    def duplicated(self) -> list[str]:
        return [fate.event_id for fate in self.records if fate.duplicated]

    @property
    def counts(self) -> dict[str, int]:
        """The figures: ``in``, one per :class:`Outcome`, ``duplicated`` (records with more than one event),
        ``extra_copies`` (events beyond the first), and the cross-record checks."""
        outcomes = Counter(fate.outcome for fate in self.records)
        return {
            "in": len(self.records),
            **{outcome.value: outcomes[outcome] for outcome in Outcome},
            "duplicated": len(self.duplicated),
            "extra_copies": sum(fate.copies - 1 for fate in self.records if fate.copies > 1),
            "differing_copies": len(self.differing),
            "unmatched": len(self.unmatched),
            "mismatched": len(self.mismatched),
            "undecodable": self.undecodable,
            "order_violations": len(self.order_violations),
        }

    @property
    def sound(self) -> bool:
        """No record lost or decided twice, every event belongs to its record, order kept. Duplicates are allowed
        (at-least-once), and so are records still in flight."""
        counts = self.counts
        problems = (Outcome.CONFLICTING.value, Outcome.MISSING.value, "unmatched", "mismatched", "undecodable")
        return not any(counts[name] for name in (*problems, "order_violations"))

    @property
    def complete(self) -> bool:
        """Sound, and every record has its event (none in flight)."""
        return self.sound and not self.counts[Outcome.IN_FLIGHT.value]

    def as_dict(self, *, examples: int = 10) -> dict[str, Any]:
        """The counts, the dead-letter reasons and up to ``examples`` ids of each kind of problem."""
        return {
            "counts": self.counts,
            "reasons": dict(sorted(self.reasons.items())),
            "sound": self.sound,
            "complete": self.complete,
            "examples": {
                "missing": self.ids(Outcome.MISSING)[:examples],
                "conflicting": self.ids(Outcome.CONFLICTING)[:examples],
                "duplicated": self.duplicated[:examples],
                "differing_copies": list(self.differing[:examples]),
                "unmatched": list(self.unmatched[:examples]),
                "mismatched": list(self.mismatched[:examples]),
                "order_violations": list(self.order_violations[:examples]),
            },
        }


# --- Building -------------------------------------------------------------------------------------------------


def _input_id(record: TailedRecord) -> str:
    return f"{record.shard_id}:{record.sequence_number}:0"


def _ride_id(data: bytes) -> Any:
    try:
        event = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return event.get("ride_id") if isinstance(event, dict) else None


@dataclass
class _Copies:
    """The events of one id in one output stream."""

    bodies: list[bytes] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)


def _index(records: Iterable[TailedRecord]) -> tuple[dict[str, _Copies], int]:
    by_id: dict[str, _Copies] = {}
    undecodable = 0
    for record in records:
        event = record.event
        if not isinstance(event, dict) or not isinstance(event.get("event_id"), str):
            undecodable += 1
            continue
        copies = by_id.setdefault(event["event_id"], _Copies())
        copies.bodies.append(record.data)
        copies.events.append(event)
    return by_id, undecodable


def _belongs(source: TailedRecord, predictions: _Copies | None, dead_letters: _Copies | None) -> bool:
    """Whether the events carry the input record's ride id (predictions) or its payload hash (dead letters)."""
    if predictions is not None:
        expected = _ride_id(source.data)
        if any((event.get("prediction") or {}).get("ride_id") != expected for event in predictions.events):
            return False
    if dead_letters is not None:
        digest = hashlib.sha256(source.data).hexdigest()
        if any(event.get("payload_sha256") != digest for event in dead_letters.events):
            return False
    return True


def _order_violations(outputs: Sequence[Sequence[TailedRecord]], parents: Mapping[str, frozenset[str]]) -> list[str]:
    """Parent-before-child in every output shard: the last event of a parent shard must precede the first event
    of each of its children."""
    violations = []
    for records in outputs:
        by_output_shard: dict[str, list[str]] = {}
        for record in records:
            event = record.event
            if isinstance(event, dict) and isinstance(event.get("event_id"), str):
                by_output_shard.setdefault(record.shard_id, []).append(event["event_id"].split(":", 1)[0])
        for output_shard, sources in by_output_shard.items():
            first: dict[str, int] = {}
            last: dict[str, int] = {}
            for position, source in enumerate(sources):
                first.setdefault(source, position)
                last[source] = position
            for child, its_parents in parents.items():
                for parent in its_parents:
                    if child in first and parent in last and last[parent] > first[child]:
                        violations.append(f"{output_shard}: {child} written before {parent} was finished")
    return violations


def build_ledger(
    inputs: Sequence[TailedRecord],
    predictions: Sequence[TailedRecord],
    dead_letters: Sequence[TailedRecord],
    *,
    parents: Mapping[str, frozenset[str]] | None = None,
    settle: timedelta = timedelta(0),
    now: datetime | None = None,
) -> Ledger:
    """The ledger of records already read. ``parents`` maps each input shard to its parent shards (for the
    order check); a record without events that arrived within ``settle`` of ``now`` is in flight, not missing."""
    predicted, bad_predictions = _index(predictions)
    dead, bad_dead = _index(dead_letters)
    now = now or datetime.now(UTC)
    fates: list[RecordFate] = []
    mismatched: list[str] = []
    differing: list[str] = []
    reasons: Counter[str] = Counter()
    known: set[str] = set()
    for source in inputs:
        event_id = _input_id(source)
        known.add(event_id)
        its_predictions, its_dead_letters = predicted.get(event_id), dead.get(event_id)
        n_predictions = len(its_predictions.bodies) if its_predictions else 0
        n_dead = len(its_dead_letters.bodies) if its_dead_letters else 0
        reason = its_dead_letters.events[0].get("reason") if its_dead_letters else None
        if n_predictions and n_dead:
            outcome = Outcome.CONFLICTING
        elif n_predictions:
            outcome = Outcome.PREDICTED
        elif n_dead:
            outcome = Outcome.DEAD_LETTERED
            reasons[str(reason)] += 1
        elif source.arrival is not None and now - source.arrival < settle:
            outcome = Outcome.IN_FLIGHT
        else:
            outcome = Outcome.MISSING
        if not _belongs(source, its_predictions, its_dead_letters):
            mismatched.append(event_id)
        if any(copies is not None and len(set(copies.bodies)) > 1 for copies in (its_predictions, its_dead_letters)):
            differing.append(event_id)
        fates.append(
            RecordFate(event_id, source.shard_id, source.sequence_number, outcome, n_predictions, n_dead, reason)
        )
    unmatched = sorted((set(predicted) | set(dead)) - known)
    return Ledger(
        records=tuple(fates),
        unmatched=tuple(unmatched),
        mismatched=tuple(mismatched),
        differing=tuple(differing),
        undecodable=bad_predictions + bad_dead,
        order_violations=tuple(_order_violations([predictions, dead_letters], parents or {})),
        reasons=dict(reasons),
    )


# --- Reading ------------------------------------------------------------------------------------------------------


def read_stream(client: KinesisClient, stream_name: str, *, timeout: float = 120.0) -> list[TailedRecord]:
    """Every record of the stream from TRIM_HORIZON to its current end; :class:`LedgerError` if the end is not
    reached within ``timeout`` seconds (a ledger built on half a stream would report records missing)."""
    reader = StreamReader(client, stream_name)
    records: list[TailedRecord] = []
    deadline = time.monotonic() + timeout
    while True:
        batch = reader.poll()
        records.extend(batch)
        if not batch and reader.caught_up:
            return records
        if time.monotonic() >= deadline:
            raise LedgerError(f"{stream_name}: not read to its end within {timeout:g} s ({len(records)} records)")
        if not batch:
            time.sleep(0.05)


def shard_parents(client: KinesisClient, stream_name: str) -> dict[str, frozenset[str]]:
    """Each shard of the stream with its parent shards (none for the original shards)."""
    return {
        shard["ShardId"]: frozenset(
            parent for parent in (shard.get("ParentShardId"), shard.get("AdjacentParentShardId")) if parent
        )
        for shard in list_shards(client, stream_name)
    }


def read_ledger(
    client: KinesisClient,
    input_stream: str,
    predictions_stream: str,
    dead_letter_stream: str,
    *,
    settle_seconds: float = 0.0,
    timeout: float = 120.0,
) -> Ledger:
    """Read the three streams and build the ledger. The outputs are read before the input, so a record put while
    the ledger reads shows as in flight (within ``settle_seconds``), never as an event without its record."""
    predictions = read_stream(client, predictions_stream, timeout=timeout)
    dead_letters = read_stream(client, dead_letter_stream, timeout=timeout)
    inputs = read_stream(client, input_stream, timeout=timeout)
    parents = shard_parents(client, input_stream)
    return build_ledger(
        inputs,
        predictions,
        dead_letters,
        parents=parents,
        settle=timedelta(seconds=settle_seconds),
        now=datetime.now(UTC),
    )


def _verdict(ledger: Ledger) -> str:
    if ledger.complete:
        return "every record accounted for"
    if ledger.sound:
        return f"every settled record accounted for ({ledger.counts[Outcome.IN_FLIGHT.value]} in flight)"
    return "NOT every record is accounted for"


def format_ledger(ledger: Ledger, *, examples: int = 5) -> str:
    """The ledger as a short report for people."""
    counts = ledger.counts
    lines = [
        f"input records:      {counts['in']}",
        f"predicted:          {counts[Outcome.PREDICTED.value]}",
        f"dead-lettered:      {counts[Outcome.DEAD_LETTERED.value]}  {dict(sorted(ledger.reasons.items()))}",
        f"conflicting:        {counts[Outcome.CONFLICTING.value]}  (both predicted and dead-lettered)",
        f"missing:            {counts[Outcome.MISSING.value]}",
        f"in flight:          {counts[Outcome.IN_FLIGHT.value]}  (no event yet, arrived within the settle time)",
        f"duplicated:         {counts['duplicated']} records, {counts['extra_copies']} extra events "
        f"(same event id; {counts['differing_copies']} with differing content)",
        f"unmatched events:   {counts['unmatched']}  (event id of no input record)",
        f"mismatched events:  {counts['mismatched']}  (content of another record)",
        f"undecodable events: {counts['undecodable']}",
        f"order violations:   {counts['order_violations']}  (a child shard written before its parent finished)",
        "result:             " + _verdict(ledger),
    ]
    problems = ledger.as_dict(examples=examples)["examples"]
    for name, ids in problems.items():
        if ids and name != "duplicated":
            lines.append(f"{name} (first {len(ids)}): " + ", ".join(ids))
    return "\n".join(lines)
