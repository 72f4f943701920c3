"""Unit tests of the SDK parts without I/O: frames, close codes, errors, backoff, resume."""

from __future__ import annotations

import random
from typing import Any

import msgspec
import pytest
from agentmem_client import (
    AgentMemError,
    Backoff,
    CloseCode,
    Codec,
    ConnectionClosed,
    ErrorCode,
    Forbidden,
    InvalidEvent,
    ProtocolError,
    RateLimited,
    ResumeState,
    ServerError,
    Timeout,
    Unavailable,
    UnknownTopic,
    close_code_name,
    is_reconnectable,
    normalize_url,
)
from agentmem_client import frames as fr
from agentmem_client.errors import server_error

ENCODINGS = ["json", "msgpack"]

CLIENT_FRAMES: list[Any] = [
    fr.Auth(token="t.o.k"),
    fr.Publish(id=1, topic="user-events", event={"type": "x", "id": "e1"}, key="k"),
    fr.Publish(id="r-2", topic="user-events", event={"type": "x", "payload": {"a": [1, 2.5]}}),
    fr.PublishBatch(
        id=3,
        topic="t",
        events=[fr.BatchItem(event={"id": "a"}), fr.BatchItem(event={"id": "b"}, key="k")],
    ),
    fr.Subscribe(id=4, sub="s1", topic="t"),
    fr.Subscribe(id=5, sub="s2", topic="t", from_="beginning", filters=[{"smartmodule": "m"}]),
    fr.Subscribe(id=6, sub="s3", topic="t", from_={"0": 5, "3": 0}),
    fr.Unsubscribe(id=7, sub="s1"),
    fr.Ping(id=8),
    fr.Pong(),
]

SERVER_FRAMES: list[Any] = [
    fr.Welcome(
        session="abc",
        user_id="u",
        organization_id="o",
        scopes=["publish"],
        expires_at=1_700_000_000_000,
        heartbeat_ms=20_000,
    ),
    fr.TokenExpiring(expires_at=1_700_000_000_000),
    fr.AckFrame(id=1, topic="t", partition=3, offset=42, event_id="e1", duplicate=True),
    fr.BatchAckFrame(
        id=2,
        topic="t",
        results=[
            fr.BatchResult(partition=0, offset=1, event_id="a"),
            fr.BatchResult(error=fr.ErrorBody(code="invalid_event", message="bad")),
        ],
    ),
    fr.Subscribed(id=3, sub="s1", topic="t", positions={"0": 4, "1": 0}),
    fr.Unsubscribed(id=4, sub="s1"),
    fr.EventFrame(
        sub="s1",
        topic="t",
        partition=1,
        offset=9,
        timestamp=123,
        key=None,
        data={"type": "x", "payload": {"n": 1}},
    ),
    fr.ErrorFrame(
        code="invalid_event",
        message="m",
        id=5,
        details=[fr.ErrorDetail(path="$.event", problem="p")],
        temporary=False,
    ),
    fr.ErrorFrame(code="internal", message="m", sub="s1", temporary=True),
    fr.Ping(ts=123),
    fr.Pong(id=9),
]


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("frame", CLIENT_FRAMES, ids=lambda f: type(f).__name__)
def test_client_frames_round_trip(encoding: str, frame: Any) -> None:
    codec = Codec(encoding)  # type: ignore[arg-type]
    data = codec.encode(frame)
    assert isinstance(data, bytes if encoding == "msgpack" else str)
    assert codec.decode_client(data) == frame


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("frame", SERVER_FRAMES, ids=lambda f: type(f).__name__)
def test_server_frames_round_trip(encoding: str, frame: Any) -> None:
    codec = Codec(encoding)  # type: ignore[arg-type]
    assert codec.decode_server(codec.encode(frame)) == frame


def test_wire_form_matches_the_protocol_document() -> None:
    codec = Codec("json")
    publish = codec.encode(fr.Publish(id=1, topic="t", event={"id": "e"}))
    assert msgspec.json.decode(publish) == {
        "op": "publish",
        "id": 1,
        "topic": "t",
        "event": {"id": "e"},
    }
    subscribe = codec.encode(fr.Subscribe(id=2, sub="s", topic="t", from_={"3": 7}))
    assert msgspec.json.decode(subscribe) == {
        "op": "subscribe",
        "id": 2,
        "sub": "s",
        "topic": "t",
        "from": {"3": 7},
    }
    assert msgspec.json.decode(codec.encode(fr.Pong())) == {"op": "pong"}
    assert fr.from_spec({3: 7, 0: 1}) == {"3": 7, "0": 1}
    assert fr.from_spec("beginning") == "beginning"


def test_decoding_ignores_unknown_fields_and_ops() -> None:
    codec = Codec("json")
    frame = codec.decode_server(
        '{"op":"ack","id":1,"topic":"t","partition":0,"offset":1,"event_id":"e",'
        '"duplicate":false,"new_field":{"x":1}}'
    )
    assert isinstance(frame, fr.AckFrame) and frame.offset == 1
    assert codec.decode_server('{"op":"future_thing","x":1}') == fr.UnknownFrame("future_thing")


@pytest.mark.parametrize(
    "data",
    ["not json", "[1,2]", '{"no_op":1}', '{"op":"ack","id":1}', '{"op":"event","sub":"s"}'],
)
def test_undecodable_server_frames_raise_protocol_error(data: str) -> None:
    with pytest.raises(ProtocolError):
        Codec("json").decode_server(data)


def test_msgpack_positions_with_integer_keys_and_base64_values() -> None:
    codec = Codec("msgpack")
    raw = msgspec.msgpack.encode(
        {"op": "subscribed", "id": 1, "sub": "s", "topic": "t", "positions": {0: 3, "1": 4}}
    )
    frame = codec.decode_server(raw)
    assert isinstance(frame, fr.Subscribed)
    assert fr.int_positions(frame.positions) == {0: 3, 1: 4}
    event = fr.EventFrame(sub="s", topic="t", partition=0, offset=0, data="AAEC", encoding="base64")
    assert event.value() == b"\x00\x01\x02"
    with pytest.raises(ProtocolError):
        codec.decode_server('{"op":"pong"}')  # a text frame on a binary session


def test_codec_rejects_unknown_encodings() -> None:
    with pytest.raises(ValueError):
        Codec("xml")  # type: ignore[arg-type]


# -- close codes -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "reconnect"),
    [
        (None, True),
        (1006, True),
        (1012, True),
        (4000, True),
        (4001, True),
        (4002, True),
        (4005, True),
        (4006, True),
        (4499, True),
        (1000, False),
        (1002, False),
        (1009, False),
        (4500, False),
        (4501, False),
        (4502, False),
        (4999, False),
        (3000, False),
    ],
)
def test_close_code_classification(code: int | None, reconnect: bool) -> None:
    assert is_reconnectable(code) is reconnect
    closed = ConnectionClosed(code, "why")
    assert closed.reconnectable is reconnect
    assert closed.temporary is reconnect
    assert closed.close_code == (1006 if code is None else code)


def test_close_code_table_mirrors_the_protocol_document() -> None:
    documented = {
        1000: "normal",
        1009: "message_too_big",
        4000: "going_away",
        4001: "slow_consumer",
        4002: "no_pong",
        4003: "server_error",
        4004: "auth_timeout",
        4005: "token_expired",
        4006: "too_many_connections",
        4500: "invalid_token",
        4501: "forbidden",
        4502: "protocol_violation",
    }
    for code, name in documented.items():
        assert close_code_name(code) == name
        assert CloseCode(code).name.lower() == name
    assert close_code_name(1001) == "going_away"
    assert close_code_name(3999) == "close_3999"
    assert {c.value for c in ErrorCode} == {
        "invalid_frame",
        "invalid_event",
        "unknown_op",
        "unknown_topic",
        "unauthorized",
        "forbidden",
        "too_large",
        "rate_limited",
        "limit_exceeded",
        "unavailable",
        "invalid_offset",
        "internal",
    }


# -- errors ----------------------------------------------------------------------------------


def test_server_errors_map_to_classes_by_code() -> None:
    cases = {
        "unknown_topic": UnknownTopic,
        "invalid_event": InvalidEvent,
        "forbidden": Forbidden,
        "rate_limited": RateLimited,
        "unavailable": Unavailable,
    }
    for code, cls in cases.items():
        error = server_error(code, "message")
        assert type(error) is cls
        assert isinstance(error, ServerError) and isinstance(error, AgentMemError)
        assert error.code == code
    assert server_error("rate_limited", "m").temporary
    assert not server_error("forbidden", "m").temporary
    future = server_error("brand_new_code", "m", temporary=True)
    assert type(future) is ServerError and future.code == "brand_new_code" and future.temporary
    assert isinstance(Timeout("t"), TimeoutError)


# -- backoff ---------------------------------------------------------------------------------


def test_backoff_is_full_jitter_within_exponential_bounds() -> None:
    backoff = Backoff(base=0.1, max_delay=2.0, rng=random.Random(7))
    for attempt in range(12):
        ceiling = min(2.0, 0.1 * 2**attempt)
        assert backoff.ceiling(attempt) == pytest.approx(ceiling)
        delay = backoff.next_delay()
        assert delay is not None and 0 <= delay <= ceiling
    assert backoff.attempts == 12
    samples = [Backoff(1.0, 1.0, rng=random.Random(i)).next_delay() for i in range(200)]
    assert min(s for s in samples if s is not None) < 0.1  # full jitter reaches near zero
    assert max(s for s in samples if s is not None) > 0.9
    assert Backoff(1.0, 5.0).ceiling(10_000) == 5.0  # no overflow


def test_backoff_gives_up_after_max_attempts_and_resets() -> None:
    backoff = Backoff(base=0.01, max_delay=0.1, max_attempts=3)
    assert [backoff.next_delay() is not None for _ in range(4)] == [True, True, True, False]
    assert backoff.exhausted
    backoff.reset()
    assert not backoff.exhausted and backoff.next_delay() is not None
    with pytest.raises(ValueError):
        Backoff(base=-1)


# -- resume ----------------------------------------------------------------------------------


def test_resume_positions_after_deliveries() -> None:
    state = ResumeState("end")
    assert state.resume_from() == "end"
    state.on_subscribed({0: 10, 1: 0, 2: 7})
    assert state.accept(0, 10) and state.accept(0, 11) and state.accept(1, 3)
    # Partition 2 had no delivery: it resumes where the gateway started it.
    assert state.resume_from() == {0: 12, 1: 4, 2: 7}
    # Repeats (a replay after reconnect) are dropped; later offsets are taken.
    assert not state.accept(0, 11)
    assert not state.accept(1, 2)
    assert state.accept(1, 9)
    assert state.resume_from() == {0: 12, 1: 10, 2: 7}


def test_resume_keeps_own_positions_across_a_resubscribe() -> None:
    state = ResumeState("beginning")
    state.on_subscribed({0: 0, 1: 0})
    state.accept(0, 0)
    state.accept(0, 1)
    # The answer to the re-subscribe repeats our positions, or starts later (retention).
    state.on_subscribed({0: 2, 1: 5})
    assert state.resume_from() == {0: 2, 1: 5}
    state.on_subscribed({0: 1, 1: 5})  # never goes back
    assert state.resume_from() == {0: 2, 1: 5}


def test_resume_before_subscribed_uses_the_initial_position() -> None:
    assert ResumeState("beginning").resume_from() == "beginning"
    state = ResumeState({0: 5, 3: 1})
    assert state.resume_from() == {0: 5, 3: 1}
    state.accept(0, 8)
    assert state.resume_from() == {0: 9, 3: 1}
    with pytest.raises(ValueError):
        ResumeState("middle")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ResumeState({0: -1})


def test_normalize_url() -> None:
    assert normalize_url("http://h:1") == "ws://h:1/ws"
    assert normalize_url("https://h") == "wss://h/ws"
    assert normalize_url("ws://h:1/") == "ws://h:1/ws"
    assert normalize_url("ws://h:1/custom?x=1") == "ws://h:1/custom?x=1"
    with pytest.raises(ValueError):
        normalize_url("ftp://h")
