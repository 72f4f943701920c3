"""Removing records past a topic's retention time or over its per-partition size cap.

Timestamps never decrease within a partition (the committer makes sure), so the expired
records of a partition are a prefix of it: retention walks each partition from its start
offset in chunks and deletes whole prefixes in short transactions, letting group commits
run in between so producers never stall behind a large clean-up.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from gateway.streamlog.interface import TopicSpec

if TYPE_CHECKING:
    from gateway.streamlog.embedded.log import EmbeddedLog

CHUNK = 2_000

_STATE = (
    "SELECT partition, start_offset, next_offset, bytes FROM partition_state WHERE topic_id = ?"
)
_HEAD = (
    'SELECT "offset", timestamp, length(value) + ifnull(length(key), 0) FROM records '
    'WHERE topic_id = ? AND partition = ? AND "offset" >= ? ORDER BY "offset" LIMIT ?'
)


async def enforce(log: EmbeddedLog, topic_id: int, spec: TopicSpec) -> int:
    """Apply ``spec``'s retention time and size cap to every partition; returns records removed."""
    if spec.retention_ms is None and spec.max_partition_bytes is None:
        return 0
    removed = 0
    for partition, start, end, size in await log.query(_STATE, (topic_id,)):
        while start < end:
            cutoff = None if spec.retention_ms is None else _now_ms() - spec.retention_ms
            excess = 0 if spec.max_partition_bytes is None else size - spec.max_partition_bytes
            rows = await log.query(_HEAD, (topic_id, partition, start, CHUNK))
            if not rows:
                break
            upto, freed = start, 0
            for offset, timestamp, length in rows:
                if (cutoff is not None and timestamp < cutoff) or freed < excess:
                    upto, freed = offset + 1, freed + length
                else:
                    break
            if upto == start:
                break
            await log.write_in_transaction(
                [
                    (
                        'DELETE FROM records WHERE topic_id = ? AND partition = ? AND "offset" < ?',
                        (topic_id, partition, upto),
                    ),
                    (
                        "UPDATE partition_state SET start_offset = ?, bytes = bytes - ? "
                        "WHERE topic_id = ? AND partition = ?",
                        (upto, freed, topic_id, partition),
                    ),
                ]
            )
            removed += upto - start
            start, size = upto, size - freed
            await asyncio.sleep(0)
    return removed


def _now_ms() -> int:
    return int(time.time() * 1000)
