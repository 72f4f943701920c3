"""Pseudo-batches: how input records are grouped for one call, and what comes out.

A Fluvio SPU hands a module one stored batch at a time: a base offset and timestamp
plus small per-record deltas. The engine rebuilds that shape from any list of records:
consecutive records of one topic partition share a batch whose base is its first
record, as long as the deltas stay inside the i32 range (Fluvio's varint encoder
corrupts larger ones, so a module re-encoding them would too) and the encoded size
stays under a cap. A prepared input can be processed by many chains: records are
encoded once.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from gateway.smartmodules import codec
from gateway.streamlog.interface import Record


class OutputRecord(msgspec.Struct, frozen=True, gc=False):
    """A record produced by a chain.

    As in Fluvio: filter and filter_map keep the input record's offset and timestamp,
    map and aggregate keep them and replace the value (and possibly the key), and
    array_map emits records at the batch's base (offset and timestamp deltas 0).
    """

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes


class Batch:
    """Records of one topic partition encoded relative to a base offset and timestamp."""

    __slots__ = (
        "_consecutive",
        "_positions",
        "base_offset",
        "base_timestamp",
        "block",
        "encoded",
        "partition",
        "records",
        "topic",
    )

    def __init__(self, records: Sequence[Record], encoded: list[bytes]) -> None:
        first = records[0]
        self.topic = first.topic
        self.partition = first.partition
        self.base_offset = first.offset
        self.base_timestamp = first.timestamp
        self.records = records
        self.encoded = encoded
        self.block = len(encoded).to_bytes(4, "big") + b"".join(encoded)
        """The ``Vec<Record>`` a module receives: u32 count, then the records."""
        self._positions: dict[int, int] | None = None
        last = records[-1].offset - self.base_offset
        self._consecutive = last == len(records) - 1

    def __len__(self) -> int:
        return len(self.records)

    def positions(self) -> dict[int, int] | None:
        """Offset delta -> position of the record, or ``None`` when the delta is the
        position (offsets 0, 1, 2... from the base, the usual case). Built on first use."""
        if self._consecutive:
            return None
        if self._positions is None:
            base = self.base_offset
            self._positions = {r.offset - base: i for i, r in enumerate(self.records)}
        return self._positions


class PreparedInput:
    """Records split into batches and encoded, ready for any number of chains."""

    __slots__ = ("batches", "records")

    def __init__(self, records: Sequence[Record], batches: Sequence[Batch]) -> None:
        self.records = records
        self.batches = tuple(batches)

    def __len__(self) -> int:
        return len(self.records)


DEFAULT_MAX_BATCH_BYTES = 8 * 1024 * 1024


def prepare(
    records: Sequence[Record], max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES
) -> PreparedInput:
    """Split ``records`` (in the given order) into pseudo-batches and encode them."""
    if not isinstance(records, list | tuple):
        records = list(records)
    batches: list[Batch] = []
    start = 0
    while start < len(records):
        end, encoded = codec.encode_run(records, start, max_batch_bytes)
        batches.append(Batch(records[start:end], encoded))
        start = end
    return PreparedInput(records, batches)
