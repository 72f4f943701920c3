"""The envelope that wraps every event, on the wire and in the log.

``{"id", "type", "organization_id", "user_id", "timestamp", "payload"}``: ``type`` selects
the payload schema (one msgspec tagged union, so a single decode validates the envelope and
its payload). A client sends at least ``{"type", "payload"}``; the gateway fills ``id``
(when absent) and ``timestamp`` (when absent) and always stamps ``organization_id`` and
``user_id`` from the caller's token.
"""

from __future__ import annotations

import itertools
import os
import time
from typing import TYPE_CHECKING, Annotated, Any, Union, cast

import msgspec
from msgspec import Meta, Struct

from gateway.errors import ErrorDetail, Forbidden, InvalidEvent, InvalidFrame, TooLarge
from gateway.schemas.payloads import PAYLOADS
from gateway.streamlog.interface import TopicSpec

EventId = Annotated[str, Meta(min_length=1, max_length=128)]


class Envelope(Struct, kw_only=True, tag_field="type"):
    """Fields shared by every event type; concrete classes add a typed ``payload``."""

    id: EventId | None = None
    organization_id: str | None = None
    user_id: str | None = None
    timestamp: Annotated[int, Meta(ge=0)] | None = None

    payload: Any


def _envelope_class(tag: str, payload: type[Struct]) -> type[Envelope]:
    name = "".join(part.title() for part in tag.split("_")) + "Event"
    return cast(
        type[Envelope],
        msgspec.defstruct(
            name,
            [("payload", payload)],
            bases=(Envelope,),
            tag=tag,
            kw_only=True,
            module=__name__,
        ),
    )


ENVELOPES: dict[str, type[Envelope]] = {
    tag: _envelope_class(tag, payload) for tag, payload in PAYLOADS.items()
}
if TYPE_CHECKING:
    AnyEvent = Envelope
else:
    # Every envelope type, decodable in one pass (tag field ``type``).
    AnyEvent = Union[tuple(ENVELOPES.values())]  # noqa: UP007


class PublishRequest(Struct, kw_only=True):
    """Body of ``POST /api/v1/stream/events`` and of a batch item."""

    event: AnyEvent
    topic: str | None = None
    key: Annotated[str, Meta(max_length=1_024)] | None = None


class BatchRequest(Struct, kw_only=True):
    events: list[msgspec.Raw]
    topic: str | None = None


_json_encoder = msgspec.json.Encoder()
event_decoder = msgspec.json.Decoder(AnyEvent)
publish_decoder = msgspec.json.Decoder(PublishRequest)
batch_decoder = msgspec.json.Decoder(BatchRequest)


def encode(value: Any) -> bytes:
    return _json_encoder.encode(value)


def error_details(exc: msgspec.ValidationError, prefix: str = "$") -> list[ErrorDetail]:
    """Turn msgspec's ``"<problem> - at `$.a.b`"`` into ``[{path, problem}]``."""
    text = str(exc)
    problem, sep, where = text.rpartition(" - at `")
    if not sep:
        return [ErrorDetail(path=prefix, problem=text)]
    path = where.rstrip("`")
    return [ErrorDetail(path=prefix + path[1:], problem=problem)]


def decode_json(decoder: msgspec.json.Decoder[Any], data: bytes, prefix: str = "$") -> Any:
    """Decode ``data``; malformed JSON is ``InvalidFrame``, a schema mismatch ``InvalidEvent``."""
    try:
        return decoder.decode(data)
    except msgspec.ValidationError as exc:
        details = error_details(exc, prefix)
        if details[0].path.endswith(".type") and details[0].problem.startswith("Invalid value"):
            accepted = ", ".join(ENVELOPES)
            details = [ErrorDetail(details[0].path, f"{details[0].problem}; accepted: {accepted}")]
        raise InvalidEvent(
            f"The event does not match its schema: {details[0].problem} at {details[0].path}. "
            "See docs/events.md for the accepted fields.",
            details,
        ) from None
    except msgspec.DecodeError as exc:
        raise InvalidFrame(f"The body is not valid JSON: {exc}.") from None


def check_topic(spec: TopicSpec, event: Envelope, *, internal: bool = False) -> None:
    """Refuse an event type the topic does not accept, or a client write to a system topic."""
    if not spec.client_writable and not internal:
        raise Forbidden(
            f"Topic {spec.name!r} is written by the memory pipeline only; clients may "
            "subscribe to it but not publish."
        )
    tag = type(event).__struct_config__.tag
    if spec.event_types and tag not in spec.event_types:
        raise InvalidEvent(
            f"Topic {spec.name!r} does not accept events of type {tag!r}; it accepts "
            + ", ".join(spec.event_types)
            + ".",
            [ErrorDetail(path="$.event.type", problem=f"{tag!r} not accepted by {spec.name}")],
        )


_ID_PREFIX = os.urandom(8).hex()
_ID_COUNTER = itertools.count(1)


def new_event_id() -> str:
    """A unique event id: a random per-process prefix and a counter (cheaper than uuid4,
    which costs a system call per id)."""
    # Hex of the counter's 8 bytes: half the cost of formatting it with a format spec.
    return _ID_PREFIX + next(_ID_COUNTER).to_bytes(8, "big").hex()


def stamp(
    event: Envelope, *, organization_id: str, user_id: str, may_act_for_users: bool = False
) -> Envelope:
    """Fill the envelope's server-owned fields from the caller's identity.

    A client may not name another organization; it may name another user of its own
    organization only with ``may_act_for_users`` (the ``admin`` scope).
    """
    if event.organization_id is not None and event.organization_id != organization_id:
        raise Forbidden(
            f"The event names organization {event.organization_id!r} but the token is for "
            f"{organization_id!r}; leave organization_id out and the gateway fills it in.",
            [ErrorDetail(path="$.event.organization_id", problem="not the token's organization")],
        )
    if event.user_id is not None and event.user_id != user_id and not may_act_for_users:
        raise Forbidden(
            f"The event names user {event.user_id!r} but the token is for {user_id!r}; only "
            "a token with the admin scope may publish for other users.",
            [ErrorDetail(path="$.event.user_id", problem="not the token's user")],
        )
    # In place: the envelope was decoded for this call and belongs to it.
    if not event.id:
        event.id = new_event_id()
    event.organization_id = organization_id
    if event.user_id is None:
        event.user_id = user_id
    if event.timestamp is None:
        event.timestamp = int(time.time() * 1000)
    return event


def idempotency_key(organization_id: str, event_id: str, chosen: bool) -> str | None:
    """The log's idempotency key of an event, or None when the gateway made up its id.

    Only an id the client chose can come back in a re-sent publish; a generated one is
    unique by construction, so looking it up and remembering it would cost the log two
    index writes and a read per record for nothing.
    """
    return f"{organization_id}\x00{event_id}" if chosen else None


def encode_event(event: Envelope, max_bytes: int) -> bytes:
    data = _json_encoder.encode(event)
    if len(data) > max_bytes:
        raise TooLarge(
            f"The event is {len(data)} bytes encoded; the limit is {max_bytes} "
            "(AGENTMEM_MAX_EVENT_BYTES)."
        )
    return data


def event_type(event: Envelope) -> str:
    return str(type(event).__struct_config__.tag)
