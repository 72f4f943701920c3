"""The embedded log's contract: dense offsets, durable produce, tails, offsets, retention."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Literal

import pytest
from sqlitelock import write_lock_held

from gateway.errors import InvalidOffset, TopicExists, Unavailable, UnknownTopic
from gateway.streamlog.embedded import EmbeddedLog
from gateway.streamlog.embedded.committer import Done
from gateway.streamlog.interface import NewRecord, Produced, Record, Tail, TopicSpec
from gateway.streamlog.partitioner import partition_for_key


async def collect(tail: Tail, count: int, timeout: float = 10.0) -> list[Record]:
    records: list[Record] = []

    async def run() -> None:
        async for batch in tail:
            records.extend(batch)
            if len(records) >= count:
                return

    await asyncio.wait_for(run(), timeout)
    return records


async def test_offsets_dense_and_ordered_under_50_concurrent_producers(log: EmbeddedLog) -> None:
    async def producer(n: int) -> list[tuple[int, int, bytes]]:
        out = []
        for i in range(40):
            value = b"p%d-%d" % (n, i)
            where = await log.produce("events", b"key-%d" % (n % 7), value)
            out.append((where.partition, where.offset, value))
        return out

    results = [
        r for batch in await asyncio.gather(*(producer(n) for n in range(50))) for r in batch
    ]
    by_partition: dict[int, list[int]] = defaultdict(list)
    for partition, offset, _ in results:
        by_partition[partition].append(offset)
    for offsets in by_partition.values():
        assert sorted(offsets) == list(range(len(offsets)))
    for partition, offset, value in results:
        [record] = await log.read("events", partition, offset, 1)
        assert record.value == value and record.offset == offset
    # Each producer's records of one key stay in the order they were acknowledged.
    for n in range(50):
        mine = [(p, o) for p, o, v in results if v.startswith(b"p%d-" % n)]
        assert mine == sorted(mine)


async def test_key_lands_on_fluvio_partition(log: EmbeddedLog) -> None:
    for key in (b"user-1", b"alice", b"org-7/user-3"):
        where = await log.produce("events", key, b"x")
        assert where.partition == partition_for_key(key, 4)


async def test_batch_is_atomic_and_ordered(log: EmbeddedLog) -> None:
    produced = await log.produce_batch("single", [NewRecord(value=b"v%d" % i) for i in range(100)])
    assert [p.offset for p in produced] == list(range(100))
    records = await log.read("single", 0, 0, 1000)
    assert [r.value for r in records] == [b"v%d" % i for i in range(100)]
    with pytest.raises(InvalidOffset):
        await log.produce_batch("single", [NewRecord(value=b"x", partition=3)])


async def test_headers_and_keys_round_trip(log: EmbeddedLog) -> None:
    await log.produce("single", b"k", b"v", headers=(("trace", b"abc"),))
    [record] = await log.read("single", 0, 0, 10)
    assert record.key == b"k" and record.headers == (("trace", b"abc"),)
    assert abs(record.timestamp - time.time() * 1000) < 5_000


async def test_describe_reports_start_and_end(log: EmbeddedLog) -> None:
    for _ in range(3):
        await log.produce("single", None, b"x")
    description = await log.describe_topic("single")
    assert [(p.start_offset, p.end_offset) for p in description.partitions] == [(0, 3)]


async def test_unknown_topic_names_known_ones(log: EmbeddedLog) -> None:
    with pytest.raises(UnknownTopic, match="known topics: events, single"):
        await log.produce("nope", None, b"x")


async def test_create_topic_refuses_duplicates_and_partition_changes(log: EmbeddedLog) -> None:
    await log.create_topic(TopicSpec(name="fresh", partitions=2))
    with pytest.raises(TopicExists):
        await log.create_topic(TopicSpec(name="fresh", partitions=2))
    with pytest.raises(TopicExists, match="cannot be changed"):
        await log.create_topic(TopicSpec(name="fresh", partitions=3), exist_ok=True)
    assert "fresh" in {t.name for t in log.topics()}


@pytest.mark.parametrize("start", ["beginning", "end", "offsets"])
async def test_tail_switch_over_has_no_gap_or_duplicate(log: EmbeddedLog, start: str) -> None:
    before = [await log.produce("events", b"k%d" % (i % 5), b"old-%d" % i) for i in range(200)]
    start_pos: object = start
    if start == "offsets":
        start_pos = {p: 10 for p in range(4)}
    tail = log.tail("events", start=start_pos, max_batch=37)  # type: ignore[arg-type]
    await tail.start()  # type: ignore[attr-defined]
    expected_before = {
        "beginning": len(before),
        "end": 0,
        "offsets": sum(1 for w in before if w.offset >= 10),
    }[start]

    async def produce_live() -> None:
        for i in range(300):
            await log.produce("events", b"k%d" % (i % 5), b"new-%d" % i)
            if i % 50 == 0:
                await asyncio.sleep(0.01)

    producer = asyncio.create_task(produce_live())
    records = await collect(tail, expected_before + 300)
    await producer
    await tail.aclose()
    seen: dict[int, list[int]] = defaultdict(list)
    for record in records:
        seen[record.partition].append(record.offset)
    for partition, offsets in seen.items():
        first = {"beginning": 0, "end": None, "offsets": 10}[start]
        if first is not None:
            assert offsets[0] == first
        assert offsets == list(range(offsets[0], offsets[0] + len(offsets))), partition
    assert sum(1 for r in records if r.value.startswith(b"new-")) == 300
    assert len(records) == expected_before + 300


async def test_tail_positions_and_bad_partitions(log: EmbeddedLog) -> None:
    await log.produce_batch("events", [NewRecord(value=b"x", partition=2)] * 3)
    tail = log.tail("events", start="end")
    assert await tail.start() == {0: 0, 1: 0, 2: 3, 3: 0}  # type: ignore[attr-defined]
    with pytest.raises(InvalidOffset):
        log.tail("events", partitions=[9])
    bad = log.tail("events", start={0: -1})
    with pytest.raises(InvalidOffset):
        await bad.start()  # type: ignore[attr-defined]


async def test_closed_tail_stops_iterating(log: EmbeddedLog) -> None:
    tail = log.tail("single", start="end")

    async def drain() -> int:
        n = 0
        async for batch in tail:
            n += len(batch)
        return n

    task = asyncio.create_task(drain())
    await asyncio.sleep(0.05)
    await tail.aclose()
    assert await asyncio.wait_for(task, 5) == 0


async def test_consumer_offsets_resume(log: EmbeddedLog) -> None:
    await log.produce_batch("single", [NewRecord(value=b"v%d" % i) for i in range(10)])
    assert await log.fetch_offsets("worker", "single") == {}
    first = await collect(log.tail("single", start="beginning"), 4)
    await log.commit_offsets("worker", "single", {0: first[3].offset + 1})
    committed = await log.fetch_offsets("worker", "single")
    assert committed == {0: 4}
    rest = await collect(log.tail("single", start=committed), 6)
    assert [r.value for r in rest] == [b"v%d" % i for i in range(4, 10)]
    await log.commit_offsets("worker", "single", {0: 10})
    assert await log.fetch_offsets("worker", "single") == {0: 10}
    assert await log.fetch_offsets("other", "single") == {}


async def test_retention_removes_only_expired_records(tmp_path: Path) -> None:
    spec = TopicSpec(name="short", partitions=2, retention_ms=400)
    log = EmbeddedLog(tmp_path / "r.sqlite3", topics=[spec], retention_interval_s=3600)
    await log.open()
    try:
        await log.produce_batch(
            "short", [NewRecord(value=b"old", partition=p % 2) for p in range(10)]
        )
        await asyncio.sleep(0.6)
        await log.produce_batch(
            "short", [NewRecord(value=b"new", partition=p % 2) for p in range(6)]
        )
        assert await log.enforce_retention() == 10
        description = await log.describe_topic("short")
        assert [(p.start_offset, p.end_offset) for p in description.partitions] == [(5, 8), (5, 8)]
        for partition in (0, 1):
            records = await log.read("short", partition, 0, 100)
            assert [r.value for r in records] == [b"new"] * 3
            assert [r.offset for r in records] == [5, 6, 7]
        # An emptied partition keeps counting from where it was.
        await asyncio.sleep(0.6)
        assert await log.enforce_retention() == 6
        where = await log.produce("short", None, b"later")
        assert where.offset == 8
        # A tail asking for removed offsets starts at the oldest stored record.
        tail = log.tail("short", partitions=[where.partition], start={where.partition: 0})
        [record] = await collect(tail, 1)
        assert record.offset == 8
    finally:
        await log.close()


async def test_size_cap_removes_oldest(tmp_path: Path) -> None:
    spec = TopicSpec(name="capped", partitions=1, max_partition_bytes=1_000)
    log = EmbeddedLog(tmp_path / "c.sqlite3", topics=[spec])
    await log.open()
    try:
        await log.produce_batch("capped", [NewRecord(value=b"x" * 100) for _ in range(25)])
        assert await log.enforce_retention() == 15
        description = await log.describe_topic("capped")
        assert description.partitions[0].start_offset == 15
    finally:
        await log.close()


async def test_reopen_keeps_records_and_offsets(tmp_path: Path) -> None:
    path = tmp_path / "again.sqlite3"
    spec = TopicSpec(name="t", partitions=2)
    async with EmbeddedLog(path, topics=[spec]) as log:
        await log.produce_batch("t", [NewRecord(value=b"a", partition=1)] * 5)
    async with EmbeddedLog(path, topics=[spec]) as log:
        where = await log.produce("t", None, b"b")
        where2 = await log.produce("t", None, b"c")
        assert {(where.partition, where.offset), (where2.partition, where2.offset)} == {
            (0, 0),
            (1, 5),
        }


async def test_another_process_sees_and_extends_the_log(log: EmbeddedLog, tmp_path: Path) -> None:
    """A second process (the CLI) writes to the same file; offsets stay dense, tails wake."""
    await log.produce_batch("single", [NewRecord(value=b"mine")] * 3)
    tail = log.tail("single", start="end")
    await tail.start()  # type: ignore[attr-defined]
    script = (
        "import asyncio, sys\n"
        "from gateway.streamlog.embedded import EmbeddedLog\n"
        "from pathlib import Path\n"
        "async def main():\n"
        "    async with EmbeddedLog(Path(sys.argv[1])) as log:\n"
        "        for i in range(5):\n"
        "            await log.produce('single', None, b'theirs')\n"
        "asyncio.run(main())\n"
    )
    started = time.monotonic()
    child = await asyncio.create_subprocess_exec(sys.executable, "-c", script, str(log.path))
    assert await child.wait() == 0
    records = await collect(tail, 5, timeout=5)
    assert time.monotonic() - started < 5
    assert [r.offset for r in records] == [3, 4, 5, 6, 7]
    where = await log.produce("single", None, b"mine-again")
    assert where.offset == 8
    await tail.aclose()


async def test_produce_after_close_is_unavailable(tmp_path: Path) -> None:
    from gateway.errors import Unavailable

    log = EmbeddedLog(tmp_path / "closed.sqlite3", topics=[TopicSpec(name="t", partitions=1)])
    await log.open()
    await log.close()
    with pytest.raises(Unavailable):
        await log.produce("t", None, b"x")


async def test_full_queue_makes_producers_wait_not_fail(tmp_path: Path) -> None:
    log = EmbeddedLog(
        tmp_path / "q.sqlite3",
        topics=[TopicSpec(name="t", partitions=1)],
        queue_limit=10,
        commit_max_records=5,
    )
    async with log:
        results = await asyncio.gather(*(log.produce("t", None, b"%d" % i) for i in range(200)))
        assert sorted(r.offset for r in results) == list(range(200))


async def test_idempotency_key_writes_once(log: EmbeddedLog) -> None:
    first = await log.produce("events", b"k", b"v1", idempotency_key="org/e1")
    again = await log.produce("events", b"other", b"v2", idempotency_key="org/e1")
    assert not first.duplicate and again.duplicate
    assert (again.partition, again.offset) == (first.partition, first.offset)
    same_batch = await log.produce_batch(
        "events",
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
    # A known key makes the commit start over with a lookup: its new keys are still kept.
    later = await log.produce("events", None, b"e", idempotency_key="org/e2")
    assert later.duplicate and (later.partition, later.offset) == (
        same_batch[0].partition,
        same_batch[0].offset,
    )
    racing = await asyncio.gather(
        *(log.produce("events", None, b"x", idempotency_key="org/e3") for _ in range(20))
    )
    assert sum(not p.duplicate for p in racing) == 1
    assert len({(p.partition, p.offset) for p in racing}) == 1
    total = sum(p.end_offset for p in (await log.describe_topic("events")).partitions)
    assert total == 1 + 2 + 1


async def test_a_commit_started_over_keeps_fresh_partitions_dense(log: EmbeddedLog) -> None:
    """A known key makes a commit start over with a lookup. The records it had placed on
    partitions never written before must not keep the offsets of that first try."""
    first = await log.produce_batch(
        "events", [NewRecord(value=b"a", partition=0, idempotency_key="k")]
    )
    again = await log.produce_batch(
        "events",
        [
            NewRecord(value=b"b", partition=1),
            NewRecord(value=b"c", partition=2, idempotency_key="k2"),
            NewRecord(value=b"d", partition=0, idempotency_key="k"),
        ],
    )
    assert [(p.partition, p.offset, p.duplicate) for p in again] == [
        (1, 0, False),
        (2, 0, False),
        (0, first[0].offset, True),
    ]
    later = await log.produce_batch("events", [NewRecord(value=b"e", partition=1)])
    assert (later[0].partition, later[0].offset) == (1, 1)


async def test_idempotency_survives_reopen_and_expires(tmp_path: Path) -> None:
    path = tmp_path / "idem.sqlite3"
    spec = TopicSpec(name="t", partitions=1)
    async with EmbeddedLog(path, topics=[spec], dedup_window_s=0.3) as log:
        first = await log.produce("t", None, b"x", idempotency_key="e")
    async with EmbeddedLog(path, topics=[spec], dedup_window_s=0.3) as log:
        again = await log.produce("t", None, b"x", idempotency_key="e")
        assert again.duplicate and again.offset == first.offset
        await asyncio.sleep(0.4)
        await log.enforce_retention()
        later = await log.produce("t", None, b"x", idempotency_key="e")
        assert not later.duplicate and later.offset == 1


async def test_wal_is_checkpointed_off_the_commit_path(tmp_path: Path) -> None:
    log = EmbeddedLog(
        tmp_path / "log.sqlite3",
        topics=[TopicSpec(name="events", partitions=4)],
        checkpoint_interval_s=0.02,
        wal_restart_pages=256,
    )
    await log.open()
    try:
        wal = Path(f"{log.path}-wal")
        value = bytes(2_000)
        for _ in range(20):
            await log.produce_batch("events", [NewRecord(value=value) for _ in range(100)])
        # 4 MB of records: without a checkpoint they would all still sit in the WAL only.
        deadline = time.monotonic() + 5
        while log.path.stat().st_size < 4_000_000 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert log.path.stat().st_size >= 4_000_000
        # Under constant commits the WAL is restarted past its bound (1 MiB here), so the
        # file stops growing with the log: 24 MB more records.
        for _ in range(120):
            await log.produce_batch("events", [NewRecord(value=value) for _ in range(100)])
            await asyncio.sleep(0.005)
        assert wal.stat().st_size < 12_000_000
        produced = await log.produce("events", None, b"after")
        [record] = await log.read("events", produced.partition, produced.offset, 1)
        assert record.value == b"after"
    finally:
        await log.close()


@pytest.mark.parametrize("writer", ["process", "thread"])
async def test_a_second_commit_waits_behind_the_first_and_both_answer_in_order(
    tmp_path: Path, writer: Literal["process", "thread"]
) -> None:
    path = tmp_path / "two.sqlite3"
    log = EmbeddedLog(path, topics=[TopicSpec(name="t", partitions=1)], writer=writer)
    async with log:
        committer = log._committer_or_fail()
        # Another connection holds the write lock: the first commit blocks on it.
        with write_lock_held(path):
            first = asyncio.ensure_future(log.produce("t", None, b"a"))
            await asyncio.sleep(0.05)
            second = asyncio.ensure_future(log.produce("t", None, b"b"))
            await asyncio.sleep(0.05)
            third = asyncio.ensure_future(log.produce("t", None, b"c"))
            await asyncio.sleep(0.05)
            # Two commits were handed over; the third record waits for room.
            assert committer.in_flight == 2
            assert committer.queued_records == 1
            assert not (first.done() or second.done() or third.done())
        produced = await asyncio.wait_for(asyncio.gather(first, second, third), 10)
        assert [p.offset for p in produced] == [0, 1, 2]
        assert committer.in_flight == 0
        records = await collect(log.tail("t", start="beginning"), 3)
        assert [r.value for r in records] == [b"a", b"b", b"c"]


async def test_group_commits_and_the_records_they_answered_are_counted(log: EmbeddedLog) -> None:
    assert (log.group_commits, log.committed_records) == (0, 0)
    await asyncio.gather(*(log.produce("events", None, b"%d" % i) for i in range(50)))
    await log.produce_batch("events", [NewRecord(value=b"a"), NewRecord(value=b"b")])
    await log.produce("events", None, b"again", idempotency_key="k")
    await log.produce("events", None, b"again", idempotency_key="k")
    assert log.committed_records == 54
    # Fifty produce calls made together share their commits.
    assert 4 <= log.group_commits < 20


class Answers:
    """Collects what ``produce_soon`` callbacks are called with, by record."""

    def __init__(self) -> None:
        self.calls: defaultdict[str, list[Produced | BaseException]] = defaultdict(list)

    def callback(self, name: str) -> Done:
        return lambda outcome: self.calls[name].append(outcome)

    async def wait_for(self, count: int) -> None:
        async with asyncio.timeout(10):
            while len(self.calls) < count:
                await asyncio.sleep(0.01)


async def test_single_records_share_commit_entries_and_keep_their_order(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite3"
    log = EmbeddedLog(
        path,
        topics=[TopicSpec(name="t", partitions=1), TopicSpec(name="u", partitions=1)],
        commit_max_records=5,
    )
    answers = Answers()
    async with log:
        committer = log._committer_or_fail()
        with write_lock_held(path):
            for i in range(7):
                log.produce_soon("t", None, b"t%d" % i, answers.callback(f"t{i}"))
            # Seven single records, at most five per commit: two commits in flight.
            await asyncio.sleep(0.05)
            assert (committer.in_flight, committer.queued_records) == (2, 0)
            log.produce_soon("t", None, b"t7", answers.callback("t7"))
            batch = asyncio.ensure_future(
                log.produce_batch("t", [NewRecord(value=b"b0"), NewRecord(value=b"b1")])
            )
            await asyncio.sleep(0.05)
            log.produce_soon("u", None, b"u0", answers.callback("u0"))
            log.produce_soon("t", None, b"t8", answers.callback("t8"))
            log.produce_soon("t", None, b"t9", answers.callback("t9"))
            await asyncio.sleep(0.05)
            assert committer.queued_records == 6
            assert not answers.calls
        await answers.wait_for(11)
        batch_positions = await asyncio.wait_for(batch, 10)
    assert all(len(calls) == 1 for calls in answers.calls.values())
    offsets = {name: calls[0].offset for name, calls in answers.calls.items()}  # type: ignore[union-attr]
    assert [offsets[f"t{i}"] for i in range(8)] == list(range(8))
    assert [p.offset for p in batch_positions] == [8, 9]
    assert [offsets["t8"], offsets["t9"], offsets["u0"]] == [10, 11, 0]


async def test_a_failed_commit_answers_every_single_record_of_it(tmp_path: Path) -> None:
    path = tmp_path / "fail.sqlite3"
    log = EmbeddedLog(path, topics=[TopicSpec(name="t", partitions=1)], commit_max_records=5)
    answers = Answers()
    async with log:
        with write_lock_held(path):
            for i in range(7):
                log.produce_soon("t", None, b"%d" % i, answers.callback(str(i)))
            await asyncio.sleep(0.05)
            assert log._process is not None and log._process.pid is not None
            os.kill(log._process.pid, signal.SIGKILL)
            await answers.wait_for(7)
        assert sorted(answers.calls) == [str(i) for i in range(7)]
        for calls in answers.calls.values():
            assert len(calls) == 1 and isinstance(calls[0], Unavailable)
        # The next commit starts a new commit process.
        again = await log.produce("t", None, b"after")
        assert again.offset == 0


async def test_a_commit_that_cannot_be_handed_over_fails_alone(tmp_path: Path) -> None:
    log = EmbeddedLog(
        tmp_path / "alone.sqlite3", topics=[TopicSpec(name="t", partitions=1)], commit_max_records=1
    )
    async with log:
        # A header value the commit process's wire format cannot carry: encoding it for the
        # hand-over raises before anything reaches the commit process.
        unsendable = NewRecord(value=b"x", headers=(("h", object()),))  # type: ignore[arg-type]
        bad = asyncio.ensure_future(log.produce_batch("t", [unsendable]))
        good = [asyncio.ensure_future(log.produce("t", None, b"g%d" % i)) for i in range(3)]
        with pytest.raises(Unavailable, match="could not commit"):
            await asyncio.wait_for(bad, 10)
        produced = await asyncio.wait_for(asyncio.gather(*good), 10)
        assert [p.offset for p in produced] == [0, 1, 2]
