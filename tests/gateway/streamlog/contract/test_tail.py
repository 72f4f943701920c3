"""The log contract, following: tails from every start position, and consumer offsets."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import TYPE_CHECKING

import pytest

from gateway.errors import InvalidOffset
from gateway.streamlog.interface import NewRecord, Record, StartPosition, Tail

if TYPE_CHECKING:
    from conftest import Context  # the fixture's type, from this directory's conftest.py


async def collect(tail: Tail, count: int, timeout: float = 15.0) -> list[Record]:
    records: list[Record] = []

    async def run() -> None:
        async for batch in tail:
            assert batch, "a tail yields non-empty batches"
            records.extend(batch)
            if len(records) >= count:
                return

    await asyncio.wait_for(run(), timeout)
    return records


@pytest.mark.parametrize("start", ["beginning", "end", "offsets"])
async def test_tail_switch_over_has_no_gap_or_duplicate(ctx: Context, start: str) -> None:
    log = ctx.log
    before = await log.produce_batch(
        ctx.events, [NewRecord(value=b"old-%d" % i, key=b"k%d" % (i % 5)) for i in range(200)]
    )
    position: StartPosition = "end" if start == "end" else "beginning"
    if start == "offsets":
        position = {p: 10 for p in range(4)}
    tail = log.tail(ctx.events, start=position, max_batch=37)
    await tail.start()  # type: ignore[attr-defined]
    expected_before = {
        "beginning": len(before),
        "end": 0,
        "offsets": sum(1 for w in before if w.offset >= 10),
    }[start]

    async def produce_live(n: int) -> None:
        # Four producers race the tail's replay: single records and small batches.
        for i in range(75):
            if i % 3:
                await log.produce(ctx.events, b"k%d" % (i % 5), b"new-%d-%d" % (n, i))
            else:
                await log.produce_batch(
                    ctx.events, [NewRecord(value=b"new-%d-%d" % (n, i), key=b"k%d" % n)]
                )
            if i % 25 == 0:
                await asyncio.sleep(0.005)

    producers = asyncio.gather(*(produce_live(n) for n in range(4)))
    records = await collect(tail, expected_before + 300)
    await producers
    await tail.aclose()
    assert len(records) == expected_before + 300
    seen: dict[int, list[int]] = defaultdict(list)
    for record in records:
        seen[record.partition].append(record.offset)
    first = {"beginning": 0, "end": None, "offsets": 10}[start]
    for partition, offsets in seen.items():
        if first is not None:
            assert offsets[0] == first, partition
        assert offsets == list(range(offsets[0], offsets[0] + len(offsets))), partition
    assert sum(1 for r in records if r.value.startswith(b"new-")) == 300
    assert tail.positions == {
        p.partition: p.end_offset for p in (await log.describe_topic(ctx.events)).partitions
    }


async def test_tail_batches_respect_max_batch(ctx: Context) -> None:
    await ctx.log.produce_batch(
        ctx.events, [NewRecord(value=b"x", partition=i % 4) for i in range(200)]
    )
    tail = ctx.log.tail(ctx.events, start="beginning", max_batch=16)
    sizes: list[int] = []

    async def run() -> None:
        async for batch in tail:
            sizes.append(len(batch))
            if sum(sizes) >= 200:
                return

    await asyncio.wait_for(run(), 10)
    await tail.aclose()
    assert sum(sizes) == 200 and max(sizes) <= 16


async def test_tail_of_chosen_partitions_sees_records_of_another_instance(ctx: Context) -> None:
    other = await ctx.open()
    tail = ctx.log.tail(ctx.events, partitions=[1, 3], start="end")
    assert await tail.start() == {1: 0, 3: 0}  # type: ignore[attr-defined]
    await other.produce_batch(
        ctx.events, [NewRecord(value=b"v%d" % i, partition=i % 4) for i in range(40)]
    )
    records = await collect(tail, 20)
    await tail.aclose()
    assert {r.partition for r in records} == {1, 3}
    for partition in (1, 3):
        assert [r.value for r in records if r.partition == partition] == [
            b"v%d" % i for i in range(partition, 40, 4)
        ]


async def test_tail_positions_and_bad_start(ctx: Context) -> None:
    log = ctx.log
    await log.produce_batch(ctx.events, [NewRecord(value=b"x", partition=2)] * 3)
    tail = log.tail(ctx.events, start="end")
    assert await tail.start() == {0: 0, 1: 0, 2: 3, 3: 0}  # type: ignore[attr-defined]
    await tail.aclose()
    # Partitions missing from an offset map start at the end.
    partial = log.tail(ctx.events, start={0: 0})
    assert await partial.start() == {0: 0, 1: 0, 2: 3, 3: 0}  # type: ignore[attr-defined]
    await partial.aclose()
    with pytest.raises(InvalidOffset, match="partition 9 does not exist"):
        log.tail(ctx.events, partitions=[9])
    bad = log.tail(ctx.events, start={0: -1})
    with pytest.raises(InvalidOffset, match="negative"):
        await bad.start()  # type: ignore[attr-defined]


async def test_closed_tail_stops_iterating(ctx: Context) -> None:
    tail = ctx.log.tail(ctx.single, start="end")

    async def drain() -> int:
        n = 0
        async for batch in tail:
            n += len(batch)
        return n

    task = asyncio.create_task(drain())
    await asyncio.sleep(0.1)
    await tail.aclose()
    assert await asyncio.wait_for(task, 5) == 0


async def test_closing_the_log_ends_its_tails(ctx: Context) -> None:
    log = await ctx.open()
    tail = log.tail(ctx.single, start="end")

    async def drain() -> None:
        async for _ in tail:
            pass

    task = asyncio.create_task(drain())
    await asyncio.sleep(0.1)
    await log.close()
    await asyncio.wait_for(task, 5)


async def test_consumer_offsets_resume(ctx: Context) -> None:
    log = ctx.log
    await log.produce_batch(ctx.single, [NewRecord(value=b"v%d" % i) for i in range(10)])
    assert await log.fetch_offsets("worker", ctx.single) == {}
    head = log.tail(ctx.single, start="beginning")
    first = await collect(head, 4)
    await head.aclose()
    await log.commit_offsets("worker", ctx.single, {0: first[3].offset + 1})
    assert await log.fetch_offsets("worker", ctx.single) == {0: 4}
    # Another instance (a restarted worker) reads the committed offsets and resumes there.
    other = await ctx.open()
    committed = await other.fetch_offsets("worker", ctx.single)
    assert committed == {0: 4}
    rest_tail = other.tail(ctx.single, start=committed)
    rest = await collect(rest_tail, 6)
    await rest_tail.aclose()
    assert [r.value for r in rest] == [b"v%d" % i for i in range(4, 10)]
    await other.commit_offsets("worker", ctx.single, {0: 10})
    assert await log.fetch_offsets("worker", ctx.single) == {0: 10}
    assert await log.fetch_offsets("other", ctx.single) == {}
    await log.commit_offsets("worker", ctx.events, {0: 1, 3: 7})
    await log.commit_offsets("worker", ctx.events, {3: 8})
    assert await log.fetch_offsets("worker", ctx.events) == {0: 1, 3: 8}
    assert await log.fetch_offsets("worker", ctx.single) == {0: 10}


async def test_tail_through_a_chain_the_log_runs(ctx: Context) -> None:
    """Backends that run SmartModules themselves (a Fluvio cluster) apply a subscription's
    chain before delivery; the others refuse, and the gateway runs the chain itself."""
    log = ctx.log
    chain = [{"smartmodule": "event-filter", "params": {"min_importance": 0.5}}]
    if not log.runs_smartmodules:
        with pytest.raises(NotImplementedError):
            log.tail_through(ctx.events, chain)
        return
    tail = log.tail_through(ctx.events, chain, start="end")
    await tail.start()  # type: ignore[attr-defined]
    values = [
        b'{"type":"user_interaction","payload":{"action":"a","importance":%s}}' % level
        for level in (b"0.9", b"0.1", b"0.7")
    ]
    for value in values:
        await log.produce(ctx.events, b"k", value)
    got = await collect(tail, 2)
    await tail.aclose()
    assert [r.value for r in got] == [values[0], values[2]]
