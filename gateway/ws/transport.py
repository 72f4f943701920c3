"""The gateway's WebSocket protocol for uvicorn: uvicorn's sans-I/O implementation with
write coalescing, a bounded read-ahead, and a direct frame-sending extension.

uvicorn's ``websockets-sansio`` protocol writes each message with its own ``write`` call
and pauses the socket after every received message (resuming it when the application
reads), which costs two ``epoll_ctl`` calls per message. This subclass keeps its handshake,
close and keep-alive handling and changes three things:

- **Coalesced writes.** Everything written to the socket during one pass of the event loop
  is joined into one ``write``; the join runs at the end of the pass, so a lone frame is not
  delayed. Writes keep their order, control frames included. A fan-out delivery written
  with ``send_now`` while nothing waits goes to the socket at once instead: a pass that
  writes to a thousand connections then reaches the first while it goes on, without a
  scheduled flush per connection.
- **Bounded read-ahead.** Received messages queue for the application up to
  ``READ_AHEAD_MESSAGES`` messages or ``READ_AHEAD_BYTES`` bytes; past either bound the
  socket stops being read (TCP pushes back on the client) until the application has taken
  the queue down to half.
- **The ``agentmem.transport`` ASGI extension**: the protocol object itself, whose
  ``send_frames`` writes several text or binary messages at once without building an ASGI
  message (and a ``str``) per frame, and whose ``on_message`` hook takes received messages
  in ``data_received`` (see ``OnMessage``). Applications served by other servers simply do
  not see the extension and use plain ASGI sends and receives.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable, Sequence
from typing import Any, TypeAlias, cast

from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import State

EXTENSION = "agentmem.transport"
READ_AHEAD_MESSAGES = 64
READ_AHEAD_BYTES = 1 << 20

OnMessage: TypeAlias = Callable[[str | bytes], bool]
"""An application's hook for received messages (text as ``str``, binary as ``bytes``),
called in ``data_received`` while no message waits in the ASGI receive queue. True: the
hook handled the message; False: it goes to the queue as usual, for ``receive``. A hook
that takes messages this way must not block, and must keep their order itself: it refuses
(False) while it is still handling an earlier one."""

_TEXT = 0x81  # FIN + text opcode
_BINARY = 0x82  # FIN + binary opcode
_MEDIUM = struct.Struct("!BBH")
_LARGE = struct.Struct("!BBQ")


def frame_header(first: int, size: int) -> bytes:
    """The header of an unmasked, unfragmented server frame carrying ``size`` bytes."""
    if size < 126:
        return bytes((first, size))
    if size < 65_536:
        return _MEDIUM.pack(first, 126, size)
    return _LARGE.pack(first, 127, size)


def _framed(frames: Sequence[bytes], binary: bool) -> list[bytes]:
    """Each frame behind its header, as whole text (or binary) messages."""
    first = _BINARY if binary else _TEXT
    chunks: list[bytes] = []
    for frame in frames:
        chunks.append(frame_header(first, len(frame)))
        chunks.append(frame)
    return chunks


class _CoalescingTransport:
    """Wraps the socket transport: ``write`` gathers, the loop's next pass writes once."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self.inner = transport
        self._loop = loop
        self._pending: list[bytes] = []
        self._scheduled = False

    def write(self, data: bytes) -> None:
        if not data:
            return
        self._pending.append(data)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.flush)

    def writelines(self, chunks: Sequence[bytes]) -> None:
        if not chunks:
            return
        self._pending.extend(chunks)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.flush)

    @property
    def pending_bytes(self) -> int:
        """Bytes written during this pass of the loop, not yet handed to the socket
        (counted when asked: only a delivery that may skip its send queue asks)."""
        return sum(map(len, self._pending))

    def write_now(self, data: bytes) -> None:
        """Hand ``data`` to the socket at once when nothing written earlier in this pass
        waits (so a fan-out pass reaches its first peers while it goes on); otherwise
        after what waits, as ``write``."""
        if self._pending:
            self._pending.append(data)
        else:
            self.inner.write(data)

    def flush(self) -> None:
        self._scheduled = False
        pending = self._pending
        if not pending:
            return
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        pending.clear()
        if not self.inner.is_closing():
            self.inner.write(data)

    def close(self) -> None:
        self.flush()
        self.inner.close()

    def abort(self) -> None:
        self._pending.clear()
        self.inner.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class GatewayWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol, tuned for many small messages (see module)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._queued_bytes = 0
        self.on_message: OnMessage | None = None

    # -- socket ---------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.transport = cast(asyncio.Transport, _CoalescingTransport(self.transport, self.loop))

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:
            scope["extensions"][EXTENSION] = self

    # -- receiving ------------------------------------------------------------------------------

    def send_receive_event_to_app(self) -> None:
        data = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)
        self.frames = []
        if self.close_sent:
            return
        hook = self.on_message
        if self.curr_msg_data_type == "text":
            try:
                text = data.decode()
            except UnicodeDecodeError:
                self.logger.info("Invalid UTF-8 in a text frame; closing with 1007.")
                self.conn.send_close(1007)
                self.handle_parser_exception()
                return
            # Taken at once only behind nothing: a queued message comes first.
            if hook is not None and not self.queue.qsize() and hook(text):
                return
            self.queue.put_nowait({"type": "websocket.receive", "text": text})
        else:
            if hook is not None and not self.queue.qsize() and hook(data):
                return
            self.queue.put_nowait({"type": "websocket.receive", "bytes": data})
        self._queued_bytes += len(data)
        if not self.read_paused and (
            self.queue.qsize() >= READ_AHEAD_MESSAGES or self._queued_bytes >= READ_AHEAD_BYTES
        ):
            self.read_paused = True
            self.transport.pause_reading()

    async def receive(self) -> Any:
        message = cast(dict[str, Any], await self.queue.get())
        data: str | bytes | None = message.get("text") or message.get("bytes")
        if data:
            self._queued_bytes -= len(data)
        if (
            self.read_paused
            and self.queue.qsize() <= READ_AHEAD_MESSAGES // 2
            and self._queued_bytes <= READ_AHEAD_BYTES // 2
        ):
            self.read_paused = False
            self.transport.resume_reading()
        return message

    # -- sending --------------------------------------------------------------------------------

    def send_now(self, frames: Sequence[bytes], binary: bool, limit: int) -> bool:
        """Write ``frames`` as whole messages now if the connection takes them without
        waiting: open, not pushing back, no extension transforming frames, and at most
        ``limit`` bytes with this pass's writes still waiting for the socket. Returns False,
        having written nothing, otherwise; ``send_frames`` is then the way.
        """
        transport = cast(_CoalescingTransport, self.transport)
        if (
            sum(map(len, frames)) + transport.pending_bytes > limit
            or self.disconnected
            or self.close_sent
            or not self.writable.is_set()
            or self.conn.state is not State.OPEN
            or self.conn.extensions
            or transport.inner.is_closing()
        ):
            return False
        transport.write_now(b"".join(_framed(frames, binary)))
        return True

    def send_frames(self, frames: Sequence[bytes], binary: bool) -> None:
        """Write ``frames`` as whole text (or binary) messages, in order.

        Raises ``ClientDisconnected`` (an ``OSError``) once the connection is closing. The
        caller waits on ``writable`` first, as an ASGI send would, so a peer that stops
        reading stops the caller instead of growing the socket's buffer.
        """
        if (
            self.disconnected
            or self.close_sent
            or self.conn.state is not State.OPEN
            or self.transport.is_closing()
        ):
            raise ClientDisconnected()
        if self.conn.extensions:
            # A negotiated extension (compression) transforms frames: let the library do it.
            for frame in frames:
                if binary:
                    self.conn.send_binary(frame)
                else:
                    self.conn.send_text(frame)
            self.transport.writelines(self.conn.data_to_send())
            return
        self.transport.writelines(_framed(frames, binary))
