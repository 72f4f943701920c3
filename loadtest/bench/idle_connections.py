"""Memory per idle WebSocket session: RSS of the gateway with N authenticated idle sessions.

    python -m loadtest.bench.idle_connections [--counts 1000,10000] [--out FILE]

Each session is a real connection that authenticated and then sends nothing. The figure is
(RSS with N sessions - RSS before) / N, beside the same figure for the bare Starlette ack
server (the stack's ceiling). Needs about N file descriptors in each of the generator and
the server: the benchmark raises its soft RLIMIT_NOFILE to the hard limit before starting
the servers, which inherit it; the hard limit must be above N (``ulimit -Hn``).
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

from gateway.auth.tokens import TokenAuthority
from loadtest.bench.report import CpuMeter, machine, print_table, write_json
from loadtest.bench.ws_gateway import SECRET, start_bare, start_gateway
from loadtest.bench.wsgen import WsConnection


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def hold(port: int, pid: int, count: int, token: str | None) -> dict[str, Any]:
    path = f"/ws?token={token}" if token else "/ws"
    before = rss_kib(pid)
    connections: list[WsConnection] = []
    meter = CpuMeter()
    started = time.perf_counter()
    for start in range(0, count, 200):
        batch = await asyncio.gather(
            *(
                WsConnection.open("127.0.0.1", port, path)
                for _ in range(start, min(count, start + 200))
            )
        )
        if token:
            for conn in batch:
                await conn.recv()  # welcome: the session is authenticated
        connections.extend(batch)
    opened_s = time.perf_counter() - started
    generator_cpu = meter.cores()
    await asyncio.sleep(2.0)  # let the server settle
    after = rss_kib(pid)
    for conn in connections:
        conn.close()
    return {
        "sessions": count,
        "rss_before_mib": before / 1024,
        "rss_after_mib": after / 1024,
        "kib_per_session": (after - before) / count,
        "open_per_s": count / opened_s,
        "generator_cpu": generator_cpu,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--counts", default="1000,10000")
    parser.add_argument("--out")
    args = parser.parse_args()
    counts = [int(c) for c in args.counts.split(",")]
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = max(counts) + 1024
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise SystemExit(f"RLIMIT_NOFILE hard limit {hard} < {needed}: raise it (ulimit -Hn)")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    token = TokenAuthority(SECRET).mint("idle", "bench", ("subscribe",), 3600)
    rows = []
    for count in counts:
        with tempfile.TemporaryDirectory() as tmp:
            gateway, gateway_port = start_gateway(Path(tmp))
            bare, bare_port = start_bare()
            try:
                result = asyncio.run(hold(gateway_port, gateway.pid, count, token))
                ceiling = asyncio.run(hold(bare_port, bare.pid, count, None))
            finally:
                for proc in (gateway, bare):
                    proc.terminate()
                    proc.wait()
            rows.append(
                {
                    **result,
                    "bare_kib_per_session": ceiling["kib_per_session"],
                    "ratio_to_bare": result["kib_per_session"]
                    / max(ceiling["kib_per_session"], 0.001),
                    "bare_generator_cpu": ceiling["generator_cpu"],
                }
            )
    print_table("Idle authenticated WebSocket sessions: gateway memory", rows)
    info = {**machine(), "rlimit_nofile": [hard, hard]}
    print(f"\nmachine: {info}")
    write_json(args.out, {"machine": info, "results": rows})


if __name__ == "__main__":
    main()
