"""SmartModule engine throughput: records per second through a chain, and per-call cost.

    python -m loadtest.bench.smartmodule_throughput [--seconds 1.5] [--out results/sm.json]

The process is pinned to one core. Scenarios, each at several batch sizes:

- ``pass-through``: a minimal filter (written in WAT here) that keeps every record
  without looking at it, so the figure is the engine itself: encoding, the wasm calls,
  matching the output to the input records;
- ``event-filter``: the project's filter on ~200-byte JSON envelopes, half of them
  kept; its wasm part validates and scans every envelope;
- ``event-filter, prepared``: the same with input encoded once beforehand, as when one
  batch is shared by several subscribers;
- ``data-transform``: the project's map (every output record is decoded).

Per-call overhead is the time of a one-record call through the pass-through filter,
with wasmtime's public Python call API for comparison.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import wasmtime

if __package__ in (None, ""):
    # Run as a script: make the repository importable.
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from gateway.smartmodules import ChainInstance, SmartModuleEngine
from gateway.smartmodules.registry import BUILTIN_DIR
from gateway.streamlog.interface import Record
from loadtest.bench.report import machine, print_table, write_json

# Keeps every record: the records block of the input, followed by "no error", is a
# valid output, so the filter hands back that part of its own input buffer.
PASS_THROUGH = """
(module
  (import "env" "copy_records" (func $copy (param i32 i32)))
  (memory (export "memory") 1)
  (func (export "alloc") (param $n i32) (result i32)
    (block $ok
      (loop $grow
        (br_if $ok (i32.le_u (i32.add (i32.const 1024) (local.get $n))
                             (i32.mul (memory.size) (i32.const 65536))))
        (if (i32.eq (memory.grow (i32.const 16)) (i32.const -1)) (then unreachable))
        (br $grow)))
    (i32.const 1024))
  (func $be32 (param $p i32) (result i32)
    (i32.or
      (i32.or (i32.shl (i32.load8_u (local.get $p)) (i32.const 24))
              (i32.shl (i32.load8_u offset=1 (local.get $p)) (i32.const 16)))
      (i32.or (i32.shl (i32.load8_u offset=2 (local.get $p)) (i32.const 8))
              (i32.load8_u offset=3 (local.get $p)))))
  (func (export "filter") (param $ptr i32) (param $len i32) (param $version i32) (result i32)
    (local $block i32)
    (local.set $block (call $be32 (i32.add (local.get $ptr) (i32.const 8))))
    (i32.store8 (i32.add (i32.add (local.get $ptr) (i32.const 12)) (local.get $block))
                (i32.const 0))
    (call $copy (i32.add (local.get $ptr) (i32.const 12))
                (i32.add (local.get $block) (i32.const 1)))
    (i32.const 0)))
"""

BATCH_SIZES = (1, 10, 100, 1000)


def envelopes(n: int) -> list[Record]:
    records = []
    for i in range(n):
        value = json.dumps(
            {
                "id": f"{i:032x}",
                "type": "user_interaction",
                "organization_id": "acme",
                "user_id": f"user-{i % 97}",
                "timestamp": 1763000000000 + i,
                "payload": {"action": "clicked", "importance": (i % 10) / 10, "context": {"n": i}},
            },
            separators=(",", ":"),
        ).encode()
        records.append(Record("events", 0, i, 1763000000000 + i, None, value))
    return records


def measure(run: Callable[[], int], seconds: float, windows: int = 10) -> float:
    """Records per second of ``run`` (which returns the records it processed): the best
    of ``windows`` short windows over about ``seconds``, since the machine is shared and
    a slow window says more about the neighbours than about the engine."""
    run()  # warm up
    best = 0.0
    for _ in range(windows):
        done = 0
        started = time.perf_counter()
        deadline = started + seconds / windows
        while True:
            done += run()
            now = time.perf_counter()
            if now >= deadline:
                break
        best = max(best, done / (now - started))
    return best


def scenario(
    name: str,
    chain: ChainInstance,
    records: list[Record],
    size: int,
    seconds: float,
    prepared: bool = False,
) -> dict[str, Any]:
    batches = [records[i : i + size] for i in range(0, len(records), size)]
    inputs: list[Any] = [chain.prepare(b) for b in batches] if prepared else batches
    position = 0
    out_count = 0

    def run() -> int:
        nonlocal position, out_count
        batch = inputs[position % len(inputs)]
        position += 1
        out_count += len(chain.process(batch).records)
        return len(batch)

    rate = measure(run, seconds)
    kept = out_count / max(1, position * size)
    return {
        "scenario": name,
        "records/call": size,
        "records/s": rate,
        "us/call": size / rate * 1e6,
        "kept": round(kept, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=1.5, help="time per measurement")
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args(argv)

    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

    records = envelopes(10_000)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        engine = SmartModuleEngine(Path(tmp))
        public = SmartModuleEngine(Path(tmp), direct_calls=False)
        wat = bytes(wasmtime.wat2wasm(PASS_THROUGH))
        passthrough = engine.chain([engine.load(wat, name="pass-through")])
        event_filter = engine.chain(
            [(engine.load(BUILTIN_DIR / "event-filter.wasm"), {"min_importance": 0.5})]
        )
        transform = engine.chain([engine.load(BUILTIN_DIR / "data-transform.wasm")])
        for size in BATCH_SIZES:
            rows.append(scenario("pass-through", passthrough, records, size, args.seconds))
        for size in BATCH_SIZES:
            rows.append(scenario("event-filter", event_filter, records, size, args.seconds))
        rows.append(
            scenario(
                "event-filter, prepared", event_filter, records, 1000, args.seconds, prepared=True
            )
        )
        rows.append(scenario("data-transform", transform, records, 1000, args.seconds))
        slow = public.chain([public.load(wat, name="pass-through")])
        overhead_public = scenario("pass-through, public API", slow, records, 1, args.seconds)
        rows.append(overhead_public)

    print_table("SmartModule throughput (one core)", rows)
    one = next(r for r in rows if r["scenario"] == "pass-through" and r["records/call"] == 1)
    floor = next(r for r in rows if r["scenario"] == "event-filter" and r["records/call"] == 1000)
    print(
        f"\nper-call overhead: {one['us/call']:.1f} us "
        f"(public wasmtime API: {overhead_public['us/call']:.1f} us)"
    )
    print(
        f"event-filter at 1,000 records/call: {floor['records/s']:,.0f} records/s "
        f"({'meets' if floor['records/s'] >= 300_000 else 'BELOW'} the 300,000 floor)"
    )
    info = machine()
    info["wasmtime"] = importlib.metadata.version("wasmtime")
    write_json(
        args.out,
        {
            "command": " ".join(["python -m loadtest.bench.smartmodule_throughput", *sys.argv[1:]]),
            "machine": info,
            "per_call_overhead_us": one["us/call"],
            "per_call_overhead_public_api_us": overhead_public["us/call"],
            "rows": rows,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
