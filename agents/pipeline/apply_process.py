"""The apply process: the agents' transactions in a child process.

In one process the agents' work (their Python and their SQLite statements, in the store's
writer thread) and the event loop's (reading the log, classifying, dispatching, publishing
the memory updates) take turns on one GIL, and a statement that released it waits to get
it back; together they never use much more than one core. Here the agent batches run in
a child with its own interpreter and its own write connection to the memory database:
the pipeline spends one pipe write and one read per batch.

The parent still serializes every write transaction (``MemoryStore.run_elsewhere`` holds
the store's transaction lock while the child works), so the database sees one writer at a
time, history ids still grow in commit order, and the writes queued on the store
(``MemoryStore.later``: the dispatched batches' offsets, processor state, deferred and
rejected items) and the publisher's position commit in the child's transaction, before
and after the batch exactly as they would in the writer thread.

Wire format on the child's stdin and stdout: frames of a 4-byte big-endian length and a
pickle. The first request is ``(path, durability, config)``, answered ``("ready",)``
once the connection is open. Then each request is an ``ApplyRequest`` and its answer
``("ok", applied, outbox_added)``, ``("agent", message)`` (the agent raised: the batch
was rolled back) or ``("error", message)`` (the database did: rolled back too).

The child runs ``main`` of this module. Lifetime: it ends when its stdin closes, which
happens when the pipeline stops or the parent dies, even by ``kill -9``; it ignores
SIGINT and SIGTERM, which are the parent's to handle. It inherits the descriptor of the
data directory's lock, so a pipeline started after a ``kill -9`` waits for the old child
to finish the batch it was committing (``runner.ORPHAN_WAIT_S``). If the child dies, the
batch in flight fails (SQLite rolls back whatever it had not committed) and the pipeline
stops with the error, as on a database error; its next start resumes from the committed
offsets.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import signal
import sqlite3
import struct
import sys
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO, Literal, NamedTuple

import msgspec
import structlog

from agents.config import MemoryType, PipelineConfig
from agents.errors import PipelineError
from agents.pipeline.lanes import AgentFailed, Item, apply_items
from agents.store.schema import CACHE_KIB, pragmas
from agents.store.sqlite import WRITER_AUTOCHECKPOINT_PAGES, Call, MemoryStore, Writes
from agents.work import MemoryWork, Source, work_encoder

logger = structlog.get_logger(__name__)

_length = struct.Struct(">I")
CLOSE_TIMEOUT_S = 10.0
"""How long a stopping pipeline waits for the child to finish and exit."""


_items_decoder = msgspec.msgpack.Decoder(list[tuple[MemoryWork, int | None]])


class ApplyRequest(NamedTuple):
    memory_type: MemoryType
    items: bytes
    """The batch's ``Item`` list as MessagePack (much cheaper than pickling structs)."""
    maybe: list[Source]
    """The items' sources that may have been applied before this run (checked first)."""
    now: int
    before: list[Call]
    with_batch: list[Call]
    """Writes that commit only if the batch does (the offsets it completes)."""
    after: list[Call]
    prepared: Any
    """What the agent's ``prepare`` made of the items in the parent (``adopt``)."""


class ApplyOutcome(NamedTuple):
    applied: int
    """Items applied (not found in ``applied`` already)."""
    failure: str | None
    """Why the agent failed: its writes were rolled back, the rest was committed."""


class ApplyProcessError(PipelineError):
    """The apply process could not be started, refused a batch, or ended."""


class ApplyProcess:
    """The parent's side: starts the child and hands it batches, in order. Several may
    be on their way (``submit`` does not wait): the child works on the next one as soon
    as it has answered the previous, without waiting for the event loop to read that
    answer."""

    def __init__(
        self,
        path: Path,
        durability: Literal["process", "power"],
        config: PipelineConfig,
        *,
        inherit_fd: int | None = None,
    ) -> None:
        self._path = path
        self._durability = durability
        self._config = config
        self._inherit_fd = inherit_fd
        self._process: asyncio.subprocess.Process | None = None
        self._replies: deque[asyncio.Future[tuple[Any, ...]]] = deque()
        self._reader: asyncio.Task[None] | None = None
        self._broken: str | None = None

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    async def start(self) -> None:
        """Start the child and wait until its connection to the database is open."""
        fds = () if self._inherit_fd is None else (self._inherit_fd,)
        self._process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            f"from {__name__} import main; main()",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            pass_fds=fds,
            limit=1 << 20,
        )
        self._reader = asyncio.create_task(self._read_replies(), name="apply-process-replies")
        try:
            reply = await self._send((self._path, self._durability, self._config))
        except ApplyProcessError:
            await self.close()
            raise
        if reply != ("ready",):
            await self.close()
            raise ApplyProcessError(f"the apply process could not start: {reply[-1]}")
        logger.info("apply_process_started", pid=self._process.pid)

    def submit(
        self,
        memory_type: MemoryType,
        items: list[Item],
        maybe: list[Source],
        now: int,
        before: list[Call],
        with_batch: list[Call],
        after: list[Call],
        prepared: Any = None,
    ) -> asyncio.Future[tuple[ApplyOutcome, int]]:
        """Send a batch: the child runs ``before``, the batch (``lanes.apply_items``) and
        ``with_batch``, then ``after``, in one transaction; if the agent fails, only the
        batch and ``with_batch`` are rolled back. The future has ``(ApplyOutcome, outbox
        rows added)`` once it committed, or ``ApplyProcessError`` (a database error, or
        the child is gone)."""
        request = ApplyRequest(
            memory_type, work_encoder.encode(items), maybe, now, before, with_batch, after, prepared
        )
        outcome: asyncio.Future[tuple[ApplyOutcome, int]] = (
            asyncio.get_running_loop().create_future()
        )

        def settle(reply: asyncio.Future[tuple[Any, ...]]) -> None:
            if outcome.done():
                return
            if reply.exception() is not None:
                outcome.set_exception(reply.exception())  # type: ignore[arg-type]
                return
            answer = reply.result()
            if answer[0] == "ok":
                outcome.set_result((ApplyOutcome(answer[1], answer[3]), answer[2]))
            else:
                outcome.set_exception(
                    ApplyProcessError(f"the memory database refused an agent batch: {answer[1]}")
                )

        self._send_nowait(request).add_done_callback(settle)
        return outcome

    async def _send(self, request: object) -> tuple[Any, ...]:
        return await self._send_nowait(request)

    def _send_nowait(self, request: object) -> asyncio.Future[tuple[Any, ...]]:
        reply: asyncio.Future[tuple[Any, ...]] = asyncio.get_running_loop().create_future()
        process = self._process
        if self._broken is not None:
            reply.set_exception(ApplyProcessError(self._broken))
            return reply
        if process is None or process.stdin is None:
            reply.set_exception(ApplyProcessError("the apply process is not running"))
            return reply
        body = pickle.dumps(request, protocol=pickle.HIGHEST_PROTOCOL)
        # Requests are few (one per agent at most) and the transport buffers them.
        process.stdin.write(_length.pack(len(body)) + body)
        self._replies.append(reply)
        return reply

    async def _read_replies(self) -> None:
        process = self._process
        assert process is not None and process.stdout is not None
        error: str
        try:
            while True:
                (size,) = _length.unpack(await process.stdout.readexactly(4))
                reply = pickle.loads(await process.stdout.readexactly(size))
                if self._replies:
                    waiter = self._replies.popleft()
                    if not waiter.done():
                        waiter.set_result(reply)
        except (OSError, asyncio.IncompleteReadError) as exc:
            code = await _exit_code(process)
            error = f"the apply process ended (exit code {code}): {exc!r}"
        except asyncio.CancelledError:
            error = "the apply process was closed"
        self._broken = error
        while self._replies:
            waiter = self._replies.popleft()
            if not waiter.done():
                waiter.set_exception(ApplyProcessError(error))

    async def close(self) -> None:
        """Close the child's stdin (it exits after the batches it has) and wait for it."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.stdin is not None:
            process.stdin.close()
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await process.wait()
        except TimeoutError:
            logger.warning("apply_process_killed", pid=process.pid)
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader


async def _exit_code(process: asyncio.subprocess.Process) -> int | None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(1.0):
            return await process.wait()
    return process.returncode


# -- the child ------------------------------------------------------------------------------


def _read(stream: BinaryIO) -> Any:
    header = stream.read(4)
    if len(header) < 4:
        return None
    (size,) = _length.unpack(header)
    body = stream.read(size)
    if len(body) < size:
        return None
    return pickle.loads(body)


def _write(stream: BinaryIO, reply: tuple[Any, ...]) -> None:
    body = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_length.pack(len(body)) + body)
    stream.flush()


def _run_calls(writes: Writes, calls: Sequence[Call]) -> None:
    for fn, args in calls:
        fn(writes, *args)


def serve(stdin: BinaryIO, stdout: BinaryIO) -> None:
    """The child's loop: one transaction per request until stdin closes."""
    first = _read(stdin)
    if first is None:
        return
    path, durability, config = first
    try:
        db = sqlite3.connect(path, isolation_level=None)
        for pragma in (
            *pragmas(durability, cache_kib=CACHE_KIB),
            f"PRAGMA wal_autocheckpoint={WRITER_AUTOCHECKPOINT_PAGES}",
        ):
            db.execute(pragma)
    except (sqlite3.Error, OSError) as exc:
        _write(stdout, ("error", f"cannot open {path}: {exc}"))
        return
    # Imported here: the parent's module need not import every agent.
    from agents.memory.roster import build_agents

    store = MemoryStore(path, durability=durability)  # never opened: agents need no more
    agents = build_agents(config, store, cache_facts=True).by_type()
    _write(stdout, ("ready",))
    while (request := _read(stdin)) is not None:
        _write(stdout, _transaction(db, agents, request))
    db.close()


def _transaction(
    db: sqlite3.Connection, agents: dict[MemoryType, Any], request: ApplyRequest
) -> tuple[Any, ...]:
    writes = Writes(db)
    agent = agents[request.memory_type]
    failure: str | None = None
    applied = 0
    try:
        agent.adopt(request.prepared)
        db.execute("BEGIN IMMEDIATE")
        _run_calls(writes, request.before)
        # The queued writes commit even when the agent fails: batches sent after this one
        # are committed after it, and their queued writes come after these.
        added = writes.outbox_added
        db.execute("SAVEPOINT batch")
        try:
            items = _items_decoder.decode(request.items)
            applied = apply_items(writes, agent, items, request.maybe, request.now)
            _run_calls(writes, request.with_batch)
        except AgentFailed as failed:
            db.execute("ROLLBACK TO batch")
            writes.outbox_added = added
            for each in agents.values():
                each.forget()
            failure = str(failed)
        db.execute("RELEASE batch")
        _run_calls(writes, request.after)
        db.execute("COMMIT")
    except Exception as exc:  # the database or a queued write: the parent stops
        _rollback(db, agents)
        return ("error", f"{type(exc).__name__}: {exc}")
    return ("ok", applied, writes.outbox_added, failure)


def _rollback(db: sqlite3.Connection, agents: dict[MemoryType, Any]) -> None:
    for agent in agents.values():
        agent.forget()
    with contextlib.suppress(sqlite3.Error):
        if db.in_transaction:
            db.execute("ROLLBACK")


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    # Nothing else may write to the reply stream: stray prints go to stderr.
    sys.stdout = sys.stderr
    try:
        serve(stdin, stdout)
    except BrokenPipeError:
        pass  # the parent is gone
    os._exit(0)
