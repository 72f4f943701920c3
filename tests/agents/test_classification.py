"""The meta-memory manager's rules, one table row per event (see agents/manager.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from agent_helpers import action, chat, envelope, interaction

from agents import PipelineConfig
from agents.events import decode
from agents.manager import MetaMemoryManager, Unclassifiable, fact_statement, profile_statement
from agents.work import Source

MANAGER = MetaMemoryManager(PipelineConfig())
SOURCE = Source("user-events", 3, 42)


def classify(event: dict[str, Any] | bytes) -> Any:
    value = event if isinstance(event, bytes) else json.dumps(event).encode()
    return MANAGER.classify(decode(value), SOURCE, 1_700_000_000_000)


def item(content: str, **fields: Any) -> bytes:
    """A MemoryItem as data-transform makes it (no "type" field)."""
    return json.dumps(
        {"organization_id": "acme", "user_id": "alice", "content": content, **fields}
    ).encode()


CASES: list[tuple[str, dict[str, Any] | bytes, str | None, str]] = [
    # telemetry: no memory
    ("sensor", envelope("sensor_data", {"sensor_id": "t1", "readings": {"c": 21.5}}), None, ""),
    (
        "api call",
        envelope("api_call", {"endpoint": "/x", "method": "GET", "response_time_ms": 3}),
        None,
        "",
    ),
    ("log entry", envelope("log_entry", {"level": "info", "message": "m"}), None, ""),
    (
        "memory update",
        envelope(
            "memory_update",
            {
                "op": "created",
                "memory_id": "m",
                "memory_type": "episodic",
                "organization_id": "acme",
                "user_id": "alice",
            },
        ),
        None,
        "",
    ),
    # agent actions: procedural, whatever the importance or session
    ("agent action", action("planner", "search_flights"), "procedural", "2 "),
    ("agent action without session", action("planner", "book", None), "procedural", "2 "),
    ("failed agent action", action("planner", "pay", success=False), "procedural", "2 "),
    # realtime messages: working
    (
        "realtime",
        envelope("realtime_message", {"channel": "typing", "data": {"on": True}}),
        "working",
        "3 ",
    ),
    (
        "realtime text",
        envelope("realtime_message", {"channel": "cursor", "data": "line 4"}),
        "working",
        "3 ",
    ),
    # explicit kinds
    ("chat kind=profile", chat("Alice, Berlin", metadata={"kind": "profile"}), "core", "4 "),
    (
        "chat kind=fact",
        chat("the wifi password is on the fridge", metadata={"kind": "fact"}),
        "semantic",
        "4 ",
    ),
    (
        "chat kind=preference",
        chat("aisle seats", metadata={"kind": "preference"}),
        "semantic",
        "4 ",
    ),
    (
        "app_event fact",
        envelope(
            "app_event",
            {"event_type": "fact", "source": "crm", "payload": {"statement": "Owns a Tesla"}},
        ),
        "semantic",
        "4 ",
    ),
    (
        "app_event preference",
        envelope(
            "app_event", {"event_type": "preference", "source": "app", "payload": {"theme": "dark"}}
        ),
        "semantic",
        "4 ",
    ),
    (
        "app_event profile",
        envelope(
            "app_event",
            {
                "event_type": "profile",
                "source": "crm",
                "payload": {"subject": "company", "value": "Acme"},
            },
        ),
        "core",
        "4 ",
    ),
    (
        "app_event persona",
        envelope(
            "app_event",
            {"event_type": "persona", "source": "admin", "payload": {"text": "Be concise"}},
        ),
        "core",
        "4 ",
    ),
    (
        "app_event payload kind",
        envelope(
            "app_event",
            {"event_type": "sync", "source": "crm", "payload": {"kind": "fact", "text": "VIP"}},
        ),
        "semantic",
        "4 ",
    ),
    (
        "interaction context kind=profile",
        interaction("set display name to Al", kind="profile"),
        "core",
        "4 ",
    ),
    ("memory item kind=profile", item("timezone: CET", metadata={"kind": "profile"}), "core", "4 "),
    (
        "memory item context kind=fact",
        item("uses vim", metadata={"context": {"kind": "fact"}}),
        "semantic",
        "4 ",
    ),
    # user chat statements
    ("my name is", chat("Hi! My name is Alice."), "core", "5 profile statement (name)"),
    ("call me", chat("Please call me Al"), "core", "5 profile statement (name)"),
    ("I am a role", chat("I am a data scientist at a bank"), "core", "5 profile statement (role)"),
    ("I work as", chat("I work as a nurse"), "core", "5 profile statement (role)"),
    ("I live in", chat("I live in Lisbon."), "core", "5 profile statement (location)"),
    ("age", chat("I'm 34 years old"), "core", "5 profile statement (age)"),
    ("I like", chat("I like green tea"), "semantic", "5 fact statement"),
    ("I prefer", chat("Honestly, I prefer window seats."), "semantic", "5 fact statement"),
    ("I don't like", chat("I don't like cilantro"), "semantic", "5 fact statement"),
    ("favourite", chat("My favourite colour is blue"), "semantic", "5 fact statement"),
    ("favorite (US)", chat("my favorite food is ramen"), "semantic", "5 fact statement"),
    ("I am allergic", chat("I am allergic to peanuts"), "semantic", "5 fact statement"),
    ("I'm vegetarian", chat("I\u2019m vegetarian"), "semantic", "5 fact statement"),
    ("I always", chat("I always fly economy"), "semantic", "5 fact statement"),
    ("I have a", chat("I have a dog named Rex"), "semantic", "5 fact statement"),
    ("birthday", chat("My birthday is May 4"), "semantic", "5 fact statement"),
    ("fan of", chat("I'm a big fan of jazz"), "semantic", "5 fact statement"),
    # not statements: episodic
    ("question", chat("Do I like tea?"), "episodic", "8 "),
    ("question about name", chat("What is my name?"), "episodic", "8 "),
    ("progressive", chat("I am looking for a hotel"), "episodic", "8 "),
    ("filler", chat("I'm not sure about that"), "episodic", "8 "),
    ("a bit", chat("I am a bit tired"), "episodic", "8 "),
    ("I have a question", chat("I have a question about billing"), "episodic", "8 "),
    ("assistant statement", chat("I like helping you", role="assistant"), "episodic", "8 "),
    ("system message", chat("My name is Assistant", role="system"), "episodic", "8 "),
    ("plain chat", chat("Book the 9am train"), "episodic", "8 "),
    # declared memory type of a MemoryItem
    (
        "memory item declared semantic",
        item("earth is round", memory_type="semantic"),
        "semantic",
        "6 ",
    ),
    (
        "memory item declared procedural",
        item("restart then clear cache", memory_type="procedural"),
        "procedural",
        "6 ",
    ),
    (
        "memory item declared episodic",
        item("opened settings", memory_type="episodic"),
        "episodic",
        "8 ",
    ),
    # low-importance session context: working
    (
        "low importance session chat",
        chat("ok", metadata={"session_id": "s9"}, importance=0.1),
        "working",
        "7 ",
    ),
    (
        "low importance session interaction",
        interaction("scrolled", 0.1, session_id="s9"),
        "working",
        "7 ",
    ),
    (
        "low importance session item",
        item("hovered", importance=0.2, session_id="s9"),
        "working",
        "7 ",
    ),
    ("low importance without session", interaction("scrolled", 0.1), "episodic", "8 "),
    ("session but important", interaction("paid invoice", 0.9, session_id="s9"), "episodic", "8 "),
    # the rest: episodic
    ("interaction", interaction("opened settings"), "episodic", "8 "),
    (
        "memory item",
        item("opened settings", metadata={"source_event_type": "user_interaction"}),
        "episodic",
        "8 ",
    ),
    (
        "app event",
        envelope("app_event", {"event_type": "login", "source": "web"}),
        "episodic",
        "8 ",
    ),
]


@pytest.mark.parametrize(
    ("event", "memory_type", "rule"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_classification(event: dict[str, Any] | bytes, memory_type: str | None, rule: str) -> None:
    work = classify(event)
    if memory_type is None:
        assert work is None
        return
    assert work is not None
    assert (work.memory_type, work.rule[: len(rule)]) == (memory_type, rule)
    assert work.organization_id == "acme" and work.user_id == "alice"
    assert work.source == SOURCE
    if memory_type == "core":
        assert work.block in ("human", "persona")


def test_profile_statement_extracts_subject_and_value() -> None:
    assert profile_statement("Hello. My name is Alice Smith, nice to meet you") == (
        "name",
        "Alice Smith",
        "My name is Alice Smith, nice to meet you",
    )
    work = classify(chat("Hi there. I live in Lisbon, near the river."))
    assert (work.content, work.subject, work.block) == ("location: Lisbon", "location", "human")
    assert work.metadata["statement"] == "I live in Lisbon, near the river."


def test_fact_statement_keeps_the_sentence_and_the_slot() -> None:
    assert fact_statement("Thanks! My favourite colour is blue.") == (
        "favourite colour",
        "My favourite colour is blue.",
    )
    work = classify(chat("Thanks a lot. I prefer aisle seats. Book it."))
    assert work.content == "I prefer aisle seats."
    assert work.metadata["message"].startswith("Thanks a lot.")


def test_persona_goes_to_the_persona_block() -> None:
    work = classify(
        envelope(
            "app_event",
            {"event_type": "persona", "source": "admin", "payload": {"text": "Be concise"}},
        )
    )
    assert (work.block, work.content) == ("persona", "Be concise")


def test_fields_carried_over() -> None:
    work = classify(action("planner", "search", "s7"))
    assert (work.agent_id, work.session_id, work.action, work.success) == (
        "planner",
        "s7",
        "search",
        True,
    )
    ttl = classify(
        envelope("realtime_message", {"channel": "c", "data": {"ttl_s": 5, "session_id": "s1"}})
    )
    assert (ttl.ttl_s, ttl.session_id) == (5.0, "s1")
    transformed = classify(
        item(
            "clicked buy",
            timestamp=123,
            metadata={"source_event_id": "e9", "source_event_type": "user_interaction"},
        )
    )
    assert (transformed.timestamp, transformed.event_id, transformed.event_type) == (
        123,
        "e9",
        "user_interaction",
    )


def test_threshold_for_working_is_configurable() -> None:
    manager = MetaMemoryManager(PipelineConfig(working_max_importance=0.95))
    event = decode(json.dumps(interaction("paid", 0.9, session_id="s")).encode())
    assert manager.classify(event, SOURCE, 0).memory_type == "working"


@pytest.mark.parametrize("missing", ["organization_id", "user_id"])
def test_event_without_tenancy_is_unclassifiable(missing: str) -> None:
    event = chat("hello")
    event[missing] = None
    with pytest.raises(Unclassifiable, match="names no organization_id or user_id"):
        classify(event)
