"""The project's own SmartModules (smartmodules/dist) run through the engine."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sm_helpers import BASE_TS, DIST, event, make_records, values

from gateway.smartmodules import (
    InvalidSmartModuleParams,
    SmartModuleEngine,
    SmartModuleInitError,
    SmartModuleRecordError,
    SmartModuleRegistry,
)


def run(registry: SmartModuleRegistry, name: str, items: list[Any], **params: Any) -> list[bytes]:
    chain = registry.chain([{"smartmodule": name, "params": params}])
    return values(chain.process(make_records(items)).records)


# -- event-filter --------------------------------------------------------------------


def test_event_filter_default_threshold(registry: SmartModuleRegistry) -> None:
    items = [
        event(importance=0.8),
        event(importance=0.7),
        event(importance=0.69),
        event(importance=None),
        event(importance=1),
    ]
    assert run(registry, "event-filter", items) == [
        items[0].encode(),
        items[1].encode(),
        items[4].encode(),
    ]


def test_event_filter_missing_importance_counts_as_half(registry: SmartModuleRegistry) -> None:
    items = [
        event(importance=None),
        event(payload={"importance": "0.9"}, importance=None),
        event(importance=0.4),
    ]
    # A missing or non-numeric importance is 0.5.
    assert len(run(registry, "event-filter", items, min_importance=0.5)) == 2
    assert len(run(registry, "event-filter", items, min_importance="0.51")) == 0


@pytest.mark.parametrize(
    "types",
    [
        "user_interaction,system_event",
        ["user_interaction", "system_event"],
        '["user_interaction", "system_event"]',
        " user_interaction , system_event ",
    ],
)
def test_event_filter_types(registry: SmartModuleRegistry, types: Any) -> None:
    items = [event("user_interaction"), event("agent_action"), event("system_event")]
    kept = run(registry, "event-filter", items, types=types)
    assert [json.loads(v)["type"] for v in kept] == ["user_interaction", "system_event"]


def test_event_filter_compares_decoded_strings(registry: SmartModuleRegistry) -> None:
    escaped = '{"type": "user\\u005finteraction", "payload": {"importance": 0.9}}'
    unicode = '{"type": "caf\\u00e9 \\ud83c\\udf89", "payload": {"importance": 0.9}}'
    assert run(registry, "event-filter", [escaped], types="user_interaction") == [escaped.encode()]
    assert run(registry, "event-filter", [unicode], types="café 🎉") == [unicode.encode()]


@pytest.mark.parametrize(
    "value",
    [
        b"not json",
        b"",
        b"{",
        b"[1, 2]",
        b'{"a": 1} extra',
        b'{"type": "\xff"}',
        b"\x00\x01",
        b'{"payload": {"importance": 0.9}, }',
        b'{"payload": ' + b"[" * 600 + b"]" * 600 + b"}",
        b'{"payload": {"importance": 01}}',
        b'{"a": "tab\tinside"}',
    ],
)
def test_event_filter_drops_values_that_are_not_json_objects(
    registry: SmartModuleRegistry, value: bytes
) -> None:
    assert run(registry, "event-filter", [value], min_importance=0) == []


def test_event_filter_handles_deep_and_huge_values(registry: SmartModuleRegistry) -> None:
    deep = '{"payload": {"importance": 0.9, "x": ' + "[" * 300 + "]" * 300 + "}}"
    huge = event(importance=0.9, payload={"content": "é" * 1_000_000})
    small = event(importance=0.1)
    assert run(registry, "event-filter", [deep, huge, small]) == [deep.encode(), huge.encode()]


def test_event_filter_params_are_checked_by_host_and_module(
    tmp_path: Path, registry: SmartModuleRegistry
) -> None:
    with pytest.raises(InvalidSmartModuleParams) as caught:
        registry.chain([{"smartmodule": "event-filter", "params": {"min_importance": 2}}])
    assert caught.value.param == "min_importance"
    assert str(caught.value) == (
        "param 'min_importance' of SmartModule 'event-filter' must be a number between 0 and 1, "
        "got '2'"
    )
    with pytest.raises(InvalidSmartModuleParams, match="accepted params: min_importance, types"):
        registry.chain([{"smartmodule": "event-filter", "params": {"min_importanc": 1}}])
    # Loaded without its manifest, the module itself refuses bad params in init.
    engine = SmartModuleEngine(tmp_path)
    bare = engine.load((DIST / "event-filter.wasm").read_bytes(), name="bare")
    with pytest.raises(SmartModuleInitError) as init:
        engine.chain([(bare, {"min_importance": "abc"})])
    assert init.value.hint == (
        "event-filter: param min_importance must be a number between 0 and 1, got 'abc'"
    )
    with pytest.raises(SmartModuleInitError, match="unknown param 'x'"):
        engine.chain([(bare, {"x": "1"})])


@pytest.mark.parametrize("version", [22, 25])
def test_event_filter_works_at_smdk_and_spu_versions(tmp_path: Path, version: int) -> None:
    registry = SmartModuleRegistry(SmartModuleEngine(tmp_path, version=version))
    items = [event(importance=0.9), event(importance=0.1)]
    assert run(registry, "event-filter", items) == [items[0].encode()]


# -- data-transform ------------------------------------------------------------------


def test_data_transform_builds_a_memory_item(registry: SmartModuleRegistry) -> None:
    source = event(
        importance=0.9,
        id="evt-42",
        organization_id="org-7",
        user_id="user-9",
        timestamp=BASE_TS + 99,
        payload={"action": 'clicked "Buy"\n🎉 café', "context": {"page": "/cart", "n": [1, 2]}},
    )
    chain = registry.chain([{"smartmodule": "data-transform"}])
    out = chain.process(make_records([source], first_offset=12, key=b"user-9")).records
    assert (out[0].offset, out[0].key) == (12, b"user-9")
    assert json.loads(out[0].value) == {
        "organization_id": "org-7",
        "user_id": "user-9",
        "content": 'clicked "Buy"\n🎉 café',
        "memory_type": "episodic",
        "importance": 0.9,
        "timestamp": BASE_TS + 99,
        "metadata": {
            "context": {"page": "/cart", "n": [1, 2]},
            "source_event_id": "evt-42",
            "source_event_type": "user_interaction",
        },
    }


def test_data_transform_defaults_and_memory_type_param(registry: SmartModuleRegistry) -> None:
    body = json.loads(event(importance=None, payload={"action": "a"}))
    del body["timestamp"]
    out = run(registry, "data-transform", [json.dumps(body)], memory_type="semantic")
    item = json.loads(out[0])
    assert item["importance"] == 0.5 and item["memory_type"] == "semantic"
    assert item["timestamp"] == BASE_TS  # the record's own timestamp
    assert item["metadata"]["context"] is None


@pytest.mark.parametrize(
    ("value", "hint"),
    [
        (
            event("agent_action", payload={"action": "x"}),
            "event type 'agent_action' is not user_interaction; put event-filter with "
            "types=user_interaction in front of data-transform",
        ),
        ("plain text", "value is not a JSON object (an event envelope was expected)"),
        (event(payload={"context": {}}), "payload.action must be a string"),
        (event(payload={"action": 3}), "payload.action must be a string"),
        (
            '{"type": "user_interaction", "user_id": "u", "payload": {"action": "a"}}',
            "missing field organization_id",
        ),
    ],
)
def test_data_transform_soft_errors(registry: SmartModuleRegistry, value: str, hint: str) -> None:
    good = event(payload={"action": "ok"})
    chain = registry.chain([{"smartmodule": "data-transform"}])
    with pytest.raises(SmartModuleRecordError) as caught:
        chain.process(make_records([good, value, good], first_offset=3))
    error = caught.value
    assert error.offset == 4 and error.kind == "map" and error.value == value.encode()
    assert error.hint == f"data-transform: {hint}"
    assert [json.loads(r.value)["content"] for r in error.successes] == ["ok"]
    assert [r.offset for r in error.remaining] == [5]


def test_filter_then_transform(registry: SmartModuleRegistry) -> None:
    chain = registry.chain(
        [
            {"smartmodule": "event-filter", "params": {"types": "user_interaction"}},
            {"smartmodule": "data-transform"},
        ]
    )
    items = [event("agent_action"), event(payload={"action": "kept"}), event(importance=0.1)]
    out = chain.process(make_records(items)).records
    assert [json.loads(r.value)["content"] for r in out] == ["kept"]


# -- event-aggregate -----------------------------------------------------------------


def test_event_aggregate_keeps_running_state(registry: SmartModuleRegistry) -> None:
    chain = registry.chain([{"smartmodule": "event-aggregate"}])
    first = chain.process(
        make_records(
            [
                event(importance=0.25, id="a"),
                "not json",
                event(importance=None, id="b", timestamp=7),
            ]
        )
    )
    states = [json.loads(v) for v in values(first.records)]
    assert [s["event_count"] for s in states] == [1, 1, 2]
    assert states[2] == {
        "event_count": 2,
        "total_importance": 0.75,
        "last_event": {"id": "b", "type": "user_interaction", "timestamp": 7},
    }
    assert json.loads(first.accumulator or b"") == states[2]
    second = chain.process(make_records([event(importance=1, id="c")], first_offset=3))
    assert json.loads(values(second.records)[0])["event_count"] == 3


def test_event_aggregate_continues_from_an_initial_state(registry: SmartModuleRegistry) -> None:
    initial = '{"event_count": 10, "total_importance": 5, "last_event": null}'
    chain = registry.chain([{"smartmodule": "event-aggregate"}], aggregate_initial=initial)
    state = json.loads(values(chain.process(make_records([event(importance=0.5)])).records)[0])
    assert (state["event_count"], state["total_importance"]) == (11, 5.5)


def test_event_aggregate_rejects_a_foreign_accumulator(registry: SmartModuleRegistry) -> None:
    chain = registry.chain([{"smartmodule": "event-aggregate", "aggregate_initial": "[1]"}])
    with pytest.raises(SmartModuleRecordError, match="start from an empty accumulator"):
        chain.process(make_records([event()]))


def test_event_aggregate_takes_no_params(registry: SmartModuleRegistry) -> None:
    with pytest.raises(InvalidSmartModuleParams, match="accepted params: none"):
        registry.chain([{"smartmodule": "event-aggregate", "params": {"x": 1}}])


# -- memory-filter -------------------------------------------------------------------


def update(op: str = "created", **fields: Any) -> str:
    body = {
        "op": op,
        "memory_id": "m1",
        "memory_type": "episodic",
        "organization_id": "org-1",
        "user_id": "user-1",
        "agent_id": "agent-1",
        "importance": 0.8,
        "content": "c",
        "version": 1,
        "source": {"topic": "events", "partition": 0, "offset": 3},
        "timestamp": BASE_TS,
    }
    body.update(fields)
    return json.dumps({k: v for k, v in body.items() if v is not None})


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, [0, 1, 2, 3, 4]),
        ({"user_id": "user-1"}, [0, 2, 3, 4]),
        ({"organization_id": "org-2"}, [1]),
        ({"memory_types": "semantic,procedural"}, [2]),
        ({"min_importance": 0.6}, [0, 1, 2, 4]),
        ({"ops": ["deleted", "expired"]}, [3, 4]),
        ({"ops": "created", "user_id": "user-1", "min_importance": "0.7"}, [0]),
    ],
)
@pytest.mark.parametrize("shape", ["bare", "envelope"])
def test_memory_filter(
    registry: SmartModuleRegistry, params: dict[str, Any], expected: list[int], shape: str
) -> None:
    items = [
        update(),
        update(organization_id="org-2", user_id="user-2"),
        update("updated", memory_type="semantic"),
        update("deleted", importance=0.2),
        update("expired", importance=0.65),
    ]
    if shape == "envelope":
        # As the memory pipeline writes them to memory-updates: the update is the payload.
        items = [
            json.dumps(
                {
                    "type": "memory_update",
                    "id": f"u{i}",
                    "organization_id": json.loads(item)["organization_id"],
                    "user_id": json.loads(item)["user_id"],
                    "timestamp": BASE_TS,
                    "payload": json.loads(item),
                }
            )
            for i, item in enumerate(items)
        ]
    kept = run(registry, "memory-filter", items, **params)
    assert kept == [items[i].encode() for i in expected]


def test_memory_filter_missing_fields_and_bad_values(registry: SmartModuleRegistry) -> None:
    items = [update(importance=None), update(user_id=None), "garbage", update(user_id=7)]
    assert run(registry, "memory-filter", items, min_importance=0.5) == [
        items[0].encode(),
        items[1].encode(),
        items[3].encode(),
    ]
    assert run(registry, "memory-filter", items, user_id="user-1") == [items[0].encode()]


def test_memory_filter_ops_are_validated(registry: SmartModuleRegistry, tmp_path: Path) -> None:
    with pytest.raises(InvalidSmartModuleParams) as caught:
        registry.chain([{"smartmodule": "memory-filter", "params": {"ops": "created,archived"}}])
    assert caught.value.param == "ops"
    assert "among created, updated, deleted, expired" in str(caught.value)
    engine = SmartModuleEngine(tmp_path)
    bare = engine.load((DIST / "memory-filter.wasm").read_bytes(), name="bare")
    with pytest.raises(SmartModuleInitError, match="'archived' is not an op"):
        engine.chain([(bare, {"ops": "archived"})])
