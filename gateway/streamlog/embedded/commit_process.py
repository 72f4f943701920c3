"""The commit process: the log's record-writing connection in a child process.

A group commit done in a thread of the gateway competes for the gateway's GIL: each SQLite
statement releases it and must take it back from an event loop that is busy with frames,
which under load costs milliseconds per commit and caps the rate. The child has its own
interpreter, so its statements never wait for the gateway; the gateway spends one pipe
write and one read per commit.

Wire format on the child's stdin and stdout: frames of a 4-byte big-endian length and a
MessagePack body. Requests are one commit's ``Work``; each is answered, in order, by
``[true, positions]`` (a ``Produced`` map per record, a list per call) or
``[false, message]``. The child first sends ``[true, []]`` once its connection is open.

Lifetime: the child ends when its stdin closes, which happens when the log closes or the
gateway dies, even by ``kill -9``; it ignores SIGINT and SIGTERM so that a terminal's
Ctrl-C or a service manager's stop reaches the gateway alone, which still has publishes to
commit while it drains. If the child dies, the commits in flight fail with ``Unavailable``
(they may or may not be written, as with any crash: a re-sent event with the same id is
written once) and the next commit starts a new child.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import struct
import subprocess
import sys
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, cast

import msgspec
import structlog

from gateway import heap
from gateway.errors import Unavailable
from gateway.streamlog.embedded import transaction
from gateway.streamlog.embedded.committer import Outcome
from gateway.streamlog.embedded.schema import connect_writer
from gateway.streamlog.embedded.transaction import Work
from gateway.streamlog.interface import Produced

logger = structlog.get_logger(__name__)

_length = struct.Struct(">I")
_encoder = msgspec.msgpack.Encoder()
# Positions travel as ``Produced`` maps: decoding builds the structs in one C call.
_reply_decoder = msgspec.msgpack.Decoder(tuple[bool, list[list[Produced]] | str])
_work_decoder = msgspec.msgpack.Decoder(
    list[tuple[int, list[tuple[int, bytes | None, bytes, list[tuple[str, bytes]], str | None]]]]
)
CLOSE_TIMEOUT_S = 10.0
"""How long a closing log waits for the child to finish its commit and exit."""


class CommitProcess:
    """The parent's side: starts the child, hands it commits, restarts it if it dies."""

    def __init__(self, path: Path, durability: Literal["process", "power"]) -> None:
        self._path = path
        self._durability = durability
        self._child: _Child | None = None
        self._starting: asyncio.Task[_Child] | None = None
        # Commits made while no child runs: each waits for the next one to start.
        self._awaiting_child: set[asyncio.Task[None]] = set()
        self._closed = False
        self.restarts = 0

    @property
    def pid(self) -> int | None:
        return None if self._child is None else self._child.pid

    async def start(self) -> None:
        """Start the child (if it is not running) and wait until its connection is open."""
        await self._running()

    async def _running(self) -> _Child:
        if self._closed:
            raise Unavailable("The stream log is closed; retry against a running gateway.")
        child = self._child
        if child is not None and child.alive:
            return child
        if self._starting is None:
            self._starting = asyncio.ensure_future(self._spawn())
        starting = self._starting
        try:
            return await asyncio.shield(starting)
        finally:
            if self._starting is starting and starting.done():
                self._starting = None

    async def _spawn(self) -> _Child:
        loop = asyncio.get_running_loop()
        transport, child = await loop.subprocess_exec(
            lambda: _Child(self),
            sys.executable,
            "-m",
            __name__,
            str(self._path),
            self._durability,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None,
        )
        try:
            await child.ready
        except Unavailable:
            transport.close()
            await child.exited
            raise
        if self._child is not None:
            self.restarts += 1
        self._child = child
        logger.info("commit_process_started", pid=child.pid)
        return child

    def commit(self, work: Work, done: Callable[[Outcome], None]) -> None:
        """Send one commit to the child; its outcome goes to ``done``."""
        child = self._child
        if child is None or not child.alive:
            task = asyncio.ensure_future(self._start_then_commit(work, done))
            self._awaiting_child.add(task)
            task.add_done_callback(self._awaiting_child.discard)
            return
        child.send(work, done)

    async def _start_then_commit(self, work: Work, done: Callable[[Outcome], None]) -> None:
        try:
            child = await self._running()
        except Exception as exc:
            done(exc)
            return
        child.send(work, done)

    async def close(self) -> None:
        """Let the child finish what it was sent, then end it."""
        self._closed = True
        if self._starting is not None:
            with contextlib.suppress(Exception):
                await self._starting
        if self._child is not None:
            await self._child.close()

    def died(self, child: _Child, code: int | None) -> None:
        if not self._closed:
            logger.error("commit_process_died", pid=child.pid, exit_code=code)


class _Child(asyncio.SubprocessProtocol):
    """One run of the child: its pipes, and the commits it has not answered yet."""

    def __init__(self, owner: CommitProcess) -> None:
        loop = asyncio.get_running_loop()
        self._owner = owner
        self._transport: asyncio.SubprocessTransport | None = None
        self._stdin: asyncio.WriteTransport | None = None
        self._buffer = bytearray()
        self._waiting: deque[Callable[[Outcome], None]] = deque()
        self.ready: asyncio.Future[None] = loop.create_future()
        # A child that dies before anyone awaits ``ready`` must not log a stray error.
        self.ready.add_done_callback(lambda f: f.cancelled() or f.exception())
        self.exited: asyncio.Future[int | None] = loop.create_future()
        self.alive = False
        self.pid = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not derive from asyncio's classes; they have their methods.
        self._transport = cast(asyncio.SubprocessTransport, transport)
        self.pid = self._transport.get_pid()
        self._stdin = cast(asyncio.WriteTransport, self._transport.get_pipe_transport(0))

    def send(self, work: Work, done: Callable[[Outcome], None]) -> None:
        assert self._stdin is not None
        # The body is encoded behind room for its length: no copy to prepend it.
        frame = bytearray(4)
        _encoder.encode_into(work, frame, 4)
        _length.pack_into(frame, 0, len(frame) - 4)
        self._stdin.write(frame)
        self._waiting.append(done)

    def pipe_data_received(self, fd: int, data: bytes | str) -> None:
        if fd != 1:
            return
        buffer = self._buffer
        buffer += data if isinstance(data, bytes) else data.encode()
        start = 0
        while len(buffer) - start >= 4:
            (size,) = _length.unpack_from(buffer, start)
            end = start + 4 + size
            if len(buffer) < end:
                break
            self._reply(_reply_decoder.decode(memoryview(buffer)[start + 4 : end]))
            start = end
        del buffer[:start]

    def _reply(self, reply: tuple[bool, list[list[Produced]] | str]) -> None:
        ok, payload = reply
        if not self.ready.done():
            if ok:
                self.alive = True
                self.ready.set_result(None)
            else:
                self.ready.set_exception(
                    Unavailable(f"The log's commit process could not open the log: {payload}")
                )
            return
        if not self._waiting:
            # Only a child out of step with this parent answers more than it was sent.
            logger.error("commit_process_unexpected_reply", pid=self.pid)
            return
        done = self._waiting.popleft()
        if isinstance(payload, str):
            done(Unavailable(f"The stream log could not commit: {payload}. Retry shortly."))
        else:
            done(payload)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if fd == 1:
            self._gone()

    def process_exited(self) -> None:
        # Replies still in the pipe are read before its end (``pipe_connection_lost``),
        # which fails what is left; until then nothing new is sent here.
        self.alive = False
        assert self._transport is not None
        code = self._transport.get_returncode()
        if not self.exited.done():
            self.exited.set_result(code)
        self._owner.died(self, code)

    def _gone(self) -> None:
        # Whatever the child was committing may or may not be written.
        self.alive = False
        if not self.ready.done():
            self.ready.set_exception(Unavailable("The log's commit process exited at start."))
        error = Unavailable(
            "The log's commit process exited during the commit; the records may or may not "
            "be written. Retry: an event re-sent with the same id is written once."
        )
        while self._waiting:
            self._waiting.popleft()(error)

    async def close(self) -> None:
        assert self._transport is not None
        if self._stdin is not None:
            self._stdin.close()
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await asyncio.shield(self.exited)
        except TimeoutError:
            logger.error("commit_process_kill", pid=self.pid)
            with contextlib.suppress(ProcessLookupError):
                self._transport.kill()
            await self.exited
        self._transport.close()


# -- the child ---------------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    """The child: answer commits read from stdin until it closes."""
    path, durability = argv
    if durability not in ("process", "power"):
        _write_frame(sys.stdout.buffer, [False, f"durability {durability!r}: not process or power"])
        return 2
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # Replies get a private copy of stdout; anything printed by mistake goes to stderr.
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    requests = sys.stdin.buffer
    try:
        db = connect_writer(Path(path), cast(Literal["process", "power"], durability))
        cursors = transaction.Cursors()
        cursors.reload(db)
    except sqlite3.Error as exc:
        _write_frame(replies, [False, str(exc)])
        return 1
    # Nothing the loop makes outlives its commit, and none of it is cyclic: the default
    # young-generation threshold collected several times per commit to find nothing.
    heap.freeze()
    _write_frame(replies, [True, []])
    try:
        while True:
            head = requests.read(4)
            if len(head) < 4:
                return 0
            size = _length.unpack(head)[0]
            body = requests.read(size)
            if len(body) < size:
                return 0
            work = _work_decoder.decode(body)
            try:
                results = transaction.commit(db, cursors, work)  # type: ignore[arg-type]
            except Exception as exc:
                _write_frame(replies, [False, str(exc)])
                continue
            _write_frame(replies, [True, results])
    except BrokenPipeError:
        return 0
    finally:
        db.close()


def _write_frame(out: Any, message: object) -> None:
    body = _encoder.encode(message)
    out.write(_length.pack(len(body)) + body)
    out.flush()


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
