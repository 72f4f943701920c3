"""The whole benchmark suite: ``python -m loadtest.bench [--quick] [--out-dir DIR]``.

Runs every benchmark of this package in turn, each starting the servers it measures (the
gateway and, as its ceiling, the bare Starlette ack server or raw SQLite), printing its
table and writing its JSON into ``--out-dir``. ``--quick`` shortens each run (for a smoke
check; the figures in docs/benchmarks.md come from full runs).

``--target URL`` runs the network benchmarks instead (``TARGET_SUITE``: WebSocket publish
and fan-out, HTTP ingest, publish to memory update) against a gateway already running at
URL, e.g. ``make run``'s http://127.0.0.1:8080; the bare ceiling servers still start here,
in the same run. The token secret is found as ``loadtest.bench.target`` describes.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

SUITE: list[tuple[str, list[str], list[str] | None]] = [
    # (module, full-run arguments, quick-run arguments; None: skipped in quick runs)
    ("log_produce", [], ["--records", "10000", "--http-requests", "2000"]),
    ("ws_gateway", ["--duration", "4"], ["--duration", "1"]),
    ("idle_connections", ["--counts", "1000,10000"], ["--counts", "500"]),
    ("smartmodule_throughput", ["--seconds", "2"], ["--seconds", "0.5"]),
    ("fanout_chains", [], ["--subscriptions", "1000", "--records", "2000"]),
    ("memory_search", [], None),
    ("memory_pipeline", [], ["--events", "5000", "--rate-seconds", "2"]),
    ("http_ingest", [], None),
    ("memory_update_ws", ["--rate", "1000", "--duration", "5"], None),
]

TARGET_SUITE: list[tuple[str, list[str], list[str]]] = [
    # (module, full-run arguments, quick-run arguments), each also given --target URL
    ("ws_gateway", ["--duration", "4"], ["--duration", "1"]),
    ("http_ingest", [], ["--requests", "2000"]),
    ("memory_update_ws", ["--rate", "1000", "--duration", "5"], ["--duration", "1"]),
]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="short runs, for a smoke check")
    parser.add_argument(
        "--out-dir", default=f"loadtest/results/bench-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    parser.add_argument("--only", action="append", help="run only these benchmarks (repeatable)")
    parser.add_argument(
        "--target",
        metavar="URL",
        help="run the network benchmarks against the gateway running at URL "
        "(e.g. http://127.0.0.1:8080 from `make run`)",
    )
    parser.add_argument(
        "--jwt-secret",
        help="the target's token secret (default $AGENTMEM_JWT_SECRET, else "
        "<$AGENTMEM_DATA_DIR or ./data>/jwt-secret)",
    )
    args = parser.parse_args()
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if args.jwt_secret:
        env["AGENTMEM_JWT_SECRET"] = args.jwt_secret  # not on a command line (ps)
    suite: list[tuple[str, list[str], list[str] | None]] = (
        [
            (name, [*full, "--target", args.target], [*quick, "--target", args.target])
            for name, full, quick in TARGET_SUITE
        ]
        if args.target
        else SUITE
    )
    failed = []
    for name, full, quick in suite:
        if args.only and name not in args.only:
            continue
        if not Path(__file__).with_name(f"{name}.py").exists():
            continue
        if args.quick and quick is None:
            continue
        command = [
            sys.executable,
            "-m",
            f"loadtest.bench.{name}",
            *((quick or []) if args.quick else full),
        ]
        command += ["--out", str(out / f"{name}.json")]
        print(f"\n=== {name}: {' '.join(command[1:])}", flush=True)
        if subprocess.run(command, env=env).returncode != 0:
            failed.append(name)
    print(f"\nresults in {out}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
