"""Several params at once, through the real wasm and the real engine.

memory-filter runs over memory updates made by the memory pipeline's own producer code
(``agents.updates``): the ``memory_update`` envelopes it writes to ``memory-updates``,
and the bare updates (the envelopes' payloads). Every combination of its params is
checked against a reference written here in Python, at the ABI version the gateway
passes (24) and the one ``smdk test`` passes (22). event-filter's two params get the
same treatment, and a chain with params in two modules runs end to end.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from sm_helpers import BASE_TS, event, make_records, values

from agents.store.sqlite import HistoryRow
from agents.updates import history_update_row
from gateway.smartmodules import SmartModuleEngine, SmartModuleRegistry

TOPIC = "memory-updates"

# (organization_id, user_id, memory_type, op, importance)
UPDATES = [
    ("org-a", "u-1", "episodic", "created", 0.9),
    ("org-a", "u-1", "semantic", "updated", 0.4),
    ("org-a", "u-2", "episodic", "created", 0.8),
    ("org-b", "u-1", "procedural", "deleted", 0.95),  # the same user id in another org
    ("org-b", "u-3", "episodic", "expired", 0.6),
    ("org-a", "u-1", "episodic", "deleted", 0.7),
    ("org-a", 'u-"q', "semantic", "created", 0.75),  # a value the JSON text escapes
    ("org-ü", "u-1", "episodic", "created", 0.5),  # and one it does not
]


def envelope(index: int) -> bytes:
    org, user, memory_type, op, importance = UPDATES[index]
    row = HistoryRow(
        id=index + 1,
        memory_id=f"mem-{index}",
        organization_id=org,
        user_id=user,
        memory_type=memory_type,  # type: ignore[arg-type]
        version=1,
        op=op,  # type: ignore[arg-type]
        content=f"memory {index}",
        importance=importance,
        changed_at=BASE_TS + index,
        source_topic="user-events",
        source_partition=0,
        source_offset=index,
        agent_id="agent-1" if index % 2 else None,
    )
    topic, key, value, _ = history_update_row(row, TOPIC)
    assert topic == TOPIC and key == user.encode()
    return value


ENVELOPES = [envelope(i) for i in range(len(UPDATES))]
BARE = [json.dumps(json.loads(v)["payload"], ensure_ascii=False).encode() for v in ENVELOPES]


def expected(params: dict[str, Any]) -> list[int]:
    """What memory-filter should keep: the updates matching every given param."""
    kept = []
    for i, (org, user, memory_type, op, importance) in enumerate(UPDATES):
        if "organization_id" in params and org != params["organization_id"]:
            continue
        if "user_id" in params and user != params["user_id"]:
            continue
        if "memory_types" in params and memory_type not in params["memory_types"]:
            continue
        if "ops" in params and op not in params["ops"]:
            continue
        if "min_importance" in params and importance < params["min_importance"]:
            continue
        kept.append(i)
    return kept


ORGS = [None, "org-a", "org-b", "org-ü", "org-none"]
USERS = [None, "u-1", "u-2", 'u-"q', "u-none"]
OTHERS: list[dict[str, Any]] = [
    {},
    {"memory_types": ["episodic", "procedural"]},
    {"min_importance": 0.7},
    {"ops": ["created", "deleted"]},
    {"memory_types": ["episodic"], "min_importance": 0.75, "ops": ["created", "deleted"]},
]


def combinations() -> list[dict[str, Any]]:
    combos = []
    for org, user, others in itertools.product(ORGS, USERS, OTHERS):
        params: dict[str, Any] = dict(others)
        if org is not None:
            params["organization_id"] = org
        if user is not None:
            params["user_id"] = user
        combos.append(params)
    return combos


def label(params: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in params.items()) or "none"


@pytest.fixture(params=[24, 22], ids=["abi24", "abi22"])
def versioned_registry(request: pytest.FixtureRequest, compiled_cache: Path) -> SmartModuleRegistry:
    return SmartModuleRegistry(SmartModuleEngine(compiled_cache, version=request.param))


def keep(registry: SmartModuleRegistry, params: dict[str, Any], items: list[bytes]) -> list[int]:
    with registry.chain([{"smartmodule": "memory-filter", "params": params}]) as chain:
        records = make_records(items, topic=TOPIC, partition=3, first_offset=100)
        return [r.offset - 100 for r in chain.process(records).records]


@pytest.mark.parametrize("params", combinations(), ids=label)
def test_memory_filter_params_combined(
    versioned_registry: SmartModuleRegistry, params: dict[str, Any]
) -> None:
    want = expected(params)
    assert keep(versioned_registry, params, ENVELOPES) == want, "memory_update envelopes"
    assert keep(versioned_registry, params, BARE) == want, "bare memory updates"


@pytest.mark.parametrize("shape", ["envelope", "bare"])
def test_memory_filter_organization_and_user_keep_that_users_updates(
    registry: SmartModuleRegistry, shape: str
) -> None:
    # What a subscriber following its own memory updates sends (the load test's
    # SubscriberUser among them), in both key orders.
    items = ENVELOPES if shape == "envelope" else BARE
    for params in (
        {"organization_id": "org-a", "user_id": "u-1"},
        {"user_id": "u-1", "organization_id": "org-a"},
    ):
        chain = registry.chain([{"smartmodule": "memory-filter", "params": params}])
        kept = values(chain.process(make_records(items, topic=TOPIC)).records)
        assert kept == [items[0], items[1], items[5]]


def test_memory_filter_params_reach_init_as_sent(registry: SmartModuleRegistry) -> None:
    # Both params are validated and handed to init as one string map.
    params = {"user_id": "u-1", "organization_id": "org-b"}
    assert registry.validate("memory-filter", params) == params
    spec = registry.spec([{"smartmodule": "memory-filter", "params": params}])
    assert spec.links[0].params == (("organization_id", "org-b"), ("user_id", "u-1"))
    assert keep(registry, params, ENVELOPES) == [3]


# -- event-filter and a chain with params in two modules ------------------------------

EVENTS = [
    event(event_type, importance, id=f"e{i}", payload={"action": f"action {i}"})
    for i, (event_type, importance) in enumerate(
        [
            ("user_interaction", 0.9),
            ("user_interaction", 0.6),
            ("app_event", 0.95),
            ("app_event", None),
            ("chat_message", 0.8),
            ("user_interaction", None),
        ]
    )
]


def expected_events(params: dict[str, Any]) -> list[int]:
    threshold = params.get("min_importance", 0.7)
    types = params.get("types")
    kept = []
    for i, text in enumerate(EVENTS):
        body = json.loads(text)
        importance = body["payload"].get("importance", 0.5)
        if types is not None and body["type"] not in types:
            continue
        if importance >= threshold:
            kept.append(i)
    return kept


@pytest.mark.parametrize("min_importance", [None, 0.5, 0.85])
@pytest.mark.parametrize(
    "types", [None, ["user_interaction"], ["app_event", "user_interaction"], ["none"]]
)
def test_event_filter_params_combined(
    versioned_registry: SmartModuleRegistry, min_importance: float | None, types: Any
) -> None:
    params: dict[str, Any] = {}
    if min_importance is not None:
        params["min_importance"] = min_importance
    if types is not None:
        params["types"] = types
    chain = versioned_registry.chain([{"smartmodule": "event-filter", "params": params}])
    kept = values(chain.process(make_records(EVENTS)).records)
    assert kept == [EVENTS[i].encode() for i in expected_events(params)]


def test_chain_with_params_in_two_modules(registry: SmartModuleRegistry) -> None:
    chain = registry.chain(
        [
            {
                "smartmodule": "event-filter",
                "params": {"min_importance": 0.5, "types": "user_interaction"},
            },
            {"smartmodule": "data-transform", "params": {"memory_type": "semantic"}},
        ]
    )
    out = [json.loads(v) for v in values(chain.process(make_records(EVENTS)).records)]
    assert [m["metadata"]["source_event_id"] for m in out] == ["e0", "e1", "e5"]
    assert {m["memory_type"] for m in out} == {"semantic"}
