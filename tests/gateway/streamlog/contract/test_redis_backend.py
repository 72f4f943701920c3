"""What only the Redis backend promises: its stream id scheme, its failure modes and
replication, on real redis-server processes (a restarted server, a replica)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

import pytest
from servers import free_port

from gateway.errors import Unavailable
from gateway.streamlog.interface import NewRecord, Record, TopicSpec
from gateway.streamlog.redis import RedisLog

if TYPE_CHECKING:
    from conftest import RedisServer  # from this directory's conftest.py

TOPICS = [TopicSpec(name="t", partitions=2)]


@pytest.fixture
async def log(redis_server: RedisServer) -> AsyncIterator[RedisLog]:
    with redis_server.client() as client:
        client.flushall()
    redis_log = RedisLog(redis_server.url, topics=TOPICS)
    await redis_log.open()
    yield redis_log
    await redis_log.close()


async def test_stream_ids_are_offsets(log: RedisLog, redis_server: RedisServer) -> None:
    await log.produce_batch(
        "t",
        [
            NewRecord(value=b"a", partition=1),
            NewRecord(value=b"bb", key=b"k", headers=(("h", b"1"),), partition=1),
        ],
    )
    with redis_server.client() as client:
        entries = client.xrange("agentmem:{t}:1")
        state = client.hgetall("agentmem:{t}:state")
    assert [entry_id for entry_id, _ in entries] == [b"0-1", b"1-1"]
    first, second = (fields for _, fields in entries)
    assert set(first) == {b"t", b"c", b"v"} and first[b"v"] == b"a" and first[b"c"] == b"0"
    assert set(second) == {b"t", b"c", b"v", b"k", b"h"} and second[b"c"] == b"1"
    assert state[b"n1"] == b"2" and state[b"b1"] == b"4"
    assert abs(int(first[b"t"]) - time.time() * 1000) < 5_000


async def test_key_prefixes_keep_deployments_apart(redis_server: RedisServer) -> None:
    with redis_server.client() as client:
        client.flushall()
    async with (
        RedisLog(redis_server.url, topics=TOPICS, key_prefix="blue") as blue,
        RedisLog(redis_server.url, topics=[TopicSpec("u", 1)], key_prefix="green") as green,
    ):
        assert (await blue.produce("t", None, b"x")).offset == 0
        assert [t.name for t in green.topics()] == ["u"]
        assert [t.name for t in blue.topics()] == ["t"]
    with pytest.raises(ValueError, match="braces"):
        RedisLog(redis_server.url, key_prefix="a{b}")


async def test_unreachable_redis_is_unavailable_without_leaking_the_password() -> None:
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    log = RedisLog(url, connect_timeout_s=0.5)
    with pytest.raises(Unavailable, match="unreachable") as caught:
        await log.open()
    assert "hunter2" not in caught.value.message
    assert caught.value.temporary


async def collect(log: RedisLog, count: int, into: list[Record]) -> None:
    tail = log.tail("t", start="beginning")
    try:
        async for batch in tail:
            into.extend(batch)
            if len(into) >= count:
                return
    finally:
        await tail.aclose()


async def test_redis_kill_9_with_aof_always_keeps_acks_and_tails_resume(
    redis_factory: Callable[..., RedisServer],
) -> None:
    server = redis_factory("--appendonly", "yes", "--appendfsync", "always")
    async with RedisLog(server.url, topics=TOPICS, connect_timeout_s=0.5, block_ms=200) as log:
        followed: list[Record] = []
        follower = asyncio.create_task(collect(log, 300, followed))
        acked = [await log.produce("t", b"k%d" % (i % 3), b"v%d" % i) for i in range(150)]
        server.kill()
        with pytest.raises(Unavailable, match="unreachable"):
            await log.produce("t", None, b"lost")
        with pytest.raises(Unavailable):
            await log.check_writable()
        server.start()
        await log.check_writable()
        for i, where in enumerate(acked):
            [record] = await log.read("t", where.partition, where.offset, 1)
            assert record.value == b"v%d" % i
        more = [await log.produce("t", b"k%d" % (i % 3), b"w%d" % i) for i in range(150)]
        ends = {p: max(w.offset for w in acked + more if w.partition == p) for p in (0, 1)}
        for p in (0, 1):
            offsets = sorted(w.offset for w in acked + more if w.partition == p)
            assert offsets == list(range(ends[p] + 1))
        # The tail lost its connection with the server and resumed without gap or repeat.
        await asyncio.wait_for(follower, 15)
        for p in (0, 1):
            assert [r.offset for r in followed if r.partition == p] == list(range(ends[p] + 1))


async def wait_for_replica(primary: RedisServer, replica: RedisServer) -> None:
    deadline = time.monotonic() + 10
    with replica.client() as client:
        while client.info("replication").get("master_link_status") != "up":
            assert time.monotonic() < deadline, "the replica did not sync"
            await asyncio.sleep(0.05)


async def test_wait_replicas(redis_factory: Callable[..., RedisServer]) -> None:
    primary = redis_factory("--repl-diskless-sync-delay", "0")  # sync the replica at once
    replica = redis_factory("--replicaof", "127.0.0.1", str(primary.port))
    await wait_for_replica(primary, replica)
    async with RedisLog(primary.url, topics=TOPICS, wait_replicas=1) as log:
        with primary.client() as client:
            client.script_flush()  # the produce pipeline then meets NOSCRIPT and loads it
        await log.check_writable()
        where = await log.produce("t", None, b"replicated", idempotency_key="e1")
        with replica.client() as client:
            assert client.xrange(f"agentmem:{{t}}:{where.partition}")[0][1][b"v"] == b"replicated"
    async with RedisLog(primary.url, wait_replicas=2, wait_timeout_ms=100) as strict:
        with pytest.raises(Unavailable, match="only 1 of 2 replicas"):
            await strict.produce("t", None, b"under-replicated", idempotency_key="e2")
        # Retrying with the same key does not write it again (and still reports the shortfall).
        with pytest.raises(Unavailable, match="only 1 of 2 replicas"):
            await strict.produce("t", None, b"under-replicated", idempotency_key="e2")
        with pytest.raises(Unavailable, match="Only 1 of the 2"):
            await strict.check_writable()
        description = await strict.describe_topic("t")
        assert sum(p.end_offset for p in description.partitions) == 2


async def test_replica_refuses_writes_as_unavailable(
    redis_factory: Callable[..., RedisServer],
) -> None:
    primary = redis_factory("--repl-diskless-sync-delay", "0")  # sync the replica at once
    async with RedisLog(primary.url, topics=TOPICS):
        pass
    replica = redis_factory("--replicaof", "127.0.0.1", str(primary.port))
    await wait_for_replica(primary, replica)
    async with RedisLog(replica.url) as log:
        with pytest.raises(Unavailable, match="read-only replica"):
            await log.produce("t", None, b"x")
        with pytest.raises(Unavailable, match="read-only replica"):
            await log.check_writable()
        assert await log.read("t", 0, 0, 10) == []


@pytest.mark.parametrize("keyed", [True, False], ids=["idempotency-keys", "no-keys"])
async def test_produces_ride_over_a_redis_restart(
    redis_factory: Callable[..., RedisServer], keyed: bool
) -> None:
    """Connections left in the pool by a restarted server fail once; produces are sent
    again and succeed, exactly once: with their idempotency keys, or without (an event
    whose id the gateway generated) with keys of their call."""
    server = redis_factory("--appendonly", "yes", "--appendfsync", "always")
    async with RedisLog(server.url, topics=TOPICS, connect_timeout_s=0.5) as log:
        await asyncio.gather(*(log.produce("t", None, b"warm") for _ in range(8)))
        ends = [p.end_offset for p in (await log.describe_topic("t")).partitions]
        server.kill()
        server.start()
        produced = await asyncio.gather(
            *(
                log.produce("t", b"k", b"v%d" % i, idempotency_key=f"e{i}" if keyed else None)
                for i in range(8)
            )
        )
        assert not any(p.duplicate for p in produced)
        partition = produced[0].partition  # all in one: the same key
        assert sorted(p.offset for p in produced) == list(
            range(ends[partition], ends[partition] + 8)
        )
        records = await log.read("t", partition, ends[partition], 100)
        assert sorted(r.value for r in records) == sorted(b"v%d" % i for i in range(8))


def test_a_resent_produce_call_is_answered_as_written(redis_server: RedisServer) -> None:
    """The produce script run twice for one call (its first reply lost) writes once and
    answers the call's records as written; another call with the same keys gets duplicates."""
    from gateway.streamlog.redis.scripts import PRODUCE

    state, stream, idem = "agentmem:{t}:state", "agentmem:{t}:0", "agentmem:{t}:idem:e"
    keys = [state, stream, idem]

    def call(nonce: str) -> list[int]:
        # Two records of partition 0 with the same idempotency key "e" (KEYS[3]).
        record = [2, 0, 3, 0, b"", b"v", b""]
        with redis_server.client() as client:
            reply = client.eval(PRODUCE, len(keys), *keys, 600_000, 2, nonce, *record, *record)
        return [int(x) for x in reply]

    with redis_server.client() as client:
        client.flushall()
    first = call("call-1")
    assert first[:2] == [0, 0] and first[3] == 0 and first[4:6] == [0, 0] and first[7] == 1
    assert call("call-1") == first
    assert [call("call-2")[i] for i in (3, 7)] == [1, 1]
    with redis_server.client() as client:
        assert client.xlen(stream) == 1
