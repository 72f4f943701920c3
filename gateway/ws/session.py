"""One WebSocket session: authentication, publishes, subscriptions and its send queue.

Each frame is decoded and handled without waiting for the log: a publish is handed to the
log with a callback that answers with an ``ack`` once the record is durable, so a client
may keep many publishes in flight (up to ``ws_max_in_flight``, after which the session
stops reading and TCP pushes back). Every reply and delivery goes through the session's
``Outbox`` (its bounded send queue and writer). Bad frames are answered with ``error``
frames and never end the session by themselves.

Frames arrive two ways. On the gateway's own transport, publishes, pings and pongs are
handled inline, in the transport's ``data_received`` (``_on_message``): no ASGI message,
queue or task wake-up per frame. Everything else (authentication, subscriptions, and any
frame that arrives while an earlier one is still being handled or the session has no room
for publishes) goes through the ASGI receive queue to the reader task, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec
import structlog
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from gateway.auth.tokens import Principal
from gateway.errors import (
    ErrorDetail,
    Forbidden,
    GatewayError,
    InvalidOffset,
    LimitExceeded,
    RateLimited,
    TooLarge,
    Unauthorized,
    Unavailable,
    UnknownSubscription,
)
from gateway.schemas.envelope import check_topic, encode_event, idempotency_key, stamp
from gateway.smartmodules import SmartModuleError
from gateway.streamlog.interface import NewRecord, Produced
from gateway.waiting import wait_event
from gateway.ws import frames as f
from gateway.ws.codes import CloseCode
from gateway.ws.fanout import Subscription
from gateway.ws.filters import chain_error, is_fatal
from gateway.ws.limits import TokenBucket
from gateway.ws.outbox import Direct, Outbox
from gateway.ws.transport import EXTENSION, GatewayWebSocketProtocol

if TYPE_CHECKING:
    from gateway.ws.hub import Hub

logger = structlog.get_logger(__name__)


DIRECT_BYTES_PER_PASS = 65_536
"""What a delivery may add to a connection's writes of one pass of the event loop without
going through the send queue (see ``Outbox``)."""


class Session:
    def __init__(self, websocket: WebSocket, hub: Hub, encoding: f.Encoding) -> None:
        settings = hub.settings
        self.id = uuid.uuid4().hex[:16]
        self.websocket = websocket
        self.hub = hub
        self.codec = f.codec_for(encoding)
        self.binary = self.codec.binary
        self.principal: Principal | None = None
        self.connected_at = time.monotonic()
        self.last_seen = self.connected_at
        self.last_ping = self.connected_at
        self.warned_expiry = False
        self.closing = False
        self._close_requested = False
        self.close_code: int | None = None
        self.subscriptions: dict[str, Subscription] = {}
        self._asgi_send = websocket._send
        self._asgi_receive = websocket._receive
        self._transport: GatewayWebSocketProtocol | None = websocket.scope.get(
            "extensions", {}
        ).get(EXTENSION)
        self.outbox = Outbox(
            self._write,
            max_frames=settings.ws_send_queue_frames,
            max_bytes=settings.ws_send_queue_bytes,
            direct=self._direct_sender() if self._transport is not None else None,
        )
        self._publish_bucket = TokenBucket(settings.ws_publish_rate, settings.ws_publish_rate)
        self._error_bucket = TokenBucket(
            settings.ws_max_errors_per_minute / 60, settings.ws_max_errors_per_minute
        )
        # Publishes waiting for their ack, and tasks (batches, subscription closes).
        self._publishes_in_flight = 0
        self._in_flight: set[asyncio.Future[Any]] = set()
        self._max_in_flight = settings.ws_max_in_flight
        self._room_for_publishes = asyncio.Event()
        self._room_for_publishes.set()
        self._room = True
        self._all_answered = asyncio.Event()
        self._all_answered.set()
        self._answered = True
        self._counted_user: tuple[str, str] | None = None
        # Set while the reader task handles a frame: frames behind it must wait their turn.
        self._handling = False

    # -- lifecycle ------------------------------------------------------------------------------

    async def run(self, token: str | None) -> None:
        writer = asyncio.create_task(self.outbox.run(), name=f"writer:{self.id}")
        self.hub.register(self)
        try:
            if token is not None:
                try:
                    self._authenticate(token, request_id=None)
                except _Reject as reject:
                    await self._close_after_flush(reject.code, reject.reason)
                    return
            if self._transport is not None:
                self._transport.on_message = self._on_message
            reader = asyncio.create_task(self._read(), name=f"reader:{self.id}")
            done, _ = await asyncio.wait({reader, writer}, return_when=asyncio.FIRST_COMPLETED)
            for task in (reader, writer):
                if task not in done:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
                elif task.exception() is not None and not self.closing:
                    exc = task.exception()
                    if not isinstance(exc, WebSocketDisconnect | OSError | _Closed):
                        logger.error("session_failed", session=self.id, exc_info=exc)
                        await self.close(CloseCode.SERVER_ERROR, "server error")
        except _Closed:
            pass
        finally:
            await self._cleanup(writer)

    async def _cleanup(self, writer: asyncio.Task[None]) -> None:
        if self._transport is not None:
            self._transport.on_message = None
        for subscription in list(self.subscriptions.values()):
            await subscription.close()
        self.subscriptions.clear()
        self.outbox.close()
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await writer
        self.hub.unregister(self)

    async def close(self, code: int, reason: str) -> None:
        """Close the session with ``code`` (idempotent)."""
        if self.closing:
            return
        self.closing = True
        self._close_requested = True
        self.close_code = code
        self.hub.metrics.ws_disconnects.labels(str(code)).inc()
        self.outbox.close()
        if self.websocket.application_state != WebSocketState.CONNECTED:
            return
        # A client that stopped reading also stops the close frame. After a grace period the
        # session ends anyway: the server then closes the transport, whose buffer is bounded.
        grace = max(1.0, self.hub.settings.ws_slow_consumer_s)
        try:
            async with asyncio.timeout(grace):
                await self.websocket.close(code, reason[:120])
        except TimeoutError:
            logger.info("close_timed_out", session=self.id, code=code)
        except Exception:
            pass

    async def drain(self, timeout: float) -> None:
        """Answer every publish in flight, send what is queued, close with going_away."""
        await wait_event(self._all_answered, timeout)
        await self.outbox.flush(timeout=max(0.1, timeout / 2))
        await self.close(CloseCode.GOING_AWAY, "gateway shutting down; reconnect")

    async def _write(self, frames: list[bytes]) -> None:
        transport = self._transport
        if transport is not None:
            if not transport.writable.is_set():
                await transport.writable.wait()
            transport.send_frames(frames, self.binary)
            return
        # Plain ASGI (another server): the raw send, as Starlette's wrapper re-checks its
        # state machine per message.
        for frame in frames:
            if self.binary:
                await self._asgi_send({"type": "websocket.send", "bytes": frame})
            else:
                await self._asgi_send({"type": "websocket.send", "text": frame.decode()})

    def _direct_sender(self) -> Direct:
        # Only into a socket that is not pushing back (its buffer is under the transport's
        # high-water mark), and at most DIRECT_BYTES_PER_PASS with this pass's writes that
        # still wait for it: a peer that does not read is handed at most that this way;
        # everything else waits in the bounded queue. A closing connection refuses: the
        # queue's writer finds out and ends the session.
        assert self._transport is not None
        return functools.partial(
            self._transport.send_now, binary=self.binary, limit=DIRECT_BYTES_PER_PASS
        )

    def reply(self, frame: msgspec.Struct) -> None:
        self.outbox.put(self.codec.encode(frame))
        metrics = self.hub.metrics
        metrics.child(metrics.ws_frames_out, str(type(frame).__struct_config__.tag)).inc()

    def count_delivery(self, n: int) -> None:
        self.hub.metrics.ws_deliveries.inc(n)

    def subscription_failed(self, name: str, error: SmartModuleError) -> None:
        """A subscription's SmartModule chain failed: tell the client; a hard failure
        (trap, fuel, memory) also ends the subscription."""
        self.hub.metrics.errors.labels(error.code).inc()
        self.reply(f.error_frame(chain_error(error), sub=name))
        if is_fatal(error):
            subscription = self.subscriptions.pop(name, None)
            if subscription is not None:
                task = asyncio.create_task(subscription.close())
                self._in_flight.add(task)
                task.add_done_callback(self._in_flight.discard)

    # -- reading --------------------------------------------------------------------------------

    async def _read(self) -> None:
        # The raw ASGI receive: the session tracks the connection's state itself.
        receive = self._asgi_receive
        while not self.closing:
            message = await receive()
            kind = message["type"]
            if kind == "websocket.disconnect":
                self.websocket.client_state = WebSocketState.DISCONNECTED
                self.close_code = message.get("code", 1000)
                self.closing = self._close_requested = True
                return
            data = message.get("text")
            if data is None:
                data = message.get("bytes", b"")
            self.last_seen = time.monotonic()
            # Held from here: frames read meanwhile queue behind this one.
            self._handling = True
            try:
                # The room is checked with the frame in hand: publishes taken as they were
                # read may have filled it while this task waited for a frame.
                if not self._room:
                    await self._room_for_publishes.wait()
                await self._handle(data)
            finally:
                self._handling = False

    def _on_message(self, data: str | bytes) -> bool:
        """The transport's ``on_message`` hook: handle a publish, ping or pong at once; any
        other frame, or any frame while the reader is busy or there is no room for
        publishes, is left to the reader (False)."""
        if self._handling or self._close_requested or self.principal is None or not self._room:
            return False
        try:
            frame = self.codec.decode(data)
        except f.FrameError:
            return False
        inline = _INLINE.get(type(frame))
        if inline is None:
            # Decoded twice, by the reader again: only for the rare ops.
            return False
        handler, op = inline
        self.hub.frames_in[op].value += 1
        self.last_seen = time.monotonic()
        try:
            handler(self, frame)
        except GatewayError as error:
            if self._refuse(error, getattr(frame, "id", None)):
                self._close_soon(CloseCode.PROTOCOL_VIOLATION, self._abuse_reason())
        except Exception:
            # data_received must not raise: end the session as the reader task would.
            logger.exception("session_failed", session=self.id)
            self._close_soon(CloseCode.SERVER_ERROR, "server error")
        return True

    def _ping(self, frame: f.Ping) -> None:
        self.reply(f.ServerPong(id=frame.id))

    def _close_soon(self, code: int, reason: str) -> None:
        # Frames read after this one (in the same segment) go to the reader, which stops.
        if self._close_requested:
            return
        self._close_requested = True
        task = asyncio.ensure_future(self.close(code, reason))
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    async def _handle(self, data: str | bytes) -> None:
        try:
            frame = self.codec.decode(data)
        except f.FrameError as problem:
            await self._fail(problem.error, problem.request_id)
            return
        self.hub.frames_in[str(type(frame).__struct_config__.tag)].inc()
        request_id = getattr(frame, "id", None)
        try:
            if isinstance(frame, f.Pong):
                return
            if isinstance(frame, f.Ping):
                self._ping(frame)
                return
            if isinstance(frame, f.Auth):
                try:
                    self._authenticate(frame.token, request_id=None)
                except _Reject as reject:
                    await self._close_after_flush(reject.code, reject.reason)
                    raise _Closed from None
                return
            if self.principal is None:
                raise Unauthorized(
                    'Authenticate first: send {"op": "auth", "token": "..."} or connect with '
                    "?token=..."
                )
            if isinstance(frame, f.Publish):
                self._publish(frame)
            elif isinstance(frame, f.PublishBatch):
                self._publish_batch(frame)
            elif isinstance(frame, f.Subscribe):
                await self._subscribe(frame)
            elif isinstance(frame, f.Unsubscribe):
                await self._unsubscribe(frame)
        except GatewayError as error:
            sub = getattr(frame, "sub", None)
            await self._fail(error, request_id, sub if isinstance(frame, f.Subscribe) else None)

    async def _fail(
        self, error: GatewayError, request_id: Any = None, sub: str | None = None
    ) -> None:
        if self._refuse(error, request_id, sub):
            await self.close(CloseCode.PROTOCOL_VIOLATION, self._abuse_reason())
            raise _Closed

    def _refuse(self, error: GatewayError, request_id: Any = None, sub: str | None = None) -> bool:
        """Answer ``error``; True when the session is past its errors-per-minute limit."""
        self.hub.metrics.errors.labels(error.code).inc()
        self.reply(f.error_frame(error, request_id, sub))
        return not self._error_bucket.take()

    def _abuse_reason(self) -> str:
        return f"more than {self.hub.settings.ws_max_errors_per_minute} errors in a minute"

    # -- authentication -------------------------------------------------------------------------

    def _authenticate(self, token: str, request_id: Any) -> None:
        try:
            principal = self.hub.tokens.verify(token)
        except Unauthorized as error:
            self.reply(f.error_frame(error, request_id))
            expired = "expired" in error.message
            code = CloseCode.TOKEN_EXPIRED if expired else CloseCode.INVALID_TOKEN
            raise _Reject(code, error.message) from None
        current = self.principal
        if current is not None and (
            current.user_id != principal.user_id
            or current.organization_id != principal.organization_id
        ):
            problem: GatewayError = Unauthorized(
                "A refreshed token must be for the same user and organization as the session."
            )
            self.reply(f.error_frame(problem, request_id))
            raise _Reject(CloseCode.INVALID_TOKEN, problem.message)
        if not principal.scopes & {"publish", "subscribe", "admin"}:
            problem = Forbidden("The token has neither the publish nor the subscribe scope.")
            self.reply(f.error_frame(problem, request_id))
            raise _Reject(CloseCode.FORBIDDEN, problem.message)
        if current is None:
            key = (principal.organization_id, principal.user_id)
            if not self.hub.admit_user(key):
                limit = self.hub.settings.ws_max_connections_per_user
                problem = LimitExceeded(f"The user already has {limit} sessions open.")
                self.reply(f.error_frame(problem, request_id))
                raise _Reject(CloseCode.TOO_MANY_CONNECTIONS, problem.message)
            self._counted_user = key
        self.principal = principal
        self.warned_expiry = False
        self.reply(
            f.Welcome(
                session=self.id,
                user_id=principal.user_id,
                organization_id=principal.organization_id,
                scopes=sorted(principal.scopes),
                expires_at=int(principal.expires_at * 1000),
                heartbeat_ms=int(self.hub.settings.ws_heartbeat_s * 1000),
            )
        )

    async def _close_after_flush(self, code: int, reason: str) -> None:
        await self.outbox.flush(timeout=1.0)
        await self.close(code, reason)

    def release_user(self) -> tuple[str, str] | None:
        key, self._counted_user = self._counted_user, None
        return key

    # -- publishing -----------------------------------------------------------------------------
    #
    # A publish is handled once per frame on the hot path: checks, flags and counters are
    # written out here rather than spread over helper calls, which cost as much as the work.

    def _prepare(
        self, topic: str, event: Any, key: str | None
    ) -> tuple[bytes, bytes | None, str | None, str]:
        """The record of one event: its value, key and idempotency key, and its id."""
        principal = self.principal
        assert principal is not None
        check_topic(self.hub.log.topic(topic), event)
        chosen = bool(event.id)
        event = stamp(
            event,
            organization_id=principal.organization_id,
            user_id=principal.user_id,
            may_act_for_users=principal.is_admin,
        )
        event_id: str = event.id
        return (
            encode_event(event, self.hub.settings.max_event_bytes),
            key.encode() if key is not None else None,
            idempotency_key(principal.organization_id, event_id, chosen),
            event_id,
        )

    def _admit_publish(self, count: int) -> None:
        if self.hub.draining:
            raise Unavailable("The gateway is shutting down; publish again after reconnecting.")
        principal = self.principal
        assert principal is not None
        if "publish" not in principal.scopes:
            principal.require("publish")
        if not self._publish_bucket.take(count):
            raise RateLimited(
                f"More than {self.hub.settings.ws_publish_rate} publishes per second on this "
                "session (AGENTMEM_WS_PUBLISH_RATE); slow down and retry."
            )

    def _publish(self, frame: f.Publish) -> None:
        self._admit_publish(1)
        value, key, idempotency, event_id = self._prepare(frame.topic, frame.event, frame.key)
        # Counted before the call, in case a backend answers at once.
        self._publishes_in_flight += 1
        if self._answered:
            self._answered = False
            self._all_answered.clear()
        try:
            self.hub.log.produce_soon(
                frame.topic,
                key,
                value,
                functools.partial(self._acked, frame, event_id, time.perf_counter()),
                idempotency_key=idempotency,
            )
        except BaseException:
            self._publishes_in_flight -= 1
            self._check_room()
            raise
        if self._publishes_in_flight + len(self._in_flight) >= self._max_in_flight:
            self._check_room()

    def _publish_batch(self, frame: f.PublishBatch) -> None:
        limit = self.hub.settings.max_batch_events
        if len(frame.events) > limit:
            raise TooLarge(
                f"The batch has {len(frame.events)} events; the limit is {limit} "
                "(AGENTMEM_MAX_BATCH_EVENTS)."
            )
        self.hub.log.topic(frame.topic)
        self._admit_publish(max(1, len(frame.events)))
        results: list[f.BatchResult | dict[str, Any] | None] = []
        records: list[tuple[int, NewRecord, str]] = []
        items = self.codec.decode_items(frame.events) if frame.events else []
        for index, raw in enumerate(frame.events):
            try:
                item = items[index] if items is not None else self.codec.decode_item(raw, index)
                value, key, idempotency, event_id = self._prepare(frame.topic, item.event, item.key)
            except GatewayError as error:
                self.hub.metrics.errors.labels(error.code).inc()
                results.append(f.error_result(error))
            else:
                results.append(None)
                record = NewRecord(value=value, key=key, idempotency_key=idempotency)
                records.append((index, record, event_id))
        self._start(self._produce_batch(frame, results, records))

    def _start(self, work: Any) -> None:
        self._track(asyncio.ensure_future(work))

    def _track(self, future: asyncio.Future[Any]) -> None:
        self._in_flight.add(future)
        future.add_done_callback(self._done)
        self._check_room()

    def _done(self, future: asyncio.Future[Any]) -> None:
        self._in_flight.discard(future)
        self._check_room()

    def _check_room(self) -> None:
        """Bring the two events in line with the publishes and tasks in flight (each is
        mirrored by a flag, so that the hot path touches neither unless it changes)."""
        busy = self._publishes_in_flight + len(self._in_flight)
        if busy >= self._max_in_flight:
            if self._room:
                self._room = False
                self._room_for_publishes.clear()
        elif not self._room:
            self._room = True
            self._room_for_publishes.set()
        if busy and self._answered:
            self._answered = False
            self._all_answered.clear()
        elif not busy and not self._answered:
            self._answered = True
            self._all_answered.set()

    def _acked(
        self, frame: f.Publish, event_id: str, started: float, produced: Produced | BaseException
    ) -> None:
        self._publishes_in_flight -= 1
        if not self._room or not self._publishes_in_flight:
            self._check_room()
        if isinstance(produced, BaseException):
            error = produced
            if isinstance(error, asyncio.CancelledError):
                return
            if not isinstance(error, GatewayError):
                logger.error("produce_failed", topic=frame.topic, exc_info=error)
                error = Unavailable(f"The log failed: {error}")
            self.hub.metrics.errors.labels(error.code).inc()
            self.reply(f.error_frame(error, frame.id))
            return
        hub = self.hub
        metrics = hub.metrics
        metrics.ws_ack_latency.observe(time.perf_counter() - started)
        if not produced.duplicate:
            metrics.child(metrics.produced, frame.topic).value += 1
        self.outbox.put(
            self.codec.encode(
                f.Ack(
                    id=frame.id,
                    topic=frame.topic,
                    partition=produced.partition,
                    offset=produced.offset,
                    event_id=event_id,
                    duplicate=produced.duplicate,
                )
            )
        )
        hub.acks_out.value += 1

    async def _produce_batch(
        self,
        frame: f.PublishBatch,
        results: list[f.BatchResult | dict[str, Any] | None],
        records: list[tuple[int, NewRecord, str]],
    ) -> None:
        if records:
            try:
                produced = await self.hub.log.produce_batch(frame.topic, [r for _, r, _ in records])
            except GatewayError as error:
                for index, _, _ in records:
                    results[index] = f.error_result(error)
            else:
                fresh = 0
                for (index, _, event_id), where in zip(records, produced, strict=True):
                    results[index] = f.BatchResult(
                        where.partition, where.offset, event_id, where.duplicate
                    )
                    fresh += not where.duplicate
                self.hub.metrics.child(self.hub.metrics.produced, frame.topic).inc(fresh)
        self.reply(f.BatchAck(id=frame.id, topic=frame.topic, results=[r or {} for r in results]))

    # -- subscriptions --------------------------------------------------------------------------

    async def _subscribe(self, frame: f.Subscribe) -> None:
        assert self.principal is not None
        self.principal.require("subscribe")
        if frame.sub in self.subscriptions:
            raise LimitExceeded(
                f"A subscription named {frame.sub!r} exists in this session; pick another name."
            )
        limit = self.hub.settings.ws_max_subscriptions
        if len(self.subscriptions) >= limit:
            raise LimitExceeded(
                f"This session has {limit} subscriptions (AGENTMEM_WS_MAX_SUBSCRIPTIONS); "
                "unsubscribe from one first."
            )
        spec = self.hub.log.topic(frame.topic)
        chain = self.hub.chains.build(frame.filters)
        requested: dict[int, int] | str
        if isinstance(frame.from_, dict):
            requested = {}
            for name, offset in frame.from_.items():
                if not name.isdigit() or not 0 <= int(name) < spec.partitions:
                    raise InvalidOffset(
                        f"Topic {spec.name!r} has partitions 0 to {spec.partitions - 1}; "
                        f"{name!r} is not one of them.",
                        [ErrorDetail(path=f"$.from.{name}", problem="no such partition")],
                    )
                requested[int(name)] = offset
        else:
            requested = frame.from_
        feed = await self.hub.feed(frame.topic, chain)
        positions = dict(feed.positions)
        description = await self.hub.log.describe_topic(frame.topic)
        if requested == "end":
            # The shared tail may not have read a record acknowledged a moment ago yet;
            # "end" is after every record already written, so start past the log's ends.
            for info in description.partitions:
                positions[info.partition] = max(positions.get(info.partition, 0), info.end_offset)
        else:
            starts = {p.partition: p.start_offset for p in description.partitions}
            if requested == "beginning":
                positions = starts
            else:
                assert isinstance(requested, dict)
                for partition, offset in requested.items():
                    positions[partition] = max(offset, starts[partition])
        if self.closing:
            return
        subscription = Subscription(self, frame.sub, feed, positions, chain)
        self.subscriptions[frame.sub] = subscription
        self.reply(
            f.Subscribed(
                id=frame.id,
                sub=frame.sub,
                topic=frame.topic,
                positions={str(p): o for p, o in sorted(positions.items())},
            )
        )
        subscription.start()

    async def _unsubscribe(self, frame: f.Unsubscribe) -> None:
        subscription = self.subscriptions.pop(frame.sub, None)
        if subscription is None:
            raise UnknownSubscription(
                f"No subscription named {frame.sub!r} in this session.",
                [ErrorDetail(path="$.sub", problem="unknown")],
            )
        await subscription.close()
        self.reply(f.Unsubscribed(id=frame.id, sub=frame.sub))


def _ignore(session: Session, frame: Any) -> None:
    pass


_INLINE: dict[type[Any], tuple[Callable[[Session, Any], None], str]] = {
    frame: (handler, str(frame.__struct_config__.tag))
    for frame, handler in (
        (f.Publish, Session._publish),
        (f.PublishBatch, Session._publish_batch),
        (f.Ping, Session._ping),
        (f.Pong, _ignore),
    )
}
"""Frames a session handles as they are read (``Session._on_message``), with their op."""


class _Closed(Exception):
    """The session has been closed; stop handling it."""


class _Reject(Exception):
    """Authentication failed: close the session with ``code`` once the error is sent."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
