"""Helpers shared by the SmartModule tests (imported by name: conftest puts this
directory on ``sys.path``)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import wasmtime

from gateway.streamlog.interface import Record

FIXTURES = Path(__file__).parent / "fixtures"
DIST = Path(__file__).resolve().parents[3] / "smartmodules" / "dist"
BASE_TS = 1_763_000_000_000


def make_records(
    items: Iterable[bytes | str],
    *,
    topic: str = "events",
    partition: int = 0,
    first_offset: int = 0,
    first_ts: int = BASE_TS,
    ts_step: int = 1,
    key: bytes | None = None,
) -> list[Record]:
    out = []
    for i, item in enumerate(items):
        data = item.encode() if isinstance(item, str) else item
        out.append(Record(topic, partition, first_offset + i, first_ts + i * ts_step, key, data))
    return out


def values(output: Sequence[Any]) -> list[bytes]:
    return [r.value for r in output]


def event(
    event_type: str = "user_interaction",
    importance: float | None = 0.8,
    *,
    payload: dict[str, Any] | None = None,
    **fields: Any,
) -> str:
    body: dict[str, Any] = {
        "id": fields.pop("id", "evt-1"),
        "type": event_type,
        "organization_id": fields.pop("organization_id", "org-1"),
        "user_id": fields.pop("user_id", "user-1"),
        "timestamp": fields.pop("timestamp", BASE_TS),
        "payload": dict(payload or {}),
    }
    if importance is not None:
        body["payload"]["importance"] = importance
    body.update(fields)
    return json.dumps(body)


def wat(source: str) -> bytes:
    return bytes(wasmtime.wat2wasm(source))


# A filter whose allocator only ever grows and that exports no dealloc: every call
# leaks its input, like a module the engine can only keep in check by recycling.
LEAKY_FILTER = """
(module
  (import "env" "copy_records" (func $copy (param i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "\\00\\00\\00\\00\\00")
  (global $top (mut i32) (i32.const 1024))
  (func (export "alloc") (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $top))
    (global.set $top (i32.add (global.get $top) (local.get $n)))
    (block $done
      (loop $more
        (br_if $done (i32.le_u (global.get $top) (i32.mul (memory.size) (i32.const 65536))))
        (if (i32.eq (memory.grow (i32.const 16)) (i32.const -1)) (then unreachable))
        (br $more)))
    (local.get $p))
  (func (export "filter") (param i32 i32 i32) (result i32)
    (call $copy (i32.const 16) (i32.const 5))
    (i32.const 0)))
"""
