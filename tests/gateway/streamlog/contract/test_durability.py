"""The log contract, keeping records: durable acks, several writers, retention."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections import defaultdict
from typing import TYPE_CHECKING

from gateway.streamlog.interface import NewRecord, Record, StreamLog, Tail

if TYPE_CHECKING:
    from conftest import Context  # the fixture's type, from this directory's conftest.py


async def collect(tail: Tail, count: int, timeout: float = 15.0) -> list[Record]:
    records: list[Record] = []

    async def run() -> None:
        async for batch in tail:
            records.extend(batch)
            if len(records) >= count:
                return

    await asyncio.wait_for(run(), timeout)
    return records


async def stored_values(
    log: StreamLog, topic: str, partitions: int
) -> dict[tuple[int, int], bytes]:
    return {
        (p, r.offset): r.value
        for p in range(partitions)
        for r in await log.read(topic, p, 0, 100_000)
    }


async def test_acknowledged_records_survive_close_and_reopen(ctx: Context) -> None:
    log = await ctx.open()
    acked = await asyncio.gather(
        *(log.produce(ctx.events, b"k%d" % i, b"v%d" % i) for i in range(100))
    )
    batch = await log.produce_batch(ctx.single, [NewRecord(value=b"b%d" % i) for i in range(50)])
    await log.close()
    reopened = await ctx.open()
    for i, where in enumerate(acked):
        [record] = await reopened.read(ctx.events, where.partition, where.offset, 1)
        assert record.value == b"v%d" % i and record.key == b"k%d" % i
    assert [r.value for r in await reopened.read(ctx.single, 0, 0, 100)] == [
        b"b%d" % i for i in range(50)
    ]
    # Offsets carry on from where they were, with no gap.
    assert (await reopened.produce(ctx.single, None, b"next")).offset == batch[-1].offset + 1


CHILD = """
import asyncio, sys
{setup}
async def main():
    async with make_log() as log:
        i = 0
        while True:
            where = await log.produce({topic!r}, b"k%d" % (i % 8), b"v%d" % i)
            sys.stdout.write("ack %d %d %d\\n" % (where.partition, where.offset, i))
            sys.stdout.flush()
            i += 1
asyncio.run(main())
"""


async def test_acknowledged_records_survive_kill_9_of_the_producing_process(
    ctx: Context,
) -> None:
    """A gateway process killed mid-stream: everything it acknowledged is stored."""
    source = CHILD.format(setup=ctx.backend.child_setup(), topic=ctx.events)
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", source, stdout=asyncio.subprocess.PIPE
    )
    assert child.stdout is not None
    acked: list[tuple[int, int, int]] = []
    try:
        while len(acked) < 300:
            line = await asyncio.wait_for(child.stdout.readline(), 20)
            assert line, f"the producing process exited with {await child.wait()}"
            if line.startswith(b"ack "):  # other lines are the log's own messages
                partition, offset, i = map(int, line.split()[1:])
                acked.append((partition, offset, i))
    finally:
        child.send_signal(signal.SIGKILL)
        await child.wait()
    # A new instance (a restarted gateway) connects to the same storage.
    reopened = await ctx.open()
    stored = await stored_values(reopened, ctx.events, 4)
    for partition, offset, i in acked:
        assert stored[(partition, offset)] == b"v%d" % i
    # Whatever the process wrote, acknowledged or not, left dense offsets behind.
    by_partition: dict[int, list[int]] = defaultdict(list)
    for partition, offset in stored:
        by_partition[partition].append(offset)
    for offsets in by_partition.values():
        assert sorted(offsets) == list(range(len(offsets)))
    where = await reopened.produce(ctx.events, b"k0", b"after")
    assert where.offset == len(by_partition[where.partition])


async def test_two_instances_producing_to_one_partition_keep_offsets_dense(ctx: Context) -> None:
    first, second = ctx.log, await ctx.open()
    tail = first.tail(ctx.single, start="end")
    await tail.start()  # type: ignore[attr-defined]

    async def producer(log_index: int, n: int) -> list[tuple[int, bytes]]:
        log = (first, second)[log_index]
        out = []
        for i in range(10):
            value = b"%d-%d-%d" % (log_index, n, i)
            if i % 4 == 3:
                batch = await log.produce_batch(
                    ctx.single, [NewRecord(value=value), NewRecord(value=value + b"b")]
                )
                out += [(batch[0].offset, value), (batch[1].offset, value + b"b")]
            else:
                out.append(((await log.produce(ctx.single, None, value)).offset, value))
        return out

    results = [
        r
        for rs in await asyncio.gather(*(producer(k, n) for k in (0, 1) for n in range(20)))
        for r in rs
    ]
    total = len(results)
    assert sorted(o for o, _ in results) == list(range(total))
    assert await stored_values(second, ctx.single, 1) == {(0, o): v for o, v in results}
    # A tail in one instance follows what both wrote, in offset order.
    followed = await collect(tail, total)
    await tail.aclose()
    assert [r.offset for r in followed] == list(range(total))
    assert (await second.describe_topic(ctx.single)).partitions[0].end_offset == total


async def test_retention_removes_only_expired_records(ctx: Context) -> None:
    spec = ctx.spec("short", 2, retention_ms=400)
    log = await ctx.open([spec], retention_interval_s=3600)
    await log.produce_batch(
        spec.name, [NewRecord(value=b"old", partition=p % 2) for p in range(10)]
    )
    await asyncio.sleep(0.6)
    await log.produce_batch(spec.name, [NewRecord(value=b"new", partition=p % 2) for p in range(6)])
    await ctx.backend.enforce_retention(log)
    description = await log.describe_topic(spec.name)
    assert [(p.start_offset, p.end_offset) for p in description.partitions] == [(5, 8), (5, 8)]
    for partition in (0, 1):
        records = await log.read(spec.name, partition, 0, 100)
        assert [(r.offset, r.value) for r in records] == [(5, b"new"), (6, b"new"), (7, b"new")]
    # A tail asking for removed offsets starts at the oldest stored record.
    tail = log.tail(spec.name, partitions=[0], start={0: 0})
    assert await tail.start() == {0: 5}  # type: ignore[attr-defined]
    await tail.aclose()
    # An emptied partition keeps counting from where it was.
    await asyncio.sleep(0.6)
    await ctx.backend.enforce_retention(log)
    description = await log.describe_topic(spec.name)
    assert [(p.start_offset, p.end_offset) for p in description.partitions] == [(8, 8), (8, 8)]
    assert await log.read(spec.name, 0, 0, 100) == []
    where = await log.produce(spec.name, None, b"later")
    assert where.offset == 8


async def test_size_cap_removes_oldest_records(ctx: Context) -> None:
    spec = ctx.spec("capped", 1, max_partition_bytes=1_000)
    log = await ctx.open([spec], retention_interval_s=3600)
    await log.produce_batch(spec.name, [NewRecord(value=b"x" * 100) for _ in range(25)])
    await ctx.backend.enforce_retention(log)
    description = await log.describe_topic(spec.name)
    assert (description.partitions[0].start_offset, description.partitions[0].end_offset) == (
        15,
        25,
    )
    assert [r.offset for r in await log.read(spec.name, 0, 0, 100)] == list(range(15, 25))
    # Records under the cap and topics without limits are left alone.
    await ctx.backend.enforce_retention(log)
    assert (await log.describe_topic(spec.name)).partitions[0].start_offset == 15
    await log.produce_batch(ctx.single, [NewRecord(value=b"y" * 500)] * 10)
    await ctx.backend.enforce_retention(log)
    assert (await log.describe_topic(ctx.single)).partitions[0].start_offset == 0
