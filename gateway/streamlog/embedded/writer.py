"""The gateway's writing connection, owned by one thread; each call is one transaction.

It creates topics, enforces retention and saves consumer offsets; group commits run here
too when the log is told to commit in a thread (else they run in the commit process). A
whole group commit runs as one call in the writer thread. Issuing its statements one by
one from the event loop (as an asyncio SQLite bridge does) costs a thread hand-off per
statement, and each hand-off waits for the GIL while the loop is busy: under load that,
not SQLite, set the pace. Multi-row statements keep the hand-offs inside a commit few too.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Literal, TypeVar

from gateway.streamlog.embedded.schema import connect_writer

T = TypeVar("T")


class Writer:
    def __init__(self, path: Path, durability: Literal["process", "power"]) -> None:
        self._path = path
        self._durability = durability
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="log-writer")
        self._db: sqlite3.Connection | None = None

    async def open(self) -> None:
        await self.call(self._connect)

    def _connect(self, _: sqlite3.Connection | None = None) -> None:
        self._db = connect_writer(self._path, self._durability)

    async def call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` in the writer thread."""
        return await self.submit(fn)

    def submit(self, fn: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        """Hand ``fn(connection)`` to the writer thread now; its future has the result."""
        return asyncio.get_running_loop().run_in_executor(self._executor, self._run, fn)

    def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._db is None:
            # Only _connect runs before the connection exists.
            return fn(None)  # type: ignore[arg-type]
        return fn(self._db)

    async def transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` inside BEGIN IMMEDIATE ... COMMIT (ROLLBACK when it raises)."""
        return await self.call(lambda db: in_transaction(db, fn))

    async def close(self) -> None:
        def shut(db: sqlite3.Connection) -> None:
            if db is not None:
                db.close()
            self._db = None

        await self.call(shut)
        self._executor.shutdown(wait=True)


def in_transaction(db: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    db.execute("BEGIN IMMEDIATE")
    try:
        result = fn(db)
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    return result
