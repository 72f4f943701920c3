"""The log contract, records and topics: what every backend must do, checked the same way."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from typing import TYPE_CHECKING

import pytest

from gateway.errors import InvalidOffset, TopicExists, Unavailable, UnknownTopic
from gateway.streamlog.interface import NewRecord
from gateway.streamlog.partitioner import partition_for_key

if TYPE_CHECKING:
    from conftest import Context  # the fixture's type, from this directory's conftest.py


async def test_offsets_dense_and_ordered_under_50_concurrent_producers(ctx: Context) -> None:
    log = ctx.log

    async def producer(n: int) -> list[tuple[int, int, bytes]]:
        out = []
        for i in range(20):
            value = b"p%d-%d" % (n, i)
            where = await log.produce(ctx.events, b"key-%d" % (n % 7), value)
            out.append((where.partition, where.offset, value))
        return out

    results = [r for rs in await asyncio.gather(*(producer(n) for n in range(50))) for r in rs]
    by_partition: dict[int, list[int]] = defaultdict(list)
    for partition, offset, _ in results:
        by_partition[partition].append(offset)
    for offsets in by_partition.values():
        assert sorted(offsets) == list(range(len(offsets)))
    stored = {}
    for partition in by_partition:
        for record in await log.read(ctx.events, partition, 0, 10_000):
            stored[(partition, record.offset)] = record.value
    assert stored == {(p, o): v for p, o, v in results}
    # Each producer's records (one key, one partition) are stored in the order acknowledged.
    for n in range(50):
        mine = [(p, o) for p, o, v in results if v.startswith(b"p%d-" % n)]
        assert mine == sorted(mine)


async def test_key_lands_on_fluvio_partition_and_keyless_records_spread(ctx: Context) -> None:
    for key in (b"user-1", b"alice", b"org-7/user-3", b""):
        where = await ctx.log.produce(ctx.events, key, b"x")
        assert where.partition == partition_for_key(key, 4)
    batch = await ctx.log.produce_batch(ctx.events, [NewRecord(value=b"y", key=b"alice")] * 3)
    assert {p.partition for p in batch} == {partition_for_key(b"alice", 4)}
    keyless = [await ctx.log.produce(ctx.events, None, b"z") for _ in range(8)]
    assert {p.partition for p in keyless} == {0, 1, 2, 3}


async def test_batch_is_ordered_contiguous_and_all_or_nothing(ctx: Context) -> None:
    log = ctx.log
    produced = await log.produce_batch(
        ctx.single, [NewRecord(value=b"v%d" % i) for i in range(100)]
    )
    assert [p.offset for p in produced] == list(range(100))
    records = await log.read(ctx.single, 0, 0, 1000)
    assert [r.value for r in records] == [b"v%d" % i for i in range(100)]
    # A batch naming a partition that does not exist writes none of its records.
    with pytest.raises(InvalidOffset, match="partition 3 does not exist"):
        await log.produce_batch(
            ctx.single, [NewRecord(value=b"ok"), NewRecord(value=b"x", partition=3)]
        )
    assert (await log.describe_topic(ctx.single)).partitions[0].end_offset == 100
    # Concurrent batches do not interleave: each one's offsets are consecutive.
    batches = await asyncio.gather(
        *(
            log.produce_batch(ctx.single, [NewRecord(value=b"b%d-%d" % (n, i)) for i in range(25)])
            for n in range(8)
        )
    )
    for batch in batches:
        first = batch[0].offset
        assert [p.offset for p in batch] == list(range(first, first + 25))
    assert sorted(p.offset for b in batches for p in b) == list(range(100, 300))
    assert await log.produce_batch(ctx.single, []) == []


async def test_batch_spanning_partitions_keeps_input_order(ctx: Context) -> None:
    records = [NewRecord(value=b"r%d" % i, partition=i % 4) for i in range(40)]
    produced = await ctx.log.produce_batch(ctx.events, records)
    assert [p.partition for p in produced] == [i % 4 for i in range(40)]
    for partition in range(4):
        stored = await ctx.log.read(ctx.events, partition, 0, 100)
        assert [r.value for r in stored] == [b"r%d" % i for i in range(partition, 40, 4)]
        assert [r.offset for r in stored] == list(range(10))


async def test_keys_headers_and_timestamps_round_trip(ctx: Context) -> None:
    log = ctx.log
    before = int(time.time() * 1000)
    await log.produce(ctx.single, b"k", b"v", headers=(("trace", b"abc"), ("n", b"\x00\xff")))
    await log.produce(ctx.single, None, b"no key")
    await log.produce(ctx.single, b"", b"")
    records = await log.read(ctx.single, 0, 0, 10)
    assert [(r.key, r.value, r.headers) for r in records] == [
        (b"k", b"v", (("trace", b"abc"), ("n", b"\x00\xff"))),
        (None, b"no key", ()),
        (b"", b"", ()),
    ]
    assert all(r.topic == ctx.single and r.partition == 0 for r in records)
    stamps = [r.timestamp for r in records]
    assert stamps == sorted(stamps)
    assert before - 5_000 < stamps[0] <= stamps[-1] < before + 5_000


async def test_read_bounds(ctx: Context) -> None:
    log = ctx.log
    await log.produce_batch(ctx.single, [NewRecord(value=b"%d" % i) for i in range(10)])
    assert [r.offset for r in await log.read(ctx.single, 0, 7, 100)] == [7, 8, 9]
    assert [r.offset for r in await log.read(ctx.single, 0, 2, 3)] == [2, 3, 4]
    assert await log.read(ctx.single, 0, 10, 100) == []
    with pytest.raises(InvalidOffset, match="negative"):
        await log.read(ctx.single, 0, -1, 10)
    with pytest.raises(InvalidOffset, match="partition 1 does not exist"):
        await log.read(ctx.single, 1, 0, 10)


async def test_describe_reports_start_and_end(ctx: Context) -> None:
    for _ in range(3):
        await ctx.log.produce(ctx.single, None, b"x")
    await ctx.log.produce_batch(ctx.events, [NewRecord(value=b"x", partition=2)] * 5)
    single = await ctx.log.describe_topic(ctx.single)
    assert single.spec.name == ctx.single and single.spec.partitions == 1
    assert [(p.start_offset, p.end_offset) for p in single.partitions] == [(0, 3)]
    events = await ctx.log.describe_topic(ctx.events)
    assert [(p.partition, p.start_offset, p.end_offset) for p in events.partitions] == [
        (0, 0, 0),
        (1, 0, 0),
        (2, 0, 5),
        (3, 0, 0),
    ]


async def test_unknown_topic_is_named(ctx: Context) -> None:
    log = ctx.log
    with pytest.raises(UnknownTopic, match=r"'nope'.*known topics"):
        await log.produce("nope", None, b"x")
    with pytest.raises(UnknownTopic):
        await log.produce_batch("nope", [NewRecord(value=b"x")])
    with pytest.raises(UnknownTopic):
        await log.read("nope", 0, 0, 10)
    with pytest.raises(UnknownTopic):
        await log.describe_topic("nope")
    with pytest.raises(UnknownTopic):
        log.topic("nope")
    with pytest.raises(UnknownTopic):
        log.tail("nope")
    with pytest.raises(UnknownTopic):
        await log.commit_offsets("c", "nope", {0: 1})
    with pytest.raises(UnknownTopic):
        await log.fetch_offsets("c", "nope")


async def test_topics_are_created_once_and_keep_their_partitions(ctx: Context) -> None:
    log = ctx.log
    fresh = ctx.spec("fresh", 2)
    await log.create_topic(fresh)
    with pytest.raises(TopicExists):
        await log.create_topic(fresh)
    await log.create_topic(fresh, exist_ok=True)
    with pytest.raises(TopicExists, match="cannot be changed"):
        await log.create_topic(ctx.spec("fresh", 3), exist_ok=True)
    assert {ctx.events, ctx.single, fresh.name} <= {t.name for t in log.topics()}
    assert log.topic(fresh.name).partitions == 2
    # Declared topics are applied at open: a changed partition count is refused there too,
    # while other settings (here retention) may change.
    with pytest.raises(TopicExists, match="cannot be changed"):
        await ctx.open([ctx.spec("events", 5)])
    other = await ctx.open([ctx.spec("events", 4, retention_ms=86_400_000), fresh])
    assert other.topic(ctx.events).retention_ms == 86_400_000
    assert {t.name for t in other.topics()} >= {ctx.events, ctx.single, fresh.name}


async def test_idempotency_key_writes_once(ctx: Context) -> None:
    log = ctx.log
    first = await log.produce(ctx.events, b"k", b"v1", idempotency_key="org/e1")
    again = await log.produce(ctx.events, b"other", b"v2", idempotency_key="org/e1")
    assert not first.duplicate and again.duplicate
    assert (again.partition, again.offset, again.timestamp) == (
        first.partition,
        first.offset,
        first.timestamp,
    )
    same_batch = await log.produce_batch(
        ctx.events,
        [
            NewRecord(value=b"a", idempotency_key="org/e2"),
            NewRecord(value=b"b", idempotency_key="org/e2"),
            NewRecord(value=b"c", idempotency_key="org/e1"),
            NewRecord(value=b"d"),
        ],
    )
    assert [p.duplicate for p in same_batch] == [False, True, True, False]
    assert (same_batch[1].partition, same_batch[1].offset) == (
        same_batch[0].partition,
        same_batch[0].offset,
    )
    assert (same_batch[2].partition, same_batch[2].offset) == (first.partition, first.offset)
    racing = await asyncio.gather(
        *(log.produce(ctx.events, None, b"x", idempotency_key="org/e3") for _ in range(20))
    )
    assert sum(not p.duplicate for p in racing) == 1
    assert len({(p.partition, p.offset) for p in racing}) == 1
    # Keys are per topic: the same key on another topic is a new record.
    elsewhere = await log.produce(ctx.single, None, b"v", idempotency_key="org/e1")
    assert not elsewhere.duplicate
    total = sum(p.end_offset for p in (await log.describe_topic(ctx.events)).partitions)
    assert total == 1 + 2 + 1
    values = [r.value for p in range(4) for r in await log.read(ctx.events, p, 0, 100)]
    assert sorted(values) == [b"a", b"d", b"v1", b"x"]


async def test_idempotency_spans_instances_and_expires(ctx: Context) -> None:
    spec = ctx.spec("dedup", 1)
    log = await ctx.open([spec], dedup_window_s=0.3)
    first = await log.produce(spec.name, None, b"x", idempotency_key="e")
    other = await ctx.open([spec], dedup_window_s=0.3)
    again = await other.produce(spec.name, None, b"x", idempotency_key="e")
    assert again.duplicate and (again.partition, again.offset) == (first.partition, first.offset)
    await asyncio.sleep(0.45)
    await ctx.backend.enforce_retention(log)
    later = await other.produce(spec.name, None, b"x", idempotency_key="e")
    assert not later.duplicate and later.offset == first.offset + 1


async def test_produce_after_close_is_unavailable(ctx: Context) -> None:
    log = await ctx.open()
    await log.close()
    with pytest.raises(Unavailable):
        await log.produce(ctx.single, None, b"x")
    with pytest.raises(Unavailable):
        await log.produce_batch(ctx.single, [NewRecord(value=b"x")])


async def test_ready_while_open(ctx: Context) -> None:
    await ctx.log.check_writable()
    log = await ctx.open()
    await log.close()
    with pytest.raises(Unavailable):
        await log.check_writable()


async def test_topic_created_by_another_instance_becomes_usable(ctx: Context) -> None:
    other = await ctx.open()
    late = ctx.spec("late", 2)
    await other.create_topic(late)
    deadline = time.monotonic() + 5
    while True:
        try:
            where = await ctx.log.produce(late.name, b"k", b"v")
            break
        except UnknownTopic:
            assert time.monotonic() < deadline, "the new topic never became known"
            await asyncio.sleep(0.02)
    assert (where.partition, where.offset) == (partition_for_key(b"k", 2), 0)
    assert ctx.log.topic(late.name).partitions == 2
    [record] = await other.read(late.name, where.partition, 0, 10)
    assert record.value == b"v"
