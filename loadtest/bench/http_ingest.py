"""HTTP ingest (``POST /api/v1/stream/events``) beside its ceilings, measured in the same run.

    python -m loadtest.bench.http_ingest [--target URL] [--requests 10000] [--connections 50]
        [--out FILE]

Keep-alive connections of the raw-socket generator ``httpgen`` post one event per request,
each waiting for its answer. Beside the gateway's figure: the bare ack server's route of the
same path on the same uvicorn stack (reads the body, answers a fixed ack), and raw SQLite
inserts of the same number of rows (the durable write's ceiling). Without ``--target`` a
gateway is started here (memory pipeline off).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path
from typing import Any

from loadtest.bench import bare, httpgen, target
from loadtest.bench.log_produce import raw_sqlite
from loadtest.bench.report import (
    CpuMeter,
    ProcessCpuMeter,
    machine,
    percentile,
    print_table,
    write_json,
)

BODY = (
    b'{"topic":"user-events","key":"alice","event":{"type":"user_interaction",'
    b'"payload":{"action":"clicked","importance":0.1}}}'
)


async def drive(
    host: str, port: int, token: str | None, requests: int, connections: int, pid: int | None
) -> dict[str, Any]:
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    raw = httpgen.post(host, port, "/api/v1/stream/events", BODY, headers)
    meter = CpuMeter()
    server = ProcessCpuMeter(pid)
    latencies, elapsed, errors = await httpgen.run(host, port, raw, connections, requests)
    if errors:
        raise RuntimeError(f"{errors} of {len(latencies)} requests were not answered 200")
    return {
        "requests_per_s": len(latencies) / elapsed,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "server_cpu": server.cores(),
        "generator_cpu": meter.cores(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    target.add_flags(parser)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--out")
    args = parser.parse_args()
    with target.gateway(args.target, args.jwt_secret) as gateway:
        described = gateway.describe()
        pid = gateway.proc.pid if gateway.proc else None
        result = asyncio.run(
            drive(
                gateway.host,
                gateway.port,
                gateway.token("http-ingest"),
                args.requests,
                args.connections,
                pid,
            )
        )
    proc, port = bare.start("bare_ack_server")
    try:
        ceiling = asyncio.run(
            drive("127.0.0.1", port, None, args.requests, args.connections, proc.pid)
        )
    finally:
        bare.stop(proc)
    with tempfile.TemporaryDirectory() as tmp:
        sqlite_rows = raw_sqlite(Path(tmp) / "raw.db", args.requests, "NORMAL")
    row = {
        "scenario": f"POST /api/v1/stream/events, {args.connections} connections",
        "gateway_per_s": result["requests_per_s"],
        "bare_per_s": ceiling["requests_per_s"],
        "share_of_bare": result["requests_per_s"] / ceiling["requests_per_s"],
        "raw_sqlite_rows_per_s": sqlite_rows,
        "gateway_p50_ms": result["p50_ms"],
        "gateway_p99_ms": result["p99_ms"],
        "bare_p99_ms": ceiling["p99_ms"],
        "gateway_cpu": result["server_cpu"],
        "bare_cpu": ceiling["server_cpu"],
        "generator_cpu": result["generator_cpu"],
        "bare_generator_cpu": ceiling["generator_cpu"],
    }
    print_table("HTTP ingest: gateway vs bare route vs raw SQLite", [row])
    print(f"\ngateway: {described['url']} (started here: {described['started_by_benchmark']})")
    write_json(
        args.out,
        {
            "machine": machine(),
            "gateway": described,
            "bare_stack": bare.stack(),
            "results": [row],
            "gateway_raw": result,
            "bare_raw": ceiling,
        },
    )


if __name__ == "__main__":
    main()
