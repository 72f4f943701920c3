"""The asyncio client: one WebSocket session at a time, re-established when it drops.

The protocol logic that needs no I/O lives in :mod:`~agentmem_client.frames` (codecs),
:mod:`~agentmem_client.codes` (close-code classification), :mod:`~agentmem_client.backoff`
(reconnect delays) and :mod:`~agentmem_client.resume` (subscription positions). This module
drives them over a ``websockets`` connection:

- a *supervisor* task opens a session (trying the URLs in turn), serves it until it ends,
  then reconnects after a backoff delay when the close code allows it;
- per session, a *reader* dispatches frames, a *watchdog* aborts the connection when the
  server's heartbeats stop, and a *refresher* sends a fresh token before the current one
  expires;
- publishes not yet acknowledged when a session ends are sent again on the next one with
  the same envelope ``id`` (the gateway deduplicates them); subscriptions are sent again
  with ``from`` set to the offsets after the last delivered records.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import inspect
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Final, Literal, TypeAlias
from urllib.parse import urlsplit, urlunsplit

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed as WsConnectionClosed
from websockets.exceptions import InvalidHandshake, InvalidMessage, InvalidStatus, InvalidURI
from websockets.typing import Subprotocol

from agentmem_client.backoff import Backoff
from agentmem_client.codes import CloseCode
from agentmem_client.errors import (
    AgentMemError,
    ConnectError,
    ConnectionClosed,
    ProtocolError,
    ServerError,
    Timeout,
    TokenError,
    TooLarge,
    server_error,
)
from agentmem_client.frames import (
    AckFrame,
    Auth,
    BatchAckFrame,
    BatchItem,
    ClientFrame,
    Codec,
    Encoding,
    ErrorBody,
    ErrorFrame,
    EventFrame,
    Ping,
    Pong,
    Publish,
    PublishBatch,
    RequestId,
    Subscribe,
    Subscribed,
    TokenExpiring,
    Unsubscribe,
    Unsubscribed,
    Welcome,
    from_spec,
    int_positions,
)
from agentmem_client.ids import event_id
from agentmem_client.models import (
    Ack,
    ConnectionState,
    ErrorResult,
    Event,
    StateChange,
    SubscriptionState,
)
from agentmem_client.resume import FromPosition, ResumeState
from agentmem_client.subscription import Subscription

__all__ = ["DEFAULT", "Client", "normalize_url"]

logger = logging.getLogger("agentmem_client")


class _Default(enum.Enum):
    DEFAULT = "DEFAULT"


DEFAULT: Final = _Default.DEFAULT
"""Use the client's default (``timeout`` argument of calls)."""

TimeoutArg: TypeAlias = float | Literal[_Default.DEFAULT] | None
TokenSource: TypeAlias = Callable[[], "str | Awaitable[str]"]
StateCallback: TypeAlias = Callable[[StateChange], Any]
EventLike: TypeAlias = Mapping[str, Any] | msgspec.Struct
BatchEntry: TypeAlias = EventLike | tuple[str | None, EventLike]


def normalize_url(url: str) -> str:
    """A WebSocket URL of the gateway: ``http(s)`` becomes ``ws(s)``, no path becomes ``/ws``.

    >>> normalize_url("http://127.0.0.1:8080")
    'ws://127.0.0.1:8080/ws'
    """
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss") or not parts.netloc:
        raise ValueError(f"not a ws://, wss://, http:// or https:// URL: {url!r}")
    path = parts.path if parts.path not in ("", "/") else "/ws"
    return urlunsplit((scheme, parts.netloc, path, parts.query, ""))


class _Request:
    """A request waiting for its answer (``ack``, ``batch_ack``, ``unsubscribed``, ``pong``)."""

    __slots__ = ("data", "future", "id", "kind", "resend")

    def __init__(
        self, rid: int, kind: str, data: str | bytes, future: asyncio.Future[Any], resend: bool
    ) -> None:
        self.id = rid
        self.kind = kind
        self.data = data
        self.future = future
        self.resend = resend


class _Session:
    """One authenticated WebSocket connection."""

    def __init__(self, ws: ClientConnection, url: str, welcome: Welcome) -> None:
        self.ws = ws
        self.url = url
        self.welcome = welcome
        self.last_rx = time.monotonic()
        self.reader_blocked = False
        self.local_close: tuple[int | None, str] | None = None
        self.refresh_wakeup = asyncio.Event()
        self.refresh_requested = False

    def close_info(self) -> tuple[int | None, str]:
        if self.local_close is not None:
            return self.local_close
        rcvd = self.ws.protocol.close_rcvd
        if rcvd is None:
            return None, "the connection dropped without a close frame"
        return rcvd.code, rcvd.reason

    def abort(self, code: int | None, reason: str) -> None:
        if self.local_close is None:
            self.local_close = (code, reason)
        transport = self.ws.transport
        if transport is not None:
            transport.abort()


class Client:
    """A client of the gateway's WebSocket protocol.

    ::

        async with Client("ws://127.0.0.1:8080/ws", token=TOKEN) as client:
            ack = await client.publish("user-events", {"type": "user_interaction",
                                                       "payload": {"action": "opened"}})
            async for event in client.subscribe("user-events", from_="beginning"):
                ...

    :param url: the gateway's ``ws://…/ws`` URL, or several: they are tried in turn when
        (re)connecting. ``http(s)://`` URLs and URLs without a path are accepted.
    :param token: the token (HS256 JWT) to authenticate with.
    :param get_token: instead of (or besides) ``token``, a function, plain or ``async``,
        returning a fresh token. It is called before every connection, when the gateway
        sends ``token_expiring``, and ``token_refresh_margin`` seconds before the token
        expires; the fresh token is sent on the open session (``{"op": "auth"}``).
    :param encoding: ``"json"`` (text frames) or ``"msgpack"`` (binary frames).
    :param timeout: the default timeout of calls, in seconds (``None``: no timeout). It
        includes the time spent waiting for a reconnection.
    :param connect_timeout: how long :meth:`connect` keeps trying to open the first session.
    :param open_timeout: how long one attempt may take (TCP, WebSocket handshake, ``welcome``).
    :param reconnect: re-establish dropped sessions (close codes 4000-4499, 1006, ...).
    :param backoff_base: the ceiling of the first reconnect delay, in seconds.
    :param backoff_max: the largest reconnect delay, in seconds.
    :param max_attempts: consecutive failed reconnection attempts before giving up
        (``None``: keep trying until :meth:`close`).
    :param heartbeat_timeout_factor: a session with no frame from the server for this many
        heartbeat intervals (``heartbeat_ms`` of ``welcome``) is considered dead and replaced.
    :param token_refresh_margin: refresh the token this many seconds before it expires (or
        halfway through its remaining life when that is sooner).
    :param max_buffer: events buffered per subscription before reading pauses
        (``None``: unbounded).
    :param max_frame_bytes: frames larger than this are refused locally with
        :class:`~agentmem_client.errors.TooLarge` (the gateway would close the session with
        1009); ``None`` disables the check.
    :param on_state_change: a callback for connection state changes (see
        :meth:`on_state_change`).
    :param websocket_options: more keyword arguments for ``websockets.connect``.
    """

    def __init__(
        self,
        url: str | Sequence[str],
        *,
        token: str | None = None,
        get_token: TokenSource | None = None,
        encoding: Encoding = "json",
        timeout: float | None = 30.0,
        connect_timeout: float | None = 10.0,
        open_timeout: float = 10.0,
        reconnect: bool = True,
        backoff_base: float = 0.1,
        backoff_max: float = 10.0,
        max_attempts: int | None = None,
        heartbeat_timeout_factor: float = 2.5,
        token_refresh_margin: float = 30.0,
        max_buffer: int | None = 10_000,
        max_frame_bytes: int | None = 1 << 20,
        on_state_change: StateCallback | None = None,
        websocket_options: Mapping[str, Any] | None = None,
    ) -> None:
        urls = [url] if isinstance(url, str) else list(url)
        if not urls:
            raise ValueError("at least one URL is needed")
        self.urls = [normalize_url(u) for u in urls]
        if token is None and get_token is None:
            raise ValueError("give a token or a get_token function")
        if heartbeat_timeout_factor <= 1:
            raise ValueError("heartbeat_timeout_factor must be > 1")
        self._token = token
        self._get_token = get_token
        self._codec = Codec(encoding)
        self.encoding: Encoding = encoding
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.open_timeout = open_timeout
        self.reconnect = reconnect
        self.heartbeat_timeout_factor = heartbeat_timeout_factor
        self.token_refresh_margin = token_refresh_margin
        self.max_buffer = max_buffer
        self.max_frame_bytes = max_frame_bytes
        self._backoff = Backoff(backoff_base, backoff_max, max_attempts)
        self._ws_options = dict(websocket_options or {})
        self._callbacks: list[StateCallback] = [on_state_change] if on_state_change else []

        self._state = ConnectionState.DISCONNECTED
        self._ids = itertools.count(1)
        self._sub_names = itertools.count(1)
        self._pending: dict[int, _Request] = {}
        self._subs: dict[str, Subscription] = {}
        self._sub_requests: dict[RequestId, Subscription] = {}
        self._session: _Session | None = None
        self._url_index = 0
        self._supervisor: asyncio.Task[None] | None = None
        self._first: asyncio.Future[None] | None = None
        self._closing = False
        self._error: ConnectionClosed | AgentMemError | None = None
        self._last_failure: AgentMemError | None = None
        self._background: set[asyncio.Task[None]] = set()

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> Client:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def connect(self) -> None:
        """Open the first session; return once it is authenticated.

        Failures that allow a retry (connection refused, 4000-4499, ...) are retried with
        backoff for up to ``connect_timeout`` seconds; terminal ones (an invalid token, ...)
        are raised at once. The client is closed when this raises.
        """
        if self._supervisor is not None:
            raise RuntimeError("the client is connected already (or was closed)")
        loop = asyncio.get_running_loop()
        self._first = loop.create_future()
        self._supervisor = loop.create_task(self._supervise(), name="agentmem-client")
        try:
            async with asyncio.timeout(self.connect_timeout):
                await asyncio.shield(self._first)
        except TimeoutError:
            last = self._last_failure
            error = ConnectError(
                None,
                message=f"could not connect within {self.connect_timeout}s"
                + (f": {last.message}" if last else ""),
            )
            await self._shutdown(error)
            raise error from last
        except BaseException:
            await self._shutdown(self._error or ConnectionClosed(1000, "connect cancelled"))
            raise

    async def close(self) -> None:
        """Close the session (code 1000) and stop reconnecting.

        Pending calls raise :class:`ConnectionClosed` (``close_code`` 1000); subscriptions
        stop iterating after their buffered events. Closing twice does nothing.
        """
        await self._shutdown(ConnectionClosed(1000, "the client closed"))

    async def _shutdown(self, error: AgentMemError) -> None:
        if self._closing:
            if self._supervisor is not None:
                # Wait for the supervisor without taking on its outcome.
                await asyncio.wait([self._supervisor])
            return
        self._closing = True
        session = self._session
        if session is not None:
            try:
                async with asyncio.timeout(2.0):
                    await session.ws.close(1000, "client closed")
            except (TimeoutError, OSError, WsConnectionClosed):
                session.abort(1000, "client closed")
        supervisor = self._supervisor
        if supervisor is not None and not supervisor.done():
            supervisor.cancel()
            await asyncio.wait([supervisor])
        self._finish(error)

    # -- state -----------------------------------------------------------------------------

    @property
    def state(self) -> ConnectionState:
        return self._state

    @property
    def session(self) -> Welcome | None:
        """The current session's ``welcome`` (user, organization, scopes, expiry), if any."""
        return self._session.welcome if self._session is not None else None

    @property
    def url(self) -> str | None:
        """The URL of the current session."""
        return self._session.url if self._session is not None else None

    @property
    def subscriptions(self) -> list[Subscription]:
        """The active subscriptions."""
        return list(self._subs.values())

    @property
    def error(self) -> AgentMemError | None:
        """Why the client closed, once it has."""
        return self._error

    def on_state_change(self, callback: StateCallback) -> Callable[[], None]:
        """Call ``callback(change)`` on each connection state change; returns a remover.

        States go ``disconnected → connecting → connected``, back to ``disconnected`` (with
        the close ``code`` and ``reason``) when a session ends, and to ``closed`` at the end.
        Callbacks run synchronously in the event loop; exceptions are logged.
        """
        self._callbacks.append(callback)

        def remove() -> None:
            if callback in self._callbacks:
                self._callbacks.remove(callback)

        return remove

    def _set_state(
        self,
        state: ConnectionState,
        code: int | None = None,
        reason: str = "",
        error: AgentMemError | None = None,
    ) -> None:
        if state is self._state:
            return
        change = StateChange(state.value, self._state.value, code, reason, error)
        self._state = state
        logger.debug("connection %s -> %s (%s %s)", change.previous, state.value, code, reason)
        for callback in list(self._callbacks):
            try:
                callback(change)
            except Exception:
                logger.exception("state callback %r failed", callback)

    # -- calls -----------------------------------------------------------------------------

    async def publish(
        self,
        topic: str,
        event: EventLike,
        *,
        key: str | None = None,
        timeout: TimeoutArg = DEFAULT,
    ) -> Ack:
        """Write one event; return once it is durable.

        The envelope ``id`` is set (``event_id()``, a UUIDv7) when the event has none, so a re-send
        after a reconnect is recognised by the gateway, which answers ``duplicate=True``
        with the original position. ``event`` is not modified.

        :raises ServerError: a subclass by code (``InvalidEvent``, ``UnknownTopic``, ...).
        :raises Timeout: no acknowledgement in time (the event may have been written).
        :raises ConnectionClosed: the client closed or gave up reconnecting.
        """
        envelope = _envelope(event)
        request = self._request(
            "publish",
            lambda rid: Publish(id=rid, topic=topic, event=envelope, key=key),
            resend=True,
        )
        frame: AckFrame = await self._exchange(request, timeout)
        return Ack(frame.topic, frame.partition, frame.offset, frame.event_id, frame.duplicate)

    async def publish_batch(
        self,
        topic: str,
        events: Iterable[BatchEntry],
        *,
        timeout: TimeoutArg = DEFAULT,
    ) -> list[Ack | ErrorResult]:
        """Write several events to one topic; one result per event, in order.

        Each entry is an event or a ``(key, event)`` pair. Invalid events fail alone (an
        :class:`ErrorResult`); the valid ones are written together. An error about the whole
        batch (unknown topic, too many events, ...) is raised.
        """
        items: list[BatchItem] = []
        for entry in events:
            if isinstance(entry, tuple):
                entry_key, entry_event = entry
                items.append(BatchItem(event=_envelope(entry_event), key=entry_key))
            else:
                items.append(BatchItem(event=_envelope(entry)))
        request = self._request(
            "publish_batch",
            lambda rid: PublishBatch(id=rid, topic=topic, events=items),
            resend=True,
        )
        frame: BatchAckFrame = await self._exchange(request, timeout)
        if len(frame.results) != len(items):
            raise ProtocolError(
                f"batch_ack has {len(frame.results)} results for {len(items)} events"
            )
        results: list[Ack | ErrorResult] = []
        for item, result in zip(items, frame.results, strict=True):
            if result.error is not None:
                results.append(_error_result(result.error))
            else:
                results.append(
                    Ack(
                        frame.topic,
                        result.partition if result.partition is not None else -1,
                        result.offset if result.offset is not None else -1,
                        result.event_id or str(item.event["id"]),
                        result.duplicate,
                    )
                )
        return results

    def subscribe(
        self,
        topic: str,
        from_: FromPosition = "end",
        filters: Sequence[Mapping[str, Any]] | None = None,
        *,
        timeout: TimeoutArg = DEFAULT,
        max_buffer: int | Literal[_Default.DEFAULT] | None = DEFAULT,
    ) -> Subscription:
        """Follow a topic from ``"end"`` (default), ``"beginning"``, or ``{partition: offset}``.

        Returns a :class:`Subscription`: ``await`` it to wait for the gateway's
        ``subscribed``, or iterate it directly (it subscribes on the first iteration).
        ``filters`` is a SmartModule chain, ``[{"smartmodule": NAME, "params": {...}}]``.
        Partitions missing from a ``from_`` mapping start at the end.
        """
        self._raise_if_closed()
        return Subscription(
            self,
            f"s{next(self._sub_names)}",
            topic,
            ResumeState(from_),
            [dict(f) for f in filters] if filters is not None else None,
            self._timeout(timeout),
            self.max_buffer if max_buffer is DEFAULT else max_buffer,
        )

    async def ping(self, *, timeout: TimeoutArg = DEFAULT) -> float:
        """Round-trip time to the gateway, in seconds (``{"op": "ping"}``)."""
        started = time.monotonic()
        request = self._request("ping", lambda rid: Ping(id=rid), resend=False)
        await self._exchange(request, timeout)
        return time.monotonic() - started

    # -- requests --------------------------------------------------------------------------

    def _timeout(self, timeout: TimeoutArg) -> float | None:
        return self.timeout if timeout is DEFAULT else timeout

    def _raise_if_closed(self) -> None:
        if self._closing or self._state is ConnectionState.CLOSED:
            raise self._error or ConnectionClosed(1000, "the client is closed")
        if self._supervisor is None:
            raise RuntimeError("the client is not connected: use `async with` or connect()")

    def _request(self, kind: str, build: Callable[[int], ClientFrame], *, resend: bool) -> _Request:
        self._raise_if_closed()
        rid = next(self._ids)
        data = self._encode(build(rid))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        return _Request(rid, kind, data, future, resend)

    def _encode(self, frame: ClientFrame) -> str | bytes:
        data = self._codec.encode(frame)
        if self.max_frame_bytes is not None:
            size = len(data.encode() if isinstance(data, str) else data)
            if size > self.max_frame_bytes:
                raise TooLarge(
                    f"the {frame.__struct_config__.tag} frame is {size} bytes, over the "
                    f"{self.max_frame_bytes}-byte frame limit",
                    code="too_large",
                )
        return data

    async def _exchange(self, request: _Request, timeout: TimeoutArg) -> Any:
        """Register, send (now or after the next reconnect), and wait for the answer."""
        self._pending[request.id] = request
        try:
            async with asyncio.timeout(self._timeout(timeout)):
                session = self._session
                if session is not None:
                    await self._send(session, request.data)
                return await request.future
        except TimeoutError:
            raise Timeout(
                f"no answer to {request.kind} (request {request.id}) within "
                f"{self._timeout(timeout)}s"
            ) from None
        finally:
            self._pending.pop(request.id, None)

    async def _send(self, session: _Session, data: str | bytes) -> None:
        """Send on ``session`` if it is still current; a lost frame is re-sent on reconnect."""
        if session is not self._session:
            return
        try:
            await session.ws.send(data)
        except WsConnectionClosed:
            pass

    def _send_soon(self, session: _Session, frame: ClientFrame) -> None:
        data = self._codec.encode(frame)
        task = asyncio.get_running_loop().create_task(self._send(session, data))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(_log_task_failure)

    # -- subscriptions (called by Subscription) --------------------------------------------

    def _activate(self, sub: Subscription) -> None:
        self._raise_if_closed()
        self._subs[sub.name] = sub
        sub._set_state(SubscriptionState.SUBSCRIBING)
        if self._session is not None:
            self._send_soon(self._session, self._subscribe_frame(sub))

    def _subscribe_frame(self, sub: Subscription) -> Subscribe:
        rid = next(self._ids)
        self._sub_requests[rid] = sub
        return Subscribe(
            id=rid,
            sub=sub.name,
            topic=sub.topic,
            from_=from_spec(sub._wire_from),
            filters=sub.filters,
        )

    def _forget(self, sub: Subscription) -> None:
        """Drop a subscription locally and tell the gateway if it may know it."""
        self._subs.pop(sub.name, None)
        session = self._session
        if session is not None:
            self._send_soon(session, Unsubscribe(id=next(self._ids), sub=sub.name))

    async def _unsubscribe(self, sub: Subscription, timeout: float | None) -> None:
        self._subs.pop(sub.name, None)
        if self._session is None or self._closing:
            return
        request = self._request(
            "unsubscribe", lambda rid: Unsubscribe(id=rid, sub=sub.name), resend=False
        )
        await self._exchange(request, self.timeout if timeout is None else timeout)

    # -- the supervisor --------------------------------------------------------------------

    async def _supervise(self) -> None:
        try:
            await self._connect_loop()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # a bug: fail loudly rather than hang callers
            logger.exception("agentmem client supervisor failed")
            self._finish(ConnectionClosed(None, f"internal client error: {exc!r}"))

    async def _connect_loop(self) -> None:
        while not self._closing:
            self._set_state(ConnectionState.CONNECTING)
            try:
                session = await self._open_session()
            except AgentMemError as exc:
                self._last_failure = exc
                if not _retryable(exc):
                    self._finish(exc)
                    return
                code = exc.close_code if isinstance(exc, ConnectionClosed) else None
                self._set_state(ConnectionState.DISCONNECTED, code, exc.message, exc)
                if not await self._wait_backoff(exc):
                    return
                continue

            self._backoff.reset()
            code, reason = await self._serve(session)
            if self._closing:
                return
            closed = ConnectionClosed(code, reason)
            self._last_failure = closed
            if not closed.reconnectable or not self.reconnect:
                self._finish(closed)
                return
            self._set_state(ConnectionState.DISCONNECTED, closed.close_code, reason, closed)
            if not await self._wait_backoff(closed):
                return

    async def _wait_backoff(self, cause: AgentMemError) -> bool:
        """Sleep before the next attempt; ``False`` (and the client closed) to give up."""
        delay = self._backoff.next_delay() if self.reconnect or self._first_pending else None
        if delay is None:
            code = cause.close_code if isinstance(cause, ConnectionClosed) else None
            self._finish(
                ConnectionClosed(
                    code,
                    getattr(cause, "reason", ""),
                    message=f"gave up reconnecting after {self._backoff.attempts} attempts: "
                    f"{cause.message}",
                )
            )
            return False
        logger.info("reconnecting in %.2fs (%s)", delay, cause.message)
        await asyncio.sleep(delay)
        return True

    @property
    def _first_pending(self) -> bool:
        return self._first is not None and not self._first.done()

    async def _open_session(self) -> _Session:
        """Try each URL once, from the current one; the first session that says welcome."""
        last: AgentMemError | None = None
        for step in range(len(self.urls)):
            index = (self._url_index + step) % len(self.urls)
            try:
                session = await self._handshake(self.urls[index])
            except AgentMemError as exc:
                if not _retryable(exc):
                    raise
                logger.info("cannot open a session on %s: %s", self.urls[index], exc.message)
                last = exc
                continue
            self._url_index = index
            return session
        assert last is not None
        raise last

    async def _handshake(self, url: str) -> _Session:
        token = await self._fetch_token()
        ws: ClientConnection | None = None
        options: dict[str, Any] = {
            "subprotocols": [Subprotocol(self._codec.subprotocol)],
            "compression": None,
            "open_timeout": None,
            "ping_interval": None,
            "close_timeout": 2,
            "max_size": 16 << 20,
            **self._ws_options,
        }
        try:
            async with asyncio.timeout(self.open_timeout):
                ws = await connect(url, **options)
                if self._codec.binary and ws.subprotocol != self._codec.subprotocol:
                    raise ConnectError(
                        CloseCode.PROTOCOL_ERROR,
                        message=f"{url} does not speak {self._codec.subprotocol}",
                    )
                await ws.send(self._codec.encode(Auth(token=token)))
                while True:
                    frame = self._codec.decode_server(await ws.recv())
                    if isinstance(frame, Welcome):
                        return _Session(ws, url, frame)
                    if isinstance(frame, Ping):
                        await ws.send(self._codec.encode(Pong(id=frame.id)))
                    elif isinstance(frame, ErrorFrame):
                        raise _frame_error(frame)
        except TimeoutError:
            error: AgentMemError = ConnectError(
                None, message=f"no welcome from {url} within {self.open_timeout}s"
            )
        except WsConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd is not None else None
            reason = exc.rcvd.reason if exc.rcvd is not None else ""
            error = ConnectError(code, reason)
        except InvalidStatus as exc:
            status = exc.response.status_code
            error = ConnectError(
                None if status >= 500 or status == 429 else CloseCode.PROTOCOL_ERROR,
                message=f"{url} refused the WebSocket upgrade with HTTP {status}",
            )
        except InvalidMessage as exc:
            # The server closed the connection before answering (shutting down, restarting,
            # overloaded): worth another attempt. Any other malformed answer is terminal.
            closed_early = isinstance(exc.__cause__, EOFError | OSError)
            error = ConnectError(
                None if closed_early else CloseCode.PROTOCOL_ERROR,
                message=f"handshake with {url} failed: {exc}",
            )
        except (InvalidHandshake, InvalidURI) as exc:
            error = ConnectError(
                CloseCode.PROTOCOL_ERROR, message=f"handshake with {url} failed: {exc}"
            )
        except OSError as exc:
            error = ConnectError(None, message=f"cannot connect to {url}: {exc}")
        except BaseException:
            if ws is not None:
                ws.transport.abort()
            raise
        if ws is not None:
            ws.transport.abort()
        raise error

    async def _fetch_token(self) -> str:
        if self._get_token is None:
            assert self._token is not None
            return self._token
        try:
            result = self._get_token()
            if inspect.isawaitable(result):
                result = await result
        except Exception as exc:
            raise TokenError(f"get_token failed: {exc!r}") from exc
        if not isinstance(result, str) or not result:
            raise TokenError(f"get_token returned {result!r}, not a token")
        self._token = result
        return result

    # -- one session -----------------------------------------------------------------------

    async def _serve(self, session: _Session) -> tuple[int | None, str]:
        """Run a session until it ends; its close code and reason."""
        self._session = session
        self._sub_requests.clear()
        # Snapshot, in the same step as making the session current: every request created
        # from now on sends itself, every earlier one is in the snapshot.
        subscribes = [self._subscribe_frame(sub) for sub in self._subs.values()]
        resend = [r.data for r in self._pending.values() if r.resend]
        self._set_state(ConnectionState.CONNECTED)
        if self._first is not None and not self._first.done():
            self._first.set_result(None)
        loop = asyncio.get_running_loop()
        tasks = [loop.create_task(self._resend(session, subscribes, resend))]
        if session.welcome.heartbeat_ms:
            tasks.append(loop.create_task(self._watchdog(session)))
        if self._get_token is not None:
            tasks.append(loop.create_task(self._refresher(session)))
        try:
            await self._read(session)
        finally:
            self._session = None
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            session.ws.transport.abort()
            self._after_session(session)
        return session.close_info()

    def _after_session(self, session: _Session) -> None:
        code, reason = session.close_info()
        for rid, request in list(self._pending.items()):
            if request.kind == "unsubscribe":
                # The session, and its subscriptions, are gone.
                if not request.future.done():
                    request.future.set_result(None)
            elif not request.resend and not request.future.done():
                request.future.set_exception(ConnectionClosed(code, reason))
                self._pending.pop(rid, None)
        if not self._closing:
            for sub in self._subs.values():
                sub._set_state(SubscriptionState.SUBSCRIBING, code, reason)

    async def _resend(
        self, session: _Session, subscribes: list[Subscribe], publishes: list[str | bytes]
    ) -> None:
        for frame in subscribes:
            await self._send(session, self._codec.encode(frame))
        for data in publishes:
            await self._send(session, data)
        if publishes:
            logger.info("re-sent %d unacknowledged publishes", len(publishes))

    async def _read(self, session: _Session) -> None:
        ws = session.ws
        try:
            while True:
                data = await ws.recv()
                session.last_rx = time.monotonic()
                try:
                    frame = self._codec.decode_server(data)
                except ProtocolError as exc:
                    logger.warning("ignoring a frame from the gateway: %s", exc.message)
                    continue
                try:
                    await self._dispatch(session, frame)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    logger.exception("failed to handle a %r frame", type(frame).__name__)
        except WsConnectionClosed:
            return

    async def _dispatch(self, session: _Session, frame: object) -> None:
        if isinstance(frame, EventFrame):
            await self._deliver(session, frame)
        elif isinstance(frame, AckFrame | BatchAckFrame | Pong | Unsubscribed):
            rid = frame.id
            request = self._pending.get(rid) if isinstance(rid, int) else None
            if request is not None and not request.future.done():
                request.future.set_result(frame)
        elif isinstance(frame, Ping):
            self._send_soon(session, Pong(id=frame.id))
        elif isinstance(frame, Subscribed):
            sub = self._subs.get(frame.sub)
            if sub is None:  # given up on (timeout) before the answer came
                self._send_soon(session, Unsubscribe(id=next(self._ids), sub=frame.sub))
            else:
                if frame.id is not None:
                    self._sub_requests.pop(frame.id, None)
                sub._on_subscribed(int_positions(frame.positions))
        elif isinstance(frame, ErrorFrame):
            self._on_error(frame)
        elif isinstance(frame, Welcome):
            session.welcome = frame
            session.refresh_wakeup.set()
        elif isinstance(frame, TokenExpiring):
            if self._get_token is None:
                logger.warning("the token expires soon and there is no get_token to renew it")
            else:
                session.refresh_requested = True
                session.refresh_wakeup.set()

    def _on_error(self, frame: ErrorFrame) -> None:
        error = _frame_error(frame)
        request = self._pending.get(frame.id) if isinstance(frame.id, int) else None
        if request is not None:
            if not request.future.done():
                request.future.set_exception(error)
            return
        sub = self._sub_requests.pop(frame.id, None) if frame.id is not None else None
        if sub is None and frame.sub is not None:
            sub = self._subs.get(frame.sub)
        if sub is not None:
            self._subs.pop(sub.name, None)
            sub._end(error, reason=error.message)
            return
        logger.warning("error from the gateway: %s: %s", frame.code, frame.message)

    async def _deliver(self, session: _Session, frame: EventFrame) -> None:
        sub = self._subs.get(frame.sub)
        if sub is None or not sub._accepts(frame.partition, frame.offset):
            return
        event = Event(
            frame.topic, frame.partition, frame.offset, frame.timestamp, frame.key, frame.value()
        )
        session.reader_blocked = True
        try:
            await sub._put(event)
        finally:
            session.reader_blocked = False
            session.last_rx = time.monotonic()

    async def _watchdog(self, session: _Session) -> None:
        while True:
            heartbeat_ms = session.welcome.heartbeat_ms
            if not heartbeat_ms:
                return
            limit = self.heartbeat_timeout_factor * heartbeat_ms / 1000
            silent = time.monotonic() - session.last_rx
            if session.reader_blocked:
                # Not reading (a full subscription buffer): silence is ours, not the server's.
                session.last_rx = time.monotonic()
            elif silent > limit:
                logger.warning("no frame from %s for %.1fs: reconnecting", session.url, silent)
                session.abort(
                    None,
                    f"no frame from the gateway for {silent:.1f}s (heartbeat {heartbeat_ms}ms)",
                )
                return
            await asyncio.sleep(max(limit - silent, 0.05))

    def _refresh_delay(self, session: _Session) -> float | None:
        if session.refresh_requested:
            return 0.0
        expires_at = session.welcome.expires_at
        if expires_at is None:
            return None
        remaining = expires_at / 1000 - time.time()
        return max(remaining - self.token_refresh_margin, remaining / 2, 1.0)

    async def _refresher(self, session: _Session) -> None:
        while True:
            session.refresh_wakeup.clear()
            delay = self._refresh_delay(session)
            try:
                async with asyncio.timeout(delay):
                    await session.refresh_wakeup.wait()
                if not session.refresh_requested:
                    continue  # a new expiry: recompute the delay
            except TimeoutError:
                pass
            session.refresh_requested = False
            try:
                token = await self._fetch_token()
            except TokenError as exc:
                logger.warning("token refresh failed: %s; retrying in 1s", exc.message)
                await asyncio.sleep(1.0)
                session.refresh_requested = True
                continue
            # The gateway answers ``welcome`` with the new expiry; wait for it a little.
            session.refresh_wakeup.clear()
            await self._send(session, self._codec.encode(Auth(token=token)))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(10.0):
                    await session.refresh_wakeup.wait()

    # -- the end ---------------------------------------------------------------------------

    def _finish(self, error: AgentMemError) -> None:
        """Move to ``closed``: fail pending calls and end subscriptions with ``error``."""
        if self._state is ConnectionState.CLOSED:
            return
        self._closing = True
        self._error = error
        code = error.close_code if isinstance(error, ConnectionClosed) else None
        normal = code == CloseCode.NORMAL
        for request in list(self._pending.values()):
            if not request.future.done():
                request.future.set_exception(error)
        self._pending.clear()
        for sub in list(self._subs.values()):
            sub._end(None if normal else error, code=code, reason=error.message)
        self._subs.clear()
        if self._first is not None and not self._first.done():
            self._first.set_exception(error)
            self._first.exception()  # retrieved: connect() raises it
        self._set_state(ConnectionState.CLOSED, code, error.message, None if normal else error)


def _envelope(event: EventLike) -> dict[str, Any]:
    if isinstance(event, msgspec.Struct):
        envelope = msgspec.to_builtins(event)
        if not isinstance(envelope, dict):
            raise TypeError("an event must encode to an object")
    elif isinstance(event, Mapping):
        envelope = dict(event)
    else:
        raise TypeError(f"an event must be a mapping or a msgspec Struct, not {type(event)!r}")
    if envelope.get("id") is None:
        envelope["id"] = event_id()
    return envelope


def _frame_error(frame: ErrorFrame) -> ServerError:
    return server_error(frame.code, frame.message, tuple(frame.details or ()), frame.temporary)


def _error_result(body: ErrorBody) -> ErrorResult:
    error = server_error(body.code, body.message, tuple(body.details or ()), body.temporary)
    return ErrorResult(body.code, body.message, error.details, error.temporary)


def _retryable(error: AgentMemError) -> bool:
    if isinstance(error, ConnectionClosed):
        return error.reconnectable
    if isinstance(error, ServerError | TokenError):
        return error.temporary
    return False


def _log_task_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("background send failed", exc_info=task.exception())
