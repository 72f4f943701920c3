"""Durable produces per second: in-process and over HTTP, with their ceilings.

    python -m loadtest.bench.log_produce [--records 60000] [--out results/log.json]

In-process runs pin the process to one core. Each figure is printed beside raw SQLite
inserts of the same rows (one transaction per 1,000 rows, no Python per-record work
beyond the tuple), measured in the same run, as a ceiling.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from gateway.auth.tokens import TokenAuthority
from gateway.streamlog.embedded import EmbeddedLog
from gateway.streamlog.interface import TopicSpec
from loadtest.bench import httpgen
from loadtest.bench.bare import gateway_environ
from loadtest.bench.report import CpuMeter, machine, percentile, print_table, write_json

VALUE = (
    b'{"type":"user_interaction","id":"0123456789abcdef0123456789abcdef","organization_id":"acme",'
    b'"user_id":"alice","timestamp":1763000000000,"payload":{"action":"clicked","importance":0.8}}'
)


def raw_sqlite(path: Path, records: int, synchronous: str) -> float:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={synchronous}")
    db.execute(
        "CREATE TABLE r (id INTEGER PRIMARY KEY AUTOINCREMENT, t INT, p INT, o INT, ts INT, "
        "k BLOB, v BLOB, h BLOB)"
    )
    db.execute("CREATE UNIQUE INDEX r_pos ON r (t, p, o)")
    db.execute("CREATE INDEX r_t ON r (t)")
    rows = [(1, i % 16, i // 16, 0, b"alice", VALUE, None) for i in range(records)]
    started = time.perf_counter()
    for i in range(0, records, 1000):
        db.execute("BEGIN")
        db.executemany(
            "INSERT INTO r (t, p, o, ts, k, v, h) VALUES (?,?,?,?,?,?,?)", rows[i : i + 1000]
        )
        db.execute("COMMIT")
    elapsed = time.perf_counter() - started
    db.close()
    return records / elapsed


async def in_process(path: Path, records: int, producers: int, durability: str) -> dict[str, Any]:
    log = EmbeddedLog(path, topics=[TopicSpec(name="bench", partitions=16)], durability=durability)  # type: ignore[arg-type]
    await log.open()
    latencies: list[float] = []
    per_producer = records // producers

    async def producer(n: int) -> None:
        key = b"user-%d" % n
        for _ in range(per_producer):
            started = time.perf_counter()
            await log.produce("bench", key, VALUE)
            latencies.append(time.perf_counter() - started)

    meter = CpuMeter()
    started = time.perf_counter()
    await asyncio.gather(*(producer(n) for n in range(producers)))
    elapsed = time.perf_counter() - started
    # In process, generator and log are one process (its writer thread included): its CPU
    # stands in for the generator CPU of the network rows.
    process_cpu = meter.cores()
    await log.close()
    return {
        "path": f"in-process, {producers} producers",
        "durability": durability,
        "produces_per_s": per_producer * producers / elapsed,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "process_cpu": process_cpu,
    }


SECRET = "bench-secret-0123456789abcdef-0123456789"


def start_server(data_dir: Path, durability: str) -> tuple[subprocess.Popen[bytes], int]:
    port = _free_port()
    env = {
        **gateway_environ(),
        "AGENTMEM_DATA_DIR": str(data_dir),
        "AGENTMEM_JWT_SECRET": SECRET,
        "AGENTMEM_DURABILITY": durability,
        "AGENTMEM_LOG_LEVEL": "warning",
        "AGENTMEM_MEMORY_PIPELINE": "off",
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(400):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=0.5).status_code == 200:
                return server, port
        except httpx.HTTPError:
            time.sleep(0.05)
    server.kill()
    raise RuntimeError("the gateway did not start")


async def over_http(port: int, requests: int, concurrency: int, durability: str) -> dict[str, Any]:
    token = TokenAuthority(SECRET).mint("alice", "acme")
    body = (
        b'{"topic":"user-events","key":"alice","event":{"type":"user_interaction",'
        b'"payload":{"action":"clicked","importance":0.8}}}'
    )
    raw = httpgen.post(
        "127.0.0.1",
        port,
        "/api/v1/stream/events",
        body,
        {"authorization": f"Bearer {token}", "content-type": "application/json"},
    )
    cpu_before = time.process_time()
    latencies, elapsed, errors = await httpgen.run("127.0.0.1", port, raw, concurrency, requests)
    generator_cpu = (time.process_time() - cpu_before) / elapsed
    if errors:
        raise RuntimeError(f"{errors} requests failed")
    return {
        "path": f"HTTP, {concurrency} connections",
        "durability": durability,
        "produces_per_s": len(latencies) / elapsed,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "generator_cpu": generator_cpu,
    }


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=60_000)
    parser.add_argument("--producers", type=int, default=200)
    parser.add_argument("--http-requests", type=int, default=10_000)
    parser.add_argument("--http-concurrency", type=int, default=50)
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        if hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
        for durability, synchronous in (("process", "NORMAL"), ("power", "FULL")):
            ceiling = raw_sqlite(base / f"raw-{durability}.db", args.records, synchronous)
            row = asyncio.run(
                in_process(base / f"log-{durability}.db", args.records, args.producers, durability)
            )
            row["ceiling_raw_sqlite_per_s"] = ceiling
            row["share_of_ceiling"] = row["produces_per_s"] / ceiling
            rows.append(row)
        if hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
        for durability in ("process", "power"):
            data = base / f"http-{durability}"
            data.mkdir()
            server, port = start_server(data, durability)
            try:
                rows.append(
                    asyncio.run(
                        over_http(port, args.http_requests, args.http_concurrency, durability)
                    )
                )
            finally:
                server.terminate()
                server.wait()
    print_table("Durable produces (user-events-like 200-byte envelopes)", rows)
    info = machine()
    print(f"\nmachine: {info}")
    write_json(args.out, {"machine": info, "results": rows})


if __name__ == "__main__":
    main()
