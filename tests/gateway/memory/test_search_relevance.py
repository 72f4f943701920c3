"""Search relevance on a small hand-made corpus: for each query, the right memory ranks first.

The corpus has near misses for most queries (the same words in another sense, the same
topic with less detail) and, under another user of the organization, exact copies of the
answers, which must never appear. The last queries have typos that the keyword index
cannot match: only the n-gram vectors find them.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

Tenant = Any  # conftest.Tenant

CORPUS = {
    "tea": "I drink green tea every morning before work",
    "coffee_shop": "The coffee shop on Main Street closes at six",
    "dog": "My dog Rex is a three year old border collie",
    "dog_food": "Bought a bag of dog food on sale at the pet store",
    "flight": "Flight to Lisbon departs on March 3rd at 9:40 from gate B12",
    "lisbon_hotel": "Booked the hotel in Porto for two nights after the conference",
    "allergy": "Allergic to peanuts and shellfish; carries an epinephrine pen",
    "peanut_recipe": "Tried a new satay recipe with roasted peanuts last weekend",
    "birthday": "Sister Maria's birthday is on July 14th",
    "password": "The wifi password at the cabin is written on the fridge",
    "language": "Is learning Japanese with a tutor on Tuesday evenings",
    "car": "The car needs an oil change before the road trip",
    "doctor": "Dentist appointment moved to Friday at 3 pm",
    "book": "Currently reading The Left Hand of Darkness by Ursula Le Guin",
    "garden": "Planted tomatoes and basil in the raised garden bed",
    "budget": "Monthly grocery budget is 400 euros",
}

QUERIES = [
    ("what tea do I drink in the morning", "tea"),
    ("when does my flight to Lisbon leave", "flight"),
    ("shellfish allergy", "allergy"),
    ("what breed is Rex", "dog"),
    ("Maria birthday", "birthday"),
    ("wifi password cabin", "password"),
    ("japanese lessons tutor", "language"),
    ("dentist appointment", "doctor"),
    ("which book am I reading", "book"),
    ("grocery budget per month", "budget"),
    ("tomatos in the gardn", "garden"),
    ("japanes tutr", "language"),
]


@pytest.fixture
def corpus(api: httpx.Client, tenant: Tenant, other: Tenant) -> dict[str, str]:
    response = api.post(
        "/api/v1/memories/batch",
        json={
            "memories": [{"content": text, "memory_type": "semantic"} for text in CORPUS.values()]
        },
        headers=tenant.headers(),
    )
    assert response.status_code == 201, response.text
    ids = [r["id"] for r in response.json()["data"]["results"]]
    # Another user's exact copies of every answer: a leak would rank them first.
    leaked = api.post(
        "/api/v1/memories/batch",
        json=[{"content": text, "importance": 1.0} for text in CORPUS.values()],
        headers=other.headers(),
    )
    assert leaked.status_code == 201
    return dict(zip(CORPUS, ids, strict=True))


def test_the_right_memory_ranks_first(
    api: httpx.Client, tenant: Tenant, corpus: dict[str, str]
) -> None:
    by_id = {v: k for k, v in corpus.items()}
    misses = []
    for query, expected in QUERIES:
        response = api.post(
            "/api/v1/memories/search", json={"query": query, "limit": 5}, headers=tenant.headers()
        )
        assert response.status_code == 200, response.text
        results = response.json()["data"]
        assert all(r["user_id"] == tenant.user for r in results)
        ranked = [by_id[r["id"]] for r in results]
        if not ranked or ranked[0] != expected:
            misses.append((query, expected, ranked))
    assert misses == []


def test_typos_are_found_by_vector_only(
    api: httpx.Client, tenant: Tenant, corpus: dict[str, str]
) -> None:
    response = api.post(
        "/api/v1/memories/search", json={"query": "japanes tutr"}, headers=tenant.headers()
    )
    top = response.json()["data"][0]
    assert top["id"] == corpus["language"]
    assert top["scores"]["keyword_rank"] is None and top["scores"]["vector_rank"] == 1
