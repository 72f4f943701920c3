"""A gevent-friendly client of the gateway's WebSocket protocol (``agentmem.v1.json``).

Built on ``websocket-client``, whose blocking sockets become cooperative once locust has
monkey-patched the standard library with gevent. One reader greenlet per session decodes
every frame and routes it:

- answers to requests (``ack``, ``batch_ack``, ``subscribed``, ``error`` with an ``id``)
  go to the callback given with the request, with the time since it was sent;
- ``event`` frames and subscription errors (``error`` with a ``sub``) go to the handler;
- heartbeats are answered (``ping`` -> ``pong``), and ``token_expiring`` is answered with
  a fresh token, as docs/protocol.md asks of clients.

A watchdog greenlet fails requests that got no answer within ``request_timeout_s``.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import gevent
import msgspec
import websocket

logger = logging.getLogger(__name__)
SUBPROTOCOL = "agentmem.v1.json"
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


class GatewayError(Exception):
    """The gateway answered a request with an ``error`` frame."""

    def __init__(self, frame: dict[str, Any]) -> None:
        self.code = str(frame.get("code", "unknown"))
        self.temporary = bool(frame.get("temporary", False))
        super().__init__(f"{self.code}: {frame.get('message', '')}")


class ConnectionLost(Exception):
    """The session ended before the answer came."""


class NoAnswer(Exception):
    """No answer within the request timeout."""


@dataclass(slots=True)
class Answer:
    frame: dict[str, Any] | None
    """The answer frame, ``None`` when ``error`` is a ``ConnectionLost`` or ``NoAnswer``."""
    elapsed_ms: float
    length: int
    error: Exception | None


AnswerCallback = Callable[[Answer], None]


@dataclass(slots=True)
class _Pending:
    started: float
    callback: AnswerCallback


class SessionHandler(Protocol):
    def on_event(self, frame: dict[str, Any], length: int) -> None: ...

    def on_subscription_error(self, frame: dict[str, Any]) -> None: ...

    def on_closed(self, code: int | None, reason: str) -> None: ...


def websocket_url(host: str) -> str:
    """``http://h:p`` -> ``ws://h:p/ws`` (and https -> wss)."""
    base = host.rstrip("/")
    if base.startswith("https://"):
        return "wss://" + base[len("https://") :] + "/ws"
    if base.startswith("http://"):
        return "ws://" + base[len("http://") :] + "/ws"
    return base if base.endswith("/ws") else base + "/ws"


class GatewaySession:
    """One authenticated WebSocket session."""

    def __init__(
        self,
        url: str,
        token: Callable[[], str],
        handler: SessionHandler,
        request_timeout_s: float = 30.0,
    ) -> None:
        self.url = url
        self._token = token
        self._handler = handler
        self.request_timeout_s = request_timeout_s
        self._ws: websocket.WebSocket | None = None
        self._pending: dict[int, _Pending] = {}
        self._ids = itertools.count(1)
        self._greenlets: list[gevent.Greenlet] = []
        self.welcome: dict[str, Any] = {}
        self.closed = True

    # -- lifecycle -----------------------------------------------------------------------------

    def connect(self, timeout_s: float = 10.0) -> float:
        """Open the socket and authenticate; returns the time it took, in milliseconds."""
        started = time.perf_counter()
        ws = websocket.create_connection(
            self.url,
            timeout=timeout_s,
            subprotocols=[SUBPROTOCOL],
            enable_multithread=True,  # one lock for sends from the task and the reader
            skip_utf8_validation=True,
        )
        try:
            ws.send(_encode({"op": "auth", "token": self._token()}))
            while True:
                opcode, frame = ws.recv_data_frame(True)
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    code, reason = _close_status(frame.data)
                    raise ConnectionLost(f"closed with {code} before welcome: {reason}")
                if opcode not in (websocket.ABNF.OPCODE_TEXT, websocket.ABNF.OPCODE_BINARY):
                    continue
                message = _decode(frame.data)
                if message.get("op") == "welcome":
                    self.welcome = message
                    break
                if message.get("op") == "error":
                    raise GatewayError(message)
        except BaseException:
            ws.shutdown()
            raise
        ws.settimeout(None)
        self._ws = ws
        self.closed = False
        self._pending.clear()
        self._greenlets = [gevent.spawn(self._read), gevent.spawn(self._watch)]
        return (time.perf_counter() - started) * 1000

    def close(self) -> None:
        """Close politely (code 1000), then drop the socket and the greenlets."""
        ws, self._ws = self._ws, None
        if ws is None:
            return
        self.closed = True
        try:
            ws.send_close(websocket.STATUS_NORMAL)
        except Exception:
            pass
        reader = self._greenlets[0] if self._greenlets else None
        if reader is not None and reader is not gevent.getcurrent():
            reader.join(timeout=2.0)
        ws.shutdown()
        gevent.killall([g for g in self._greenlets if g is not gevent.getcurrent()], block=False)
        self._fail_all("session closed")

    # -- requests ------------------------------------------------------------------------------

    def request(self, frame: dict[str, Any], callback: AnswerCallback) -> int:
        """Send ``frame`` with a fresh ``id``.

        Raises ``ConnectionLost`` when the session is not open; otherwise ``callback`` is
        called exactly once, with the answer or with the failure (also a failed send).
        """
        ws = self._ws
        if ws is None:
            raise ConnectionLost("not connected")
        request_id = next(self._ids)
        frame["id"] = request_id
        started = time.perf_counter()
        self._pending[request_id] = _Pending(started, callback)
        try:
            ws.send(_encode(frame))
        except Exception as exc:
            pending = self._pending.pop(request_id, None)
            if pending is not None:  # else the reader failed it already
                elapsed = (time.perf_counter() - started) * 1000
                callback(Answer(None, elapsed, 0, ConnectionLost(f"send failed: {exc}")))
        return request_id

    def send(self, frame: dict[str, Any]) -> None:
        ws = self._ws
        if ws is None:
            raise ConnectionLost("not connected")
        ws.send(_encode(frame))

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    # -- greenlets -----------------------------------------------------------------------------

    def _read(self) -> None:
        ws = self._ws
        assert ws is not None
        code: int | None = None
        reason = "connection lost"
        try:
            while True:
                opcode, frame = ws.recv_data_frame(True)
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    code, reason = _close_status(frame.data)
                    break
                if opcode in (websocket.ABNF.OPCODE_TEXT, websocket.ABNF.OPCODE_BINARY):
                    try:
                        self._dispatch(_decode(frame.data), len(frame.data))
                    except Exception:
                        logger.exception("handling a frame failed")
        except Exception as exc:
            if not self.closed:
                reason = f"{type(exc).__name__}: {exc}"
        was_open = not self.closed
        self.closed = True
        self._fail_all(f"session ended ({code or reason})")
        if was_open:
            self._handler.on_closed(code, reason)

    def _dispatch(self, message: dict[str, Any], length: int) -> None:
        op = message.get("op")
        if op == "event":
            self._handler.on_event(message, length)
            return
        request_id = message.get("id")
        if isinstance(request_id, int) and request_id in self._pending and op != "ping":
            pending = self._pending.pop(request_id)
            elapsed = (time.perf_counter() - pending.started) * 1000
            error = GatewayError(message) if op == "error" else None
            pending.callback(Answer(message, elapsed, length, error))
        elif op == "ping":
            self._send_quietly({"op": "pong"})
        elif op == "token_expiring":
            self._send_quietly({"op": "auth", "token": self._token()})
        elif op == "error" and "sub" in message:
            self._handler.on_subscription_error(message)
        elif op == "welcome":
            self.welcome = message

    def _watch(self) -> None:
        while not self.closed:
            gevent.sleep(1.0)
            now = time.perf_counter()
            expired = [
                (rid, p)
                for rid, p in self._pending.items()
                if now - p.started > self.request_timeout_s
            ]
            for rid, pending in expired:
                del self._pending[rid]
                elapsed = (now - pending.started) * 1000
                error = NoAnswer(f"no answer within {self.request_timeout_s:g} s")
                pending.callback(Answer(None, elapsed, 0, error))

    def _send_quietly(self, frame: dict[str, Any]) -> None:
        try:
            self.send(frame)
        except Exception:
            pass

    def _fail_all(self, why: str) -> None:
        pending, self._pending = self._pending, {}
        now = time.perf_counter()
        for p in pending.values():
            p.callback(Answer(None, (now - p.started) * 1000, 0, ConnectionLost(why)))


def _close_status(data: bytes) -> tuple[int | None, str]:
    if len(data) >= 2:
        return int.from_bytes(data[:2], "big"), data[2:].decode("utf-8", "replace")
    return None, "closed without a status"
