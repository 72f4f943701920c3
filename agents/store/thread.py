"""``SQLiteThread``: one ``sqlite3`` connection owned by one thread, called from asyncio.

SQLite releases the GIL while it works, so the event loop runs Python while a statement
runs. Each ``call`` is one hop to the thread and back; callers batch what they can into
one call (a function of the connection) rather than sending statement after statement,
because the hop, not the statement, dominates small writes.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

_Job = tuple[asyncio.Future[Any], Callable[..., Any], tuple[Any, ...]] | None


class SQLiteThread:
    """A connection to ``path`` (``isolation_level=None``: transactions are explicit)
    and the thread that uses it. ``call(fn, *args)`` runs ``fn(connection, *args)``."""

    def __init__(self, path: Path, pragmas: Sequence[str], *, name: str) -> None:
        self.path = path
        self.pragmas = tuple(pragmas)
        self.name = name
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._db: sqlite3.Connection | None = None

    async def open(self) -> None:
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name=self.name, daemon=True
        )
        self._thread.start()
        await ready

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        for pragma in self.pragmas:
            db.execute(pragma)
        return db

    def _run(self, ready: asyncio.Future[None]) -> None:
        loop = ready.get_loop()
        try:
            self._db = self._connect()
        except BaseException as exc:
            loop.call_soon_threadsafe(_settle, ready, None, exc)
            return
        loop.call_soon_threadsafe(_settle, ready, None, None)
        db = self._db
        while True:
            job = self._jobs.get()
            if job is None:
                db.close()
                return
            future, fn, args = job
            try:
                result = fn(db, *args)
            except BaseException as exc:
                future.get_loop().call_soon_threadsafe(_settle, future, None, exc)
            else:
                future.get_loop().call_soon_threadsafe(_settle, future, result, None)

    def call(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Run ``fn(connection, *args)`` in the thread; the future has its result."""
        if self._thread is None:
            raise RuntimeError(f"the connection to {self.path} is not open; call open() first")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._jobs.put((future, fn, args))
        return future

    async def close(self) -> None:
        """Finish the queued calls, close the connection, end the thread."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._jobs.put(None)
        await asyncio.to_thread(thread.join)


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
