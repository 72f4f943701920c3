"""The memory API against a real gateway with the memory pipeline on: every route, bad
inputs, and the memory updates its writes produce."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

from gateway.streamlog.partitioner import partition_for_key

Tenant = Any  # conftest.Tenant (conftest modules are not importable here)


def updates_for(api: httpx.Client, tenant: Tenant, memory_id: str) -> list[dict[str, Any]]:
    """The memory_update envelopes of one memory on ``memory-updates`` (keyed by user)."""
    partition = partition_for_key(tenant.user.encode(), 32)
    response = api.get(
        "/api/v1/topics/memory-updates/records",
        params={"partition": partition, "limit": 1000},
        headers=tenant.headers(),
    )
    assert response.status_code == 200, response.text
    return [
        r["data"]
        for r in response.json()["records"]
        if r["data"]["payload"]["memory_id"] == memory_id
    ]


def wait_for(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def test_create_read_update_delete_with_history_and_updates(
    api: httpx.Client, tenant: Tenant, create: Callable[..., str]
) -> None:
    h = tenant.headers()
    # Wrapped (AgentMem clients) and bare forms; memory types in any case, factual = semantic.
    wrapped = api.post(
        "/api/v1/memories",
        json={
            "data": {
                "content": "I prefer aisle seats",
                "memory_type": "FACTUAL",
                "importance": 0.9,
            },
            "success": True,
        },
        headers=h,
    )
    assert wrapped.status_code == 201, wrapped.text
    body = wrapped.json()
    assert body["success"] is True and body["data"]["message"]
    memory_id = body["data"]["id"]
    plain = create(h, content="Lunch with Dana", agent_id="planner", metadata={"place": "cafe"})

    got = api.get(f"/api/v1/memories/{memory_id}", headers=h).json()
    assert got["success"] is True
    memory = got["data"]
    assert memory["memory_type"] == "semantic"
    assert memory["importance"] == 0.9
    assert memory["user_id"] == tenant.user and memory["organization_id"] == tenant.org
    assert memory["version"] == 1 and memory["source"] is None
    other = api.get(f"/api/v1/memories/{plain}", headers=h).json()["data"]
    assert other["memory_type"] == "episodic" and other["importance"] == 0.5
    assert other["agent_id"] == "planner" and other["metadata"]["place"] == "cafe"

    patched = api.patch(
        f"/api/v1/memories/{memory_id}",
        json={"content": "I prefer window seats", "importance": 0.7, "metadata": {"k": 1}},
        headers=h,
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["data"]["version"] == 2
    assert patched.json()["data"]["content"] == "I prefer window seats"
    removed = api.patch(f"/api/v1/memories/{memory_id}", json={"metadata": {"k": None}}, headers=h)
    assert "k" not in removed.json()["data"]["metadata"]

    deleted = api.delete(f"/api/v1/memories/{memory_id}", headers=h)
    assert deleted.status_code == 200 and deleted.json()["data"]["id"] == memory_id
    assert api.get(f"/api/v1/memories/{memory_id}", headers=h).status_code == 404
    assert api.delete(f"/api/v1/memories/{memory_id}", headers=h).status_code == 404

    history = api.get(f"/api/v1/memories/{memory_id}/history", headers=h).json()["data"]
    assert [(v["version"], v["op"]) for v in history] == [
        (1, "created"),
        (2, "updated"),
        (3, "updated"),
        (3, "deleted"),
    ]
    assert history[0]["content"] == "I prefer aisle seats"

    # Every change is one memory_update on memory-updates, from the pipeline's outbox.
    updates = wait_for(
        lambda: (
            len(updates_for(api, tenant, memory_id)) >= 4 and updates_for(api, tenant, memory_id)
        )
    )
    assert [(u["payload"]["op"], u["payload"]["version"]) for u in updates] == [
        ("created", 1),
        ("updated", 2),
        ("updated", 3),
        ("deleted", 3),
    ]
    first = updates[0]
    assert first["type"] == "memory_update" and first["id"] == f"{memory_id}:1:created"
    assert first["payload"]["memory_type"] == "semantic"
    assert first["payload"]["source"] is None
    assert first["organization_id"] == tenant.org and first["user_id"] == tenant.user


def test_list_filters_and_cursor_pagination(
    api: httpx.Client, tenant: Tenant, create: Callable[..., str]
) -> None:
    h = tenant.headers()
    ids = [
        create(h, content=f"note {i}", memory_type="episodic" if i % 2 else "semantic",
               importance=i / 10, agent_id="a1" if i < 3 else "a2")
        for i in range(7)
    ]  # fmt: skip
    page = api.get("/api/v1/memories", params={"limit": 3}, headers=h).json()
    assert [m["id"] for m in page["data"]] == ids[::-1][:3]
    seen = [m["id"] for m in page["data"]]
    cursor = page["pagination"]["next_cursor"]
    while cursor:
        page = api.get("/api/v1/memories", params={"limit": 3, "cursor": cursor}, headers=h).json()
        seen += [m["id"] for m in page["data"]]
        cursor = page["pagination"]["next_cursor"]
    assert seen == ids[::-1]

    def listed(**params: Any) -> list[str]:
        response = api.get("/api/v1/memories", params=params, headers=h)
        assert response.status_code == 200, response.text
        return sorted(m["id"] for m in response.json()["data"])

    assert listed(memory_type="Semantic") == sorted(ids[0::2])
    assert listed(agent_id="a1") == sorted(ids[:3])
    assert listed(min_importance="0.5") == sorted(ids[5:])
    first = api.get(f"/api/v1/memories/{ids[3]}", headers=h).json()["data"]["created_at"]
    assert listed(created_after=first) == sorted(ids[3:])
    assert listed(created_before=first) == sorted(ids[:3])


def test_batch_create_and_delete(api: httpx.Client, tenant: Tenant) -> None:
    h = tenant.headers()
    response = api.post(
        "/api/v1/memories/batch",
        json={
            "memories": [
                {"content": "one"},
                {"content": ""},
                {"content": "three", "memory_type": "working"},
            ]
        },
        headers=h,
    )
    assert response.status_code == 200
    data = response.json()["data"]
    assert (data["created"], data["failed"]) == (2, 1)
    assert data["results"][1]["error"]["code"] == "invalid_request"
    made = [r["id"] for r in data["results"] if r["success"]]
    bare = api.post("/api/v1/memories/batch", json=[{"content": "four"}], headers=h)
    assert bare.status_code == 201 and bare.json()["success"] is True
    made.append(bare.json()["data"]["results"][0]["id"])

    gone = api.post(
        "/api/v1/memories/batch/delete", json={"ids": [*made, "mem_missing"]}, headers=h
    )
    assert gone.status_code == 200
    result = gone.json()
    assert result["data"]["deleted"] == 3 and result["data"]["not_found"] == 1
    assert result["success"] is False
    assert api.get("/api/v1/memories", headers=h).json()["data"] == []


def test_working_memory_expires(api: httpx.Client, tenant: Tenant) -> None:
    h = tenant.headers()
    short = api.post(
        "/api/v1/working-memory",
        json={"session_id": "s1", "content": "user is on the billing page", "priority": 8,
              "expires_in_seconds": 1},
        headers=h,
    )  # fmt: skip
    assert short.status_code == 201, short.text
    short_id = short.json()["data"]["id"]
    assert short.json()["data"]["item"]["priority"] == 8
    long = api.post(
        "/api/v1/working-memory",
        json={
            "data": {"session_id": "s1", "content": "cart has 2 items", "expires_in_seconds": 600}
        },
        headers=h,
    )
    assert long.status_code == 201, long.text
    other = api.post(
        "/api/v1/working-memory",
        json={"session_id": "s2", "content": "other session", "expires_in_seconds": 600},
        headers=h,
    )
    assert other.status_code == 201
    items = api.get("/api/v1/working-memory", params={"session_id": "s1"}, headers=h).json()["data"]
    assert {i["content"] for i in items} == {"user is on the billing page", "cart has 2 items"}
    memory = api.get(f"/api/v1/memories/{short_id}", headers=h).json()["data"]
    assert memory["memory_type"] == "working" and memory["importance"] == 0.8

    time.sleep(1.1)
    items = api.get("/api/v1/working-memory", params={"session_id": "s1"}, headers=h).json()["data"]
    assert [i["content"] for i in items] == ["cart has 2 items"]
    assert api.get(f"/api/v1/memories/{short_id}", headers=h).status_code == 404
    # The pipeline's housekeeping removes it and publishes the expiry.
    ops = wait_for(
        lambda: (
            [u["payload"]["op"] for u in updates_for(api, tenant, short_id)]
            == ["created", "expired"]
        )
    )
    assert ops


def test_search_over_memories_made_by_the_pipeline(api: httpx.Client, tenant: Tenant) -> None:
    h = tenant.headers()
    published = api.post(
        "/api/v1/stream/events",
        json={
            "topic": "chat-messages",
            "key": tenant.user,
            "event": {
                "type": "chat_message",
                "payload": {"conversation_id": "c1", "role": "user",
                            "content": "I love hiking in the Dolomites"},
            },
        },
        headers=h,
    )  # fmt: skip
    assert published.status_code == 200, published.text

    def found() -> list[dict[str, Any]]:
        response = api.post(
            "/api/v1/memories/search", json={"query": "dolomites hiking"}, headers=h
        )
        return [r for r in response.json()["data"] if r["scores"]["vector_rank"] is not None]

    results = wait_for(found)
    assert results, "the pipeline's memory was never found by vector"
    assert results[0]["content"] == "I love hiking in the Dolomites"
    assert results[0]["memory_type"] == "semantic"
    assert results[0]["source"]["topic"] == "chat-messages"
    assert results[0]["scores"]["keyword_rank"] == 1


def test_search_filters_threshold_and_score_parts(
    api: httpx.Client, tenant: Tenant, create: Callable[..., str]
) -> None:
    h = tenant.headers()
    tea = create(
        h, content="Alice drinks oolong tea", memory_type="semantic", importance=0.9, agent_id="x"
    )
    create(h, content="Bob drinks black tea", memory_type="episodic", importance=0.1, agent_id="y")

    def search(**body: Any) -> list[dict[str, Any]]:
        response = api.post("/api/v1/memories/search", json={"query": "tea", **body}, headers=h)
        assert response.status_code == 200, response.text
        return list(response.json()["data"])

    both = search()
    assert len(both) == 2 and both[0]["id"] == tea
    parts = both[0]["scores"]
    expected = parts["relevance"] * (0.6 + 0.2 * parts["recency"] + 0.2 * parts["importance"])
    assert abs(both[0]["score"] - expected) < 1e-5
    assert parts["recency"] > 0.99
    assert [r["id"] for r in search(memory_type="SEMANTIC")] == [tea]
    assert [r["id"] for r in search(agent_id="x")] == [tea]
    assert [r["id"] for r in search(min_importance=0.5)] == [tea]
    assert len(search(limit=1)) == 1
    assert search(threshold=1.0) == []
    assert len(search(max_age_days=1)) == 2
    assert search(query="nothing matches zzzz") == []


def test_bad_inputs(api: httpx.Client, tenant: Tenant, create: Callable[..., str]) -> None:
    h = tenant.headers()
    memory_id = create(h, content="something")

    def error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
        assert response.status_code == status, response.text
        body: dict[str, Any] = response.json()
        assert body["code"] == code and body["message"]
        return body

    post = lambda path, body: api.post(path, json=body, headers=h)  # noqa: E731
    error(api.post("/api/v1/memories", content=b"{not json", headers=h), 400, "invalid_frame")
    error(api.post("/api/v1/memories", content=b"", headers=h), 400, "invalid_frame")
    body = error(post("/api/v1/memories", {"importance": 0.5}), 422, "invalid_request")
    assert body["details"][0]["path"] == "$.content"
    error(post("/api/v1/memories", {"content": "x", "importance": 1.5}), 422, "invalid_request")
    error(post("/api/v1/memories", {"content": "x", "importance": "high"}), 422, "invalid_request")
    body = error(
        post("/api/v1/memories", {"content": "x", "memory_type": "dream"}), 422, "invalid_request"
    )
    assert "factual" in body["message"]
    error(post("/api/v1/memories", {"content": "   "}), 422, "invalid_request")
    error(post("/api/v1/memories", [1, 2]), 422, "invalid_request")
    error(post("/api/v1/memories/search", {"query": ""}), 422, "invalid_request")
    error(post("/api/v1/memories/search", {"query": "x", "limit": 0}), 422, "invalid_request")
    error(post("/api/v1/memories/search", {"query": "x", "limit": 101}), 422, "invalid_request")
    error(post("/api/v1/memories/search", {"query": "x", "threshold": 2}), 422, "invalid_request")
    error(
        post("/api/v1/memories/search", {"query": "x", "max_age_days": 0}), 422, "invalid_request"
    )
    error(post("/api/v1/memories/search", {"limit": 5}), 422, "invalid_request")
    error(
        api.get("/api/v1/memories", params={"cursor": "bogus!"}, headers=h), 422, "invalid_request"
    )
    error(api.get("/api/v1/memories", params={"limit": "0"}, headers=h), 422, "invalid_request")
    error(
        api.get("/api/v1/memories", params={"created_after": "yesterday"}, headers=h),
        422,
        "invalid_request",
    )
    error(
        api.get("/api/v1/memories", params={"memory_type": "x"}, headers=h), 422, "invalid_request"
    )
    error(
        api.get("/api/v1/memories", params={"min_importance": "2"}, headers=h),
        422,
        "invalid_request",
    )
    error(
        api.patch(f"/api/v1/memories/{memory_id}", json={"memory_type": "core"}, headers=h),
        422,
        "invalid_request",
    )
    error(
        api.patch(f"/api/v1/memories/{memory_id}", json={"importance": -1}, headers=h),
        422,
        "invalid_request",
    )
    error(
        api.patch("/api/v1/memories/mem_nope", json={"content": "x"}, headers=h), 404, "not_found"
    )
    error(api.get("/api/v1/memories/mem_nope", headers=h), 404, "not_found")
    error(api.get("/api/v1/memories/mem_nope/history", headers=h), 404, "not_found")
    error(post("/api/v1/memories/batch", {"memories": "x"}), 422, "invalid_request")
    error(post("/api/v1/memories/batch/delete", {"ids": [1]}), 422, "invalid_request")
    error(
        post("/api/v1/working-memory", {"session_id": "s", "content": "x"}), 422, "invalid_request"
    )
    error(
        post(
            "/api/v1/working-memory", {"session_id": "s", "content": "x", "expires_in_seconds": 0}
        ),
        422,
        "invalid_request",
    )
    error(
        post(
            "/api/v1/working-memory",
            {"session_id": "s", "content": "x", "expires_in_seconds": 5, "priority": 11},
        ),
        422,
        "invalid_request",
    )
    error(api.get("/api/v1/working-memory", headers=h), 422, "invalid_request")
    # Authentication and scopes.
    error(api.get("/api/v1/memories"), 401, "unauthorized")
    error(
        api.post("/api/v1/memories", json={"content": "x"}, headers=tenant.headers("subscribe")),
        403,
        "forbidden",
    )
    error(api.get("/api/v1/memories", headers=tenant.headers("publish")), 403, "forbidden")
    error(
        post("/api/v1/memories/search", {"query": "x", "limit": 5})
        if False
        else api.post(
            "/api/v1/memories/search", json={"query": "x"}, headers=tenant.headers("publish")
        ),
        403,
        "forbidden",
    )
    # Too many items in a batch (AGENTMEM_MAX_BATCH_EVENTS, 1,000 by default).
    error(post("/api/v1/memories/batch/delete", {"ids": ["m"] * 1001}), 413, "too_large")


def test_metrics_and_readiness_parts(api: httpx.Client) -> None:
    text = api.get("/metrics").text
    for name in (
        "agentmem_memory_lag_records",
        "agentmem_memory_records_total",
        "agentmem_memory_processed_per_second",
        "agentmem_memory_deferred_items",
        "agentmem_memory_queue_items",
        "agentmem_memory_store_transaction_seconds",
        "agentmem_memory_api_latency_seconds",
        "agentmem_memory_vector_lag_changes",
        "agentmem_memory_vector_process_restarts",
    ):
        assert name in text, name
    assert 'agentmem_memory_lag_records{partition="0",topic="chat-messages"}' in text
