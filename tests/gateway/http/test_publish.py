"""``POST /api/v1/stream/events``: acknowledgements, the stored envelope, and every refusal."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from gateway.streamlog.partitioner import partition_for_key

EVENTS = "/api/v1/stream/events"
TOPICS = [
    "agent-actions",
    "audit-logs",
    "chat-messages",
    "memory-updates",
    "system-metrics",
    "user-events",
]


def read_one(client, headers, topic: str, partition: int, offset: int) -> dict[str, Any]:
    response = client.get(
        f"/api/v1/topics/{topic}/records",
        params={"partition": partition, "offset": offset, "limit": 1},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    records = response.json()["records"]
    assert len(records) == 1
    return records[0]


@pytest.mark.parametrize(
    ("topic", "kind", "partitions"),
    [
        ("user-events", "user_interaction", 16),
        ("agent-actions", "agent_action", 8),
        ("chat-messages", "chat_message", 16),
        ("system-metrics", "log_entry", 4),
        ("audit-logs", "log_entry", 8),
    ],
)
def test_publish_is_acknowledged_and_readable_with_the_stamped_envelope(
    client, tenant, unique_key, make_event, topic, kind, partitions
) -> None:
    key = unique_key()
    sent = make_event(kind)
    before = int(time.time() * 1000)
    response = client.post(
        EVENTS, headers=tenant.headers(), json={"topic": topic, "key": key, "event": sent}
    )
    after = int(time.time() * 1000)

    assert response.status_code == 200, response.text
    ack = response.json()
    assert set(ack) == {"success", "id", "topic", "partition", "offset", "timestamp", "duplicate"}
    assert ack["success"] is True
    assert ack["duplicate"] is False
    assert ack["topic"] == topic
    assert ack["partition"] == partition_for_key(key.encode(), partitions)
    assert isinstance(ack["offset"], int) and ack["offset"] >= 0
    assert isinstance(ack["id"], str) and ack["id"]
    assert before <= ack["timestamp"] <= after

    record = read_one(client, tenant.headers(), topic, ack["partition"], ack["offset"])
    assert record["topic"] == topic
    assert (record["partition"], record["offset"]) == (ack["partition"], ack["offset"])
    assert record["timestamp"] == ack["timestamp"]
    assert record["key"] == key
    envelope = record["data"]
    assert envelope["type"] == kind
    assert envelope["id"] == ack["id"]
    assert envelope["organization_id"] == tenant.org
    assert envelope["user_id"] == tenant.user
    assert before <= envelope["timestamp"] <= after
    for field, value in sent["payload"].items():
        assert envelope["payload"][field] == value


def test_client_id_and_timestamp_are_kept(client, tenant, unique_key, make_event) -> None:
    sent = make_event(id="evt-42", timestamp=1_700_000_000_000)
    response = client.post(
        EVENTS,
        headers=tenant.headers(),
        json={"topic": "user-events", "key": unique_key(), "event": sent},
    )
    assert response.status_code == 200, response.text
    ack = response.json()
    assert ack["id"] == "evt-42"
    envelope = read_one(client, tenant.headers(), "user-events", ack["partition"], ack["offset"])[
        "data"
    ]
    assert envelope["id"] == "evt-42"
    assert envelope["timestamp"] == 1_700_000_000_000


def test_events_without_a_key_spread_over_every_partition(client, tenant, make_event) -> None:
    # One partition after the other: 4 consecutive keyless events fill the 4 partitions.
    landed = []
    for _ in range(4):
        response = client.post(
            EVENTS,
            headers=tenant.headers(),
            json={"topic": "system-metrics", "event": make_event("log_entry")},
        )
        assert response.status_code == 200, response.text
        landed.append(response.json()["partition"])
    assert sorted(landed) == [0, 1, 2, 3]


def test_same_key_keeps_order_in_one_partition(client, tenant, unique_key, make_event) -> None:
    key = unique_key()
    acks = []
    for _ in range(3):
        response = client.post(
            EVENTS,
            headers=tenant.headers(),
            json={"topic": "agent-actions", "key": key, "event": make_event("agent_action")},
        )
        assert response.status_code == 200
        acks.append(response.json())
    assert {a["partition"] for a in acks} == {partition_for_key(key.encode(), 8)}
    first = acks[0]["offset"]
    assert [a["offset"] for a in acks] == [first, first + 1, first + 2]


def _body(value: Any) -> bytes:
    return value if isinstance(value, bytes) else json.dumps(value).encode()


def _ui(**payload: Any) -> dict[str, Any]:
    return {
        "topic": "user-events",
        "event": {"type": "user_interaction", "payload": {"action": "x", **payload}},
    }


@pytest.mark.parametrize(
    ("body", "status", "code", "path"),
    [
        pytest.param(b"{nope", 400, "invalid_frame", None, id="malformed-json"),
        pytest.param(b"", 400, "invalid_frame", None, id="empty-body"),
        pytest.param(b"\xff\xfe{}", 400, "invalid_frame", None, id="not-utf8"),
        pytest.param([], 422, "invalid_event", "$", id="not-an-object"),
        pytest.param({"topic": "user-events"}, 422, "invalid_event", "$", id="no-event"),
        pytest.param(
            {"topic": "user-events", "event": {"type": "user_interaction"}},
            422,
            "invalid_event",
            "$.event",
            id="no-payload",
        ),
        pytest.param(
            {"topic": "user-events", "event": {"payload": {"action": "x"}}},
            422,
            "invalid_event",
            "$.event",
            id="no-type",
        ),
        pytest.param(
            {"topic": "user-events", "event": {"type": "teleport", "payload": {}}},
            422,
            "invalid_event",
            "$.event.type",
            id="unknown-type",
        ),
        pytest.param(
            _ui(importance=1.5),
            422,
            "invalid_event",
            "$.event.payload.importance",
            id="importance-above-1",
        ),
        pytest.param(
            _ui(importance=-0.1),
            422,
            "invalid_event",
            "$.event.payload.importance",
            id="importance-below-0",
        ),
        pytest.param(
            _ui(importance="high"),
            422,
            "invalid_event",
            "$.event.payload.importance",
            id="importance-not-a-number",
        ),
        pytest.param(
            _ui(action=5), 422, "invalid_event", "$.event.payload.action", id="action-not-a-string"
        ),
        pytest.param(
            _ui(action=""), 422, "invalid_event", "$.event.payload.action", id="action-empty"
        ),
        pytest.param(
            _ui(context=[1]),
            422,
            "invalid_event",
            "$.event.payload.context",
            id="context-not-an-object",
        ),
        pytest.param(
            {**_ui(), "topic": 7}, 422, "invalid_event", "$.topic", id="topic-not-a-string"
        ),
        pytest.param({**_ui(), "key": 7}, 422, "invalid_event", "$.key", id="key-not-a-string"),
        pytest.param(
            {**_ui(), "key": "k" * 1025}, 422, "invalid_event", "$.key", id="key-too-long"
        ),
        pytest.param(
            {
                "topic": "user-events",
                "event": {"type": "user_interaction", "timestamp": -1, "payload": {"action": "x"}},
            },
            422,
            "invalid_event",
            "$.event.timestamp",
            id="negative-timestamp",
        ),
        pytest.param(
            {
                "topic": "user-events",
                "event": {"type": "user_interaction", "id": "", "payload": {"action": "x"}},
            },
            422,
            "invalid_event",
            "$.event.id",
            id="empty-id",
        ),
        pytest.param(
            {
                "topic": "chat-messages",
                "event": {
                    "type": "chat_message",
                    "payload": {"conversation_id": "c", "role": "robot", "content": "hi"},
                },
            },
            422,
            "invalid_event",
            "$.event.payload.role",
            id="chat-role-not-accepted",
        ),
        pytest.param(
            {"event": {"type": "user_interaction", "payload": {"action": "x"}}},
            422,
            "invalid_event",
            "$.topic",
            id="no-topic",
        ),
        pytest.param(
            {
                "topic": "user-events",
                "event": {
                    "type": "chat_message",
                    "payload": {"conversation_id": "c", "role": "user", "content": "hi"},
                },
            },
            422,
            "invalid_event",
            "$.event.type",
            id="type-not-accepted-by-topic",
        ),
        pytest.param(
            {
                "topic": "audit-logs",
                "event": {"type": "user_interaction", "payload": {"action": "x"}},
            },
            422,
            "invalid_event",
            "$.event.type",
            id="type-not-accepted-by-audit-logs",
        ),
    ],
)
def test_bad_events_are_refused_with_the_error_body(
    client, tenant, produced_total, body, status, code, path
) -> None:
    before = produced_total(client)
    response = client.post(
        EVENTS,
        headers={**tenant.headers(), "Content-Type": "application/json"},
        content=_body(body),
    )
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()
    assert set(error) <= {"code", "message", "details"}
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    if path is None:
        assert "details" not in error
    else:
        assert error["details"][0]["path"] == path
        assert all(set(d) == {"path", "problem"} and d["problem"] for d in error["details"])
    assert produced_total(client) == before


def test_unknown_type_lists_the_accepted_types(client, tenant) -> None:
    response = client.post(
        EVENTS,
        headers=tenant.headers(),
        json={"topic": "user-events", "event": {"type": "teleport", "payload": {}}},
    )
    problem = response.json()["details"][0]["problem"]
    assert "teleport" in problem
    for kind in ("user_interaction", "chat_message", "agent_action", "log_entry"):
        assert kind in problem


def test_type_not_accepted_names_what_the_topic_accepts(client, tenant, make_event) -> None:
    response = client.post(
        EVENTS,
        headers=tenant.headers(),
        json={"topic": "agent-actions", "event": make_event("chat_message")},
    )
    assert response.status_code == 422
    assert "agent_action" in response.json()["message"]


@pytest.mark.parametrize("route", [EVENTS, "/api/v1/topics/no-such-topic/records"])
def test_unknown_topic_is_404_listing_the_known_topics(client, tenant, make_event, route) -> None:
    if route == EVENTS:
        response = client.post(
            route, headers=tenant.headers(), json={"topic": "no-such-topic", "event": make_event()}
        )
    else:
        response = client.get(route, headers=tenant.headers())
    assert response.status_code == 404
    error = response.json()
    assert error["code"] == "unknown_topic"
    assert "no-such-topic" in error["message"]
    for name in TOPICS:
        assert name in error["message"]


@pytest.mark.parametrize(
    ("scopes", "topic", "envelope", "path"),
    [
        pytest.param(
            ("publish",), "memory-updates", {}, None, id="memory-updates-is-pipeline-only"
        ),
        pytest.param(
            ("publish", "admin"), "memory-updates", {}, None, id="memory-updates-even-for-admin"
        ),
        pytest.param(
            ("publish",),
            "user-events",
            {"organization_id": "someone-else"},
            "$.event.organization_id",
            id="another-organization",
        ),
        pytest.param(
            ("publish", "admin"),
            "user-events",
            {"organization_id": "someone-else"},
            "$.event.organization_id",
            id="another-organization-even-for-admin",
        ),
        pytest.param(
            ("publish",),
            "user-events",
            {"user_id": "another-user"},
            "$.event.user_id",
            id="another-user-without-admin",
        ),
    ],
)
def test_forbidden_publishes(
    client, tenant, produced_total, make_event, scopes, topic, envelope, path
) -> None:
    kind = "memory_update" if topic == "memory-updates" else "user_interaction"
    before = produced_total(client)
    response = client.post(
        EVENTS,
        headers=tenant.headers(*scopes),
        json={"topic": topic, "event": make_event(kind, **envelope)},
    )
    assert response.status_code == 403, response.text
    error = response.json()
    assert error["code"] == "forbidden"
    assert error["message"]
    if path is not None:
        assert error["details"][0]["path"] == path
    assert produced_total(client) == before


@pytest.mark.parametrize(
    ("scopes", "envelope"),
    [
        pytest.param(("publish",), {"user_id": "<self>"}, id="own-user-named"),
        pytest.param(("publish",), {"organization_id": "<org>"}, id="own-organization-named"),
        pytest.param(("publish", "admin"), {"user_id": "teammate"}, id="admin-for-another-user"),
        pytest.param(("admin",), {"user_id": "teammate"}, id="admin-alone-may-publish"),
    ],
)
def test_allowed_identities(client, tenant, unique_key, make_event, scopes, envelope) -> None:
    named = {
        field: {"<self>": tenant.user, "<org>": tenant.org}.get(value, value)
        for field, value in envelope.items()
    }
    response = client.post(
        EVENTS,
        headers=tenant.headers(*scopes),
        json={"topic": "user-events", "key": unique_key(), "event": make_event(**named)},
    )
    assert response.status_code == 200, response.text
    ack = response.json()
    stored = read_one(
        client, tenant.headers("subscribe", "admin"), "user-events", ack["partition"], ack["offset"]
    )["data"]
    assert stored["organization_id"] == tenant.org
    assert stored["user_id"] == named.get("user_id", tenant.user)


def test_same_event_id_is_written_once(
    client, tenant, unique_key, make_event, produced_total
) -> None:
    body = {"topic": "user-events", "key": unique_key(), "event": make_event(id="retry-me")}
    first = client.post(EVENTS, headers=tenant.headers(), json=body).json()
    written = produced_total(client)

    # A retry, even with another key and payload, answers the original position.
    body = {"topic": "user-events", "key": unique_key(), "event": make_event(id="retry-me")}
    body["event"]["payload"]["action"] = "something else"
    again = client.post(EVENTS, headers=tenant.headers(), json=body)
    assert again.status_code == 200
    assert again.json() == {**first, "duplicate": True}
    assert produced_total(client) == written
    page = client.get(
        "/api/v1/topics/user-events/records",
        params={"partition": first["partition"], "offset": first["offset"], "limit": 1000},
        headers=tenant.headers(),
    ).json()
    assert [r["data"]["id"] for r in page["records"]].count("retry-me") == 1


def test_a_generated_id_is_not_an_idempotency_key(client, tenant, unique_key, make_event) -> None:
    key = unique_key()
    generated = client.post(
        EVENTS,
        headers=tenant.headers(),
        json={"topic": "user-events", "key": key, "event": make_event()},
    ).json()
    body = {"topic": "user-events", "key": key, "event": make_event(id=generated["id"])}
    first = client.post(EVENTS, headers=tenant.headers(), json=body).json()
    again = client.post(EVENTS, headers=tenant.headers(), json=body).json()
    assert first["duplicate"] is False and first["offset"] == generated["offset"] + 1
    assert again == {**first, "duplicate": True}


@pytest.mark.parametrize(
    ("change", "duplicate"),
    [
        pytest.param({}, True, id="same-org-same-topic"),
        pytest.param({"user": "teammate"}, True, id="same-org-other-user"),
        pytest.param({"org": "other"}, False, id="other-org"),
        pytest.param({"topic": "system-metrics"}, False, id="other-topic"),
    ],
)
def test_dedup_is_per_organization_and_topic(client, tenant, change, duplicate) -> None:
    event = {
        "type": "api_call",
        "id": "call-1",
        "payload": {"endpoint": "/x", "method": "GET", "response_time_ms": 1.5},
    }
    first = client.post(
        EVENTS, headers=tenant.headers(), json={"topic": "user-events", "event": event}
    )
    assert first.json()["duplicate"] is False
    identity = {k: f"{getattr(tenant, k)}-{v}" for k, v in change.items() if k in ("user", "org")}
    response = client.post(
        EVENTS,
        headers=tenant.headers(**identity),
        json={"topic": change.get("topic", "user-events"), "event": event},
    )
    assert response.status_code == 200, response.text
    assert response.json()["duplicate"] is duplicate
