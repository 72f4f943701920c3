"""Tenancy on every memory route: another user of the organization, an admin of it, and an
admin of another organization, against a real gateway."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx

Tenant = Any  # conftest.Tenant


def test_every_route_keeps_users_apart(
    api: httpx.Client, tenant: Tenant, other: Tenant, create: Callable[..., str]
) -> None:
    alice, bob = tenant.headers(), other.headers()
    mine = create(alice, content="Alice keeps her passport in the blue drawer", importance=0.9)
    working = api.post(
        "/api/v1/working-memory",
        json={
            "session_id": "shared-session",
            "content": "alice is checking out",
            "expires_in_seconds": 600,
        },
        headers=alice,
    ).json()["data"]["id"]
    bobs = create(bob, content="Bob keeps his passport in the safe")

    def status(response: httpx.Response) -> int:
        return response.status_code

    # Reads and writes by id: as if the memory did not exist.
    for memory_id in (mine, working):
        assert status(api.get(f"/api/v1/memories/{memory_id}", headers=bob)) == 404
        assert status(api.get(f"/api/v1/memories/{memory_id}/history", headers=bob)) == 404
        assert (
            status(api.patch(f"/api/v1/memories/{memory_id}", json={"content": "x"}, headers=bob))
            == 404
        )
        assert status(api.delete(f"/api/v1/memories/{memory_id}", headers=bob)) == 404
    gone = api.post("/api/v1/memories/batch/delete", json={"ids": [mine, working]}, headers=bob)
    assert gone.json()["data"]["deleted"] == 0

    # Lists and search: only Bob's own.
    listed = api.get("/api/v1/memories", headers=bob).json()["data"]
    assert [m["id"] for m in listed] == [bobs]
    found = api.post(
        "/api/v1/memories/search", json={"query": "passport drawer"}, headers=bob
    ).json()["data"]
    assert [m["id"] for m in found] == [bobs]
    session = api.get(
        "/api/v1/working-memory", params={"session_id": "shared-session"}, headers=bob
    )
    assert session.json()["data"] == []

    # Naming Alice is refused outright on every route that takes a user.
    forbidden = [
        api.get("/api/v1/memories", params={"user_id": tenant.user}, headers=bob),
        api.get(f"/api/v1/memories/{mine}", params={"user_id": tenant.user}, headers=bob),
        api.get(f"/api/v1/memories/{mine}/history", params={"user_id": tenant.user}, headers=bob),
        api.patch(
            f"/api/v1/memories/{mine}",
            params={"user_id": tenant.user},
            json={"content": "x"},
            headers=bob,
        ),
        api.delete(f"/api/v1/memories/{mine}", params={"user_id": tenant.user}, headers=bob),
        api.post("/api/v1/memories", json={"content": "x", "user_id": tenant.user}, headers=bob),
        api.post(
            "/api/v1/memories/search",
            json={"query": "passport", "user_id": tenant.user},
            headers=bob,
        ),
        api.post(
            "/api/v1/memories/batch/delete",
            params={"user_id": tenant.user},
            json={"ids": [mine]},
            headers=bob,
        ),
        api.post(
            "/api/v1/working-memory",
            json={
                "session_id": "s",
                "content": "x",
                "expires_in_seconds": 5,
                "user_id": tenant.user,
            },
            headers=bob,
        ),
        api.get(
            "/api/v1/working-memory",
            params={"session_id": "shared-session", "user_id": tenant.user},
            headers=bob,
        ),
    ]
    for response in forbidden:
        assert response.status_code == 403, (response.request.url, response.text)
        assert response.json()["code"] == "forbidden"
    batch = api.post(
        "/api/v1/memories/batch",
        json={"memories": [{"content": "x", "user_id": tenant.user}, {"content": "mine"}]},
        headers=bob,
    ).json()["data"]
    assert batch["results"][0]["error"]["code"] == "forbidden" and batch["created"] == 1

    # Alice's memories are untouched.
    memory = api.get(f"/api/v1/memories/{mine}", headers=alice).json()["data"]
    assert memory["version"] == 1 and memory["content"].startswith("Alice keeps")
    assert {m["id"] for m in api.get("/api/v1/memories", headers=alice).json()["data"]} == {
        mine,
        working,
    }


def test_admins_see_their_organization_only(
    api: httpx.Client, tenant: Tenant, other: Tenant, create: Callable[..., str]
) -> None:
    alice, bob, admin = tenant.headers(), other.headers(), tenant.admin()
    mine = create(alice, content="Alice speaks Portuguese")
    bobs = create(bob, content="Bob speaks Portuguese too")

    # An admin reads across its organization, or one user when it names one.
    everyone = api.get("/api/v1/memories", headers=admin).json()["data"]
    assert {m["id"] for m in everyone} == {mine, bobs}
    only = api.get("/api/v1/memories", params={"user_id": other.user}, headers=admin).json()["data"]
    assert [m["id"] for m in only] == [bobs]
    assert api.get(f"/api/v1/memories/{mine}", headers=admin).status_code == 200
    assert api.get(f"/api/v1/memories/{mine}/history", headers=admin).status_code == 200
    found = api.post("/api/v1/memories/search", json={"query": "portuguese"}, headers=admin).json()[
        "data"
    ]
    assert {m["id"] for m in found} == {mine, bobs}
    # It may write for a user of its organization.
    made = api.post(
        "/api/v1/memories", json={"content": "set by admin", "user_id": tenant.user}, headers=admin
    )
    assert made.status_code == 201
    assert (
        api.get(f"/api/v1/memories/{made.json()['data']['id']}", headers=alice).status_code == 200
    )
    patched = api.patch(f"/api/v1/memories/{mine}", json={"importance": 0.2}, headers=admin)
    assert patched.status_code == 200 and patched.json()["data"]["user_id"] == tenant.user

    # An admin of another organization sees none of it, even naming the user.
    stranger = tenant.headers("admin", org=f"org-{uuid.uuid4().hex[:8]}", user="root")
    assert api.get(f"/api/v1/memories/{mine}", headers=stranger).status_code == 404
    assert api.get(f"/api/v1/memories/{mine}/history", headers=stranger).status_code == 404
    assert (
        api.patch(f"/api/v1/memories/{mine}", json={"content": "x"}, headers=stranger).status_code
        == 404
    )
    assert api.delete(f"/api/v1/memories/{mine}", headers=stranger).status_code == 404
    assert api.get("/api/v1/memories", headers=stranger).json()["data"] == []
    assert (
        api.get("/api/v1/memories", params={"user_id": tenant.user}, headers=stranger).json()[
            "data"
        ]
        == []
    )
    assert (
        api.post(
            "/api/v1/memories/search",
            json={"query": "portuguese", "user_id": tenant.user},
            headers=stranger,
        ).json()["data"]
        == []
    )
    gone = api.post("/api/v1/memories/batch/delete", json={"ids": [mine, bobs]}, headers=stranger)
    assert gone.json()["data"]["deleted"] == 0
    assert api.get(f"/api/v1/memories/{mine}", headers=alice).status_code == 200
