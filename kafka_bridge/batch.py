"""A consumed batch of Kafka messages in the column form the recorder's SQL takes.

The recorder sends whole columns (``text[]``, ``float8[]``) to PostgreSQL, so the
batch is built as parallel lists (the database layer's
:class:`~mwa_staging.db.rows.Arrivals` and :class:`~mwa_staging.db.rows.MalformedRows`),
not as a list of per-message objects. It also
remembers, per partition, the first and the next offset, which is what offset
commits and the redelivery filter need.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from kafka_bridge.messages import Arrival, parse
from mwa_staging.db.rows import Arrivals, MalformedRows

# Malformed payloads are kept up to this size for inspection.
PAYLOAD_KEEP_BYTES = 4096


class KafkaMessage(Protocol):
    """The part of ``confluent_kafka.Message`` the bridge reads (tests pass fakes)."""

    def error(self) -> object | None: ...
    def value(self) -> bytes | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def timestamp(self) -> tuple[int, int]: ...


@dataclass
class Batch:
    """Arrivals and malformed messages as columns, and the offsets they span."""

    arrivals: Arrivals = field(default_factory=Arrivals)
    malformed: MalformedRows = field(default_factory=MalformedRows)
    # partition -> (first offset, next offset to consume) of every message seen,
    # skipped ones included: that is what Kafka's commit must cover
    offsets: dict[int, tuple[int, int]] = field(default_factory=dict)
    messages: int = 0  # messages parsed (valid or malformed)
    skipped: int = 0  # messages already applied by an earlier transaction

    @property
    def valid(self) -> int:
        return len(self.arrivals.paths)

    def next_offsets(self) -> dict[int, int]:
        """partition -> the offset to commit (one past the last message seen)."""
        return {part: span[1] for part, span in self.offsets.items()}


def build(
    messages: Sequence[KafkaMessage],
    max_bytes: int,
    skip_below: Mapping[int, int] | None = None,
) -> Batch:
    """Parse ``messages`` (in consumption order) into a :class:`Batch`.

    ``skip_below`` maps a partition to the first offset not yet applied in the
    database: messages below it were recorded by an earlier transaction whose
    Kafka commit did not happen (a crash, a rebalance) and are left out.
    Kafka-level error events (no payload to record) are skipped; the consumer
    logs them.
    """
    batch = Batch()
    arr, bad = batch.arrivals, batch.malformed
    paths, errors, times = arr.paths, arr.errors, arr.times
    offsets = batch.offsets
    now = time.time()
    for msg in messages:
        if msg.error() is not None:
            continue
        part = msg.partition()
        off = msg.offset()
        if part is None or off is None:
            continue
        span = offsets.get(part)
        offsets[part] = (off, off + 1) if span is None else (span[0], off + 1)
        if skip_below is not None and off < skip_below.get(part, 0):
            batch.skipped += 1
            continue
        batch.messages += 1
        value = msg.value()
        parsed = parse(value, max_bytes)
        if isinstance(parsed, Arrival):
            paths.append(parsed.path)
            errors.append(parsed.error)
            when = parsed.time
            if when is None:
                kind, stamp = msg.timestamp()
                when = stamp / 1000.0 if kind and stamp > 0 else now
            times.append(when)
        else:
            bad.partitions.append(part)
            bad.offsets.append(off)
            bad.reasons.append(parsed.reason)
            bad.payloads.append((value or b"")[:PAYLOAD_KEEP_BYTES])
    return batch


def quarantined(
    messages: Sequence[KafkaMessage],
    max_bytes: int,
    reason: str,
    skip_below: Mapping[int, int] | None = None,
) -> Batch:
    """``messages`` as a batch of malformed rows with ``reason`` (same offsets, no arrivals).

    What the recorder stores for messages the database refused (see
    ``kafka_bridge.recorder``): kept for inspection like any malformed message.
    """
    batch = build(messages, max_bytes, skip_below)
    rows = MalformedRows()
    for msg in messages:
        part, off = msg.partition(), msg.offset()
        if msg.error() is not None or part is None or off is None:
            continue
        if skip_below is not None and off < skip_below.get(part, 0):
            continue
        rows.partitions.append(part)
        rows.offsets.append(off)
        rows.reasons.append(reason)
        rows.payloads.append((msg.value() or b"")[:PAYLOAD_KEEP_BYTES])
    batch.arrivals = Arrivals()
    batch.malformed = rows
    return batch
