"""The memory pipeline end to end: throughput over a backlog, update latency at a steady
rate, and raw SQLite inserting the same memories as a ceiling, all in one run.

    python -m loadtest.bench.memory_pipeline [--events 30000] [--users 1000]
        [--rate 1000] [--rate-seconds 10] [--loop auto|uvloop|asyncio] [--no-settle]
        [--out loadtest/results/memory-pipeline.json]

Everything runs in one process on the event loop ``serve`` would use (``--loop``). Once the
pipeline has started, its start-up state is frozen out of garbage collection as ``serve``
and ``agents`` do (``gateway.heap.settle``); ``--no-settle`` measures without that.

1. **throughput**: ``--events`` chat messages (a quarter "I like ... tea" statements of
   the users with facts, which the semantic agent deduplicates and supersedes; the rest
   episodic) are written to the log first (opened as the gateway opens it, with default
   settings: the embedded log); then a ``MemoryPipeline`` starts over them and the
   clock runs until every record is applied and every memory update is produced (``wait_idle``): events in the log, the SmartModule chain (none for
   ``chat-messages``), the stream processor, the meta-memory manager, the agents, the
   store and the updates produced to ``memory-updates``. Each event makes one memory
   change (a memory, or a new version of one). The process's CPU over the phase is
   printed: it holds the pipeline and the log only; the apply process (the agents'
   transactions, ``apply_process``) is printed beside it.
2. **latency**: with the pipeline caught up, chat messages produced at ``--rate`` per
   second (in ticks of 10 ms) for ``--rate-seconds``; the time from the produce call to
   the matching ``memory_update`` read from a tail of ``memory-updates``. The producer
   and that tail run in the same process, so the CPU printed for this phase includes
   them.
3. **ceiling**: Python's ``sqlite3`` inserting the rows the pipeline wrote to
   ``memories`` into a new database with the same schema (indexes and full-text index,
   filled the way the store fills it), 5,000 rows per transaction, no other work.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

from agents.runner import MemoryPipeline
from agents.store.schema import CACHE_KIB, MEMORY_COLUMNS, STATEMENTS, pragmas
from gateway import heap
from gateway.cli.serve import loop_factory
from gateway.services import open_registry
from gateway.settings import Settings
from gateway.streamlog.factory import open_log
from gateway.streamlog.interface import NewRecord, StreamLog
from loadtest.bench.report import (
    CpuMeter,
    ProcessCpuMeter,
    machine,
    percentile,
    print_header,
    print_table,
    write_json,
)

ORG = "bench"
TEAS = ("green", "black", "oolong", "mint")
TOPICS = ("budget", "trip", "garden", "book")


def chat_event(i: int, users: int, rng: random.Random) -> NewRecord:
    """Event ``i``: user ``i % users``; every fourth a preference, else a plain message."""
    user = f"u{i % users}"
    if i % 4 == 0:
        content = f"I like {rng.choice(TEAS)} tea number {i}"
    else:
        content = f"Talked about the {rng.choice(TOPICS)} item {i}"
    event = {
        "type": "chat_message",
        "id": f"ev-{i}",
        "organization_id": ORG,
        "user_id": user,
        "timestamp": int(time.time() * 1000),
        "payload": {"conversation_id": f"c{i % 50}", "role": "user", "content": content},
    }
    return NewRecord(value=json.dumps(event).encode(), key=user.encode())


async def throughput(
    pipeline: MemoryPipeline,
    log: StreamLog,
    events: int,
    users: int,
    rng: random.Random,
    settle: bool = True,
) -> dict[str, Any]:
    for start in range(0, events, 1_000):
        batch = [chat_event(i, users, rng) for i in range(start, min(events, start + 1_000))]
        await log.produce_batch("chat-messages", batch)
    meter = CpuMeter()
    started = time.perf_counter()
    await pipeline.start()
    child = ProcessCpuMeter(pipeline.process.pid if pipeline.process else None)
    if settle:
        heap.settle()  # as `serve` and `agents` do once started
    await pipeline.worker.wait_idle(timeout=600, poll_s=0.01)
    elapsed = time.perf_counter() - started
    cores = meter.cores()
    child_cores = child.cores()
    memories = int((await pipeline.store.fetch("SELECT count(*) FROM memories"))[0][0])
    changes = pipeline.worker.publisher.produced
    return {
        "events": events,
        "memories": memories,
        "updates": changes,
        "seconds": elapsed,
        "events_per_s": events / elapsed,
        "updates_per_s": changes / elapsed,
        "cpu_cores": cores,
        "apply_process_cpu_cores": child_cores,
    }


async def latency(
    log: StreamLog, first: int, rate: int, seconds: float, users: int, rng: random.Random
) -> dict[str, Any]:
    description = await log.describe_topic("memory-updates")
    tail = log.tail(
        "memory-updates", None, start={p.partition: p.end_offset for p in description.partitions}
    )
    sent: dict[tuple[int, int], float] = {}
    latencies: list[float] = []
    total = int(rate * seconds)

    async def follow() -> None:
        async for records in tail:
            arrived = time.perf_counter()
            for record in records:
                source = json.loads(record.value)["payload"].get("source")
                at = sent.get((source["partition"], source["offset"])) if source else None
                if at is not None:
                    latencies.append((arrived - at) * 1000)
            if len(latencies) >= total:
                return

    follower = asyncio.create_task(follow())
    meter = CpuMeter()
    tick = 0.01
    per_tick = max(1, round(rate * tick))
    begin = time.perf_counter()
    i = first
    while i < first + total:
        batch = [chat_event(n, users, rng) for n in range(i, min(first + total, i + per_tick))]
        now = time.perf_counter()
        futures = [log.produce_nowait("chat-messages", r.key, r.value) for r in batch]
        for future in futures:
            produced = await future
            sent[(produced.partition, produced.offset)] = now
        i += len(batch)
        delay = begin + (i - first) / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
    try:
        await asyncio.wait_for(follower, 30)
    except TimeoutError:
        follower.cancel()
    await tail.aclose()
    return {
        "rate_per_s": rate,
        "events": total,
        "updates_seen": len(latencies),
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "max_ms": max(latencies, default=float("nan")),
        "cpu_cores": meter.cores(),
    }


def ceiling(source: Path, target: Path, per_transaction: int = 5_000) -> dict[str, Any]:
    """Raw ``sqlite3`` inserts of the rows of ``source``'s ``memories`` into a new
    database with the same schema, the full-text index filled once per transaction."""
    with sqlite3.connect(source) as db:
        rows = db.execute(f"SELECT {MEMORY_COLUMNS} FROM memories ORDER BY rowid").fetchall()
    db = sqlite3.connect(target, isolation_level=None)
    for pragma in pragmas("process", cache_kib=CACHE_KIB):
        db.execute(pragma)
    for statement in STATEMENTS:
        db.execute(statement)
    insert = f"INSERT INTO memories ({MEMORY_COLUMNS}) VALUES ({', '.join('?' * 21)})"
    meter = CpuMeter()
    started = time.perf_counter()
    for start in range(0, len(rows), per_transaction):
        db.execute("BEGIN IMMEDIATE")
        (top,) = db.execute("SELECT coalesce(max(rowid), 0) FROM memories").fetchone()
        db.executemany(insert, rows[start : start + per_transaction])
        db.execute(
            "INSERT INTO memories_fts (rowid, content) "
            "SELECT rowid, content FROM memories WHERE rowid > ?",
            (top,),
        )
        db.execute("COMMIT")
    elapsed = time.perf_counter() - started
    cores = meter.cores()
    db.close()
    return {
        "rows": len(rows),
        "seconds": elapsed,
        "rows_per_s": len(rows) / elapsed,
        "cpu_cores": cores,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        settings = Settings(data_dir=data_dir, memory_pipeline="serve")
        log = open_log(settings)  # as the gateway opens it (embedded by default)
        await log.open()
        pipeline = MemoryPipeline.from_settings(settings, log, registry=open_registry(settings))
        try:
            backlog = await throughput(
                pipeline, log, args.events, args.users, rng, settle=not args.no_settle
            )
            steady = await latency(log, args.events, args.rate, args.rate_seconds, args.users, rng)
        finally:
            await pipeline.stop(10)
            await log.close()
        raw = ceiling(data_dir / "memory.sqlite3", data_dir / "ceiling.sqlite3")
    backlog["share_of_ceiling"] = backlog["events_per_s"] / raw["rows_per_s"]
    return {"throughput": backlog, "latency": steady, "ceiling": raw}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--users", type=int, default=1_000)
    parser.add_argument("--rate", type=int, default=1_000)
    parser.add_argument("--rate-seconds", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument(
        "--no-settle",
        action="store_true",
        help="skip freezing start-up state out of garbage collection (for comparison)",
    )
    parser.add_argument(
        "--loop",
        choices=("auto", "uvloop", "asyncio"),
        default="auto",
        help="event loop, as the gateway's event_loop setting (auto: uvloop when installed)",
    )
    parser.add_argument("--out", default="loadtest/results/memory-pipeline.json")
    args = parser.parse_args()
    print_header()
    with asyncio.Runner(loop_factory=loop_factory(args.loop)) as runner:
        results = runner.run(run(args))
        loop = type(runner.get_loop()).__module__.split(".")[0]
    print(f"event loop: {loop}")
    backlog, steady, raw = results["throughput"], results["latency"], results["ceiling"]
    print_table(
        "Memory pipeline (embedded log, in process; ceiling: raw sqlite3, same schema)",
        [
            {
                "phase": "backlog",
                "events": backlog["events"],
                "events/s": backlog["events_per_s"],
                "updates/s": backlog["updates_per_s"],
                "p50 ms": "-",
                "p99 ms": "-",
                "cpu cores": backlog["cpu_cores"],
                "apply process": backlog["apply_process_cpu_cores"] or "-",
                "of ceiling": f"{backlog['share_of_ceiling']:.0%}",
            },
            {
                "phase": f"steady {steady['rate_per_s']}/s",
                "events": steady["events"],
                "events/s": "-",
                "updates/s": "-",
                "p50 ms": steady["p50_ms"],
                "p99 ms": steady["p99_ms"],
                "cpu cores": steady["cpu_cores"],
                "apply process": "-",
                "of ceiling": "-",
            },
            {
                "phase": "ceiling: sqlite3 memories",
                "events": raw["rows"],
                "events/s": raw["rows_per_s"],
                "updates/s": "-",
                "p50 ms": "-",
                "p99 ms": "-",
                "cpu cores": raw["cpu_cores"],
                "apply process": "-",
                "of ceiling": "100%",
            },
        ],
    )
    write_json(
        args.out,
        {
            "command": "python -m loadtest.bench.memory_pipeline",
            **vars(args),
            "machine": machine(),
            "event_loop": loop,
            **results,
        },
    )


if __name__ == "__main__":
    main()
