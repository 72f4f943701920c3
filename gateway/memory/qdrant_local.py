"""Qdrant local mode in a process of its own: the durable copy of the vector points.

qdrant-client's local mode is plain Python: an upsert validates every point with pydantic
and pickles it into SQLite, about 260 µs of CPU a point on the benchmark machine, with the
GIL held. Inside the gateway that stalls the event loop, the sessions and the memory
pipeline for tens of milliseconds per indexing batch. So a child process owns the local
directory (local mode locks it: one process at a time) and does the writes; the gateway
keeps the queries' copy of the vectors (``TenantMatrices``) and sends each batch over a pipe.

Wire format, as the commit process's: frames of a 4-byte big-endian length and a
MessagePack body, requests on the child's stdin, replies on its stdout, in order.

- Once started, the child opens the collection (creating it with the model and dimension
  recorded, or checking them) and sends ``["created", bool]``, then, unless started with
  ``--no-load``, the stored points as ``["points", payloads, vectors]`` chunks (vectors:
  float32 rows, row-major bytes), then ``["loaded", count]``.
- Requests ``["upsert", memory_ids, vectors, payloads]``, ``["delete", memory_ids]`` and
  ``["count"]`` are answered by ``["ok", value]`` once the change is on disk.
- A failure is answered by ``["error", kind, message]``, ``kind`` being ``mismatch`` or
  ``unavailable``.

Lifetime: the child ends when its stdin closes (the index is closed, or the gateway died,
even by ``kill -9``); it ignores SIGINT and SIGTERM, so a Ctrl-C reaches the gateway alone,
which closes the index when it is done. If the child dies, the call in flight fails with
``VectorIndexUnavailable`` (the indexer retries the batch: nothing is skipped) and the next
call starts a new child, with ``--no-load``: the gateway's copy of the points is intact.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import struct
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import msgspec
import numpy as np
import numpy.typing as npt
import structlog

from gateway.memory.collection import (
    VectorIndexMismatch,
    VectorIndexUnavailable,
    check_collection,
    collection_metadata,
    point_uuid,
)

logger = structlog.get_logger(__name__)

_length = struct.Struct(">I")
_encoder = msgspec.msgpack.Encoder()

LOAD_CHUNK = 10_000
"""Points per ``points`` frame (and per ``scroll`` when the arrays are not laid out as
expected) when the stored collection is loaded at open."""

CLOSE_TIMEOUT_S = 10.0
"""How long closing waits for the child to finish its write and exit."""

PointsSink = Callable[[list[Any], npt.NDArray[np.float32]], None]
"""Receives the stored points at open: their payloads and their vectors."""


class LocalQdrant:
    """The gateway's side of the child. Calls block: make them from a worker thread, one
    at a time (``QdrantIndex`` holds a lock)."""

    def __init__(self, path: Path, collection: str, model: str, dim: int) -> None:
        self.path = path
        self.collection = collection
        self.model = model
        self.dim = dim
        self.restarts = 0
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def open(self, sink: PointsSink) -> bool:
        """Start the child; the stored points go to ``sink``. True when the collection was
        created now (empty)."""
        return self._start(sink)

    def upsert(
        self,
        memory_ids: Sequence[str],
        vectors: npt.NDArray[np.float32],
        payloads: Sequence[dict[str, Any]],
    ) -> None:
        rows = np.ascontiguousarray(vectors, dtype=np.float32)
        self._call(["upsert", list(memory_ids), rows.tobytes(), list(payloads)])

    def delete(self, memory_ids: Sequence[str]) -> None:
        self._call(["delete", list(memory_ids)])

    def count(self) -> int:
        return int(self._call(["count"]))

    def close(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        _close_pipe(process.stdin)
        try:
            process.wait(CLOSE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            logger.error("qdrant_local_process_kill", pid=process.pid)
            process.kill()
            process.wait()
        _close_pipe(process.stdout)

    # -- internals ---------------------------------------------------------------------------

    def _start(self, sink: PointsSink | None) -> bool:
        command = [
            sys.executable, "-m", __name__,
            str(self.path), self.collection, self.model, str(self.dim),
        ]  # fmt: skip
        if sink is None:
            command.append("--no-load")
        process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self._process = process
        try:
            created = bool(self._expect(process, "created"))
            while True:
                message = self._receive(process)
                if message[0] == "loaded":
                    break
                _, payloads, data = message
                if sink is not None:
                    sink(payloads, np.frombuffer(data, dtype=np.float32).reshape(-1, self.dim))
        except BaseException:
            self.close()
            raise
        logger.info("qdrant_local_process_started", pid=process.pid, path=str(self.path))
        return created

    def _call(self, request: list[Any]) -> Any:
        process = self._process
        if process is None or process.poll() is not None:
            if process is not None:
                self.close()
                self.restarts += 1
            self._start(None)
            process = self._process
            assert process is not None
        try:
            _write_frame(process.stdin, request)
        except (BrokenPipeError, ValueError):
            self._lost(process)
        return self._expect(process, "ok")

    def _expect(self, process: subprocess.Popen[bytes], kind: str) -> Any:
        message = self._receive(process)
        if message[0] != kind:
            raise VectorIndexUnavailable(
                f"the Qdrant local process answered {message[0]!r} instead of {kind!r}"
            )
        return message[1]

    def _receive(self, process: subprocess.Popen[bytes]) -> list[Any]:
        assert process.stdout is not None
        head = process.stdout.read(4)
        if len(head) < 4:
            self._lost(process)
        (size,) = _length.unpack(head)
        body = process.stdout.read(size)
        if len(body) < size:
            self._lost(process)
        message: list[Any] = msgspec.msgpack.decode(body)
        if message[0] == "error":
            _, kind, text = message
            raise (VectorIndexMismatch if kind == "mismatch" else VectorIndexUnavailable)(text)
        return message

    def _lost(self, process: subprocess.Popen[bytes]) -> None:
        try:
            code = process.wait(CLOSE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            code = process.wait()
        raise VectorIndexUnavailable(
            f"the Qdrant local process for {self.path} exited (status {code}); the write "
            "is retried and the next one starts a new process"
        )


def _close_pipe(pipe: IO[bytes] | None) -> None:
    if pipe is not None:
        try:
            pipe.close()
        except OSError:
            pass


def _write_frame(out: IO[bytes] | None, message: object) -> None:
    assert out is not None
    body = _encoder.encode(message)
    out.write(_length.pack(len(body)) + body)
    out.flush()


# -- the child -----------------------------------------------------------------------------------


def _open_client(path: Path, collection: str, model: str, dim: int) -> tuple[Any, bool]:
    try:
        from qdrant_client import QdrantClient, models
    except ImportError as exc:
        raise VectorIndexUnavailable(
            f"the qdrant vector index needs qdrant-client ({exc}): pip install qdrant-client"
        ) from None
    try:
        path.mkdir(parents=True, exist_ok=True)
        client = QdrantClient(path=str(path))
    except RuntimeError as exc:
        raise VectorIndexUnavailable(
            f"cannot open the Qdrant directory {path}: {exc}. Another process uses it; give "
            "each gateway its own data directory or use a Qdrant server."
        ) from None
    try:
        if client.collection_exists(collection):
            config = client.get_collection(collection).config
            meta = config.metadata or {}
            size = getattr(config.params.vectors, "size", None)
            check_collection(collection, str(path), meta.get("embedding_model"), size, model, dim)
            return client, False
        client.create_collection(
            collection,
            vectors_config=models.VectorParams(size=dim, distance=models.Distance.COSINE),
            metadata=collection_metadata(model, dim),
        )
        return client, True
    except VectorIndexMismatch:
        client.close()
        raise
    except Exception as exc:
        client.close()
        raise VectorIndexUnavailable(f"Qdrant local mode at {path} failed: {exc}") from exc


def local_storage(client: Any, collection: str) -> sqlite3.Connection | None:
    """The SQLite connection local mode writes ``collection``'s points with, made fast.

    Local mode commits every point on its own in SQLite's default rollback-journal mode
    with full syncs: two fsyncs per point (~1 ms each on the benchmark machine, so
    100,000 points take minutes). In WAL mode with ``synchronous=NORMAL`` a commit is a
    write to the log, and each batch ends with a checkpoint, which syncs the log and the
    file: the batch is on disk before it is answered. qdrant-client has no setting for
    this, so the connection is reached through its local-mode objects; when another
    version lays them out differently, points are written at the slower default and
    nothing else changes."""
    local = getattr(client, "_client", None)
    found = getattr(local, "collections", {}).get(collection)
    storage = getattr(getattr(found, "storage", None), "storage", None)
    if not isinstance(storage, sqlite3.Connection):
        logger.warning(
            "qdrant_local_storage_not_found",
            collection=collection,
            effect="points are written with a sync per point (slow beyond ~10,000)",
        )
        return None
    storage.execute("PRAGMA journal_mode=WAL")
    storage.execute("PRAGMA synchronous=NORMAL")
    return storage


def local_points(
    client: Any, collection: str, dim: int
) -> tuple[list[Any], npt.NDArray[np.float32]] | None:
    """The payloads and vectors of a local-mode collection's live points, from the arrays
    qdrant-client keeps in memory; ``None`` when they are not laid out as expected."""
    found = getattr(getattr(client, "_client", None), "collections", {}).get(collection)
    vectors = getattr(found, "vectors", {}).get("")
    payloads = getattr(found, "payload", None)
    deleted = getattr(found, "deleted", None)
    if not (
        isinstance(vectors, np.ndarray)
        and vectors.ndim == 2
        and vectors.shape[1] == dim
        and isinstance(payloads, list)
        and isinstance(deleted, np.ndarray)
        and len(deleted) == len(payloads) <= len(vectors)
    ):
        return None
    live = np.flatnonzero(~deleted.astype(bool))
    return [payloads[i] for i in live], vectors[live].astype(np.float32)


def scroll_points(
    client: Any, collection: str
) -> Iterator[tuple[list[Any], npt.NDArray[np.float32]]]:
    """The same points read through ``scroll`` (about twice the time of ``local_points``)."""
    offset: Any = None
    while True:
        records, offset = client.scroll(
            collection, limit=LOAD_CHUNK, offset=offset, with_payload=True, with_vectors=True
        )
        if records:
            vectors = np.asarray([r.vector for r in records], dtype=np.float32)
            yield [r.payload for r in records], vectors
        if offset is None:
            return


def stored_points(
    client: Any, collection: str, dim: int
) -> Iterator[tuple[list[Any], npt.NDArray[np.float32]]]:
    """Every live point, in chunks of at most ``LOAD_CHUNK``."""
    loaded = local_points(client, collection, dim)
    if loaded is None:
        yield from scroll_points(client, collection)
        return
    payloads, vectors = loaded
    for start in range(0, len(payloads), LOAD_CHUNK):
        yield payloads[start : start + LOAD_CHUNK], vectors[start : start + LOAD_CHUNK]


def main(argv: list[str]) -> int:
    """The child: open the collection, send its points, then answer writes until stdin
    closes."""
    path, collection, model, dim_text, *flags = argv
    dim = int(dim_text)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # Local mode warns above 20,000 points because its own search walks every point in
    # Python; the gateway answers queries from its matrices, so the warning misleads.
    warnings.filterwarnings("ignore", message="Local mode is not recommended", category=UserWarning)
    # Replies get a private copy of stdout; anything printed by mistake goes to stderr.
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    requests = sys.stdin.buffer
    try:
        client, created = _open_client(Path(path), collection, model, dim)
    except VectorIndexMismatch as exc:
        _write_frame(replies, ["error", "mismatch", str(exc)])
        return 1
    except VectorIndexUnavailable as exc:
        _write_frame(replies, ["error", "unavailable", str(exc)])
        return 1
    try:
        from qdrant_client import models

        storage = local_storage(client, collection)
        _write_frame(replies, ["created", created])
        count = 0
        if not created and "--no-load" not in flags:
            for payloads, vectors in stored_points(client, collection, dim):
                _write_frame(replies, ["points", payloads, vectors.tobytes()])
                count += len(payloads)
        _write_frame(replies, ["loaded", count])
        while True:
            head = requests.read(4)
            if len(head) < 4:
                return 0
            size = _length.unpack(head)[0]
            body = requests.read(size)
            if len(body) < size:
                return 0
            request = msgspec.msgpack.decode(body)
            try:
                result: Any = None
                if request[0] == "upsert":
                    _, ids, data, payloads = request
                    rows = np.frombuffer(data, dtype=np.float32).reshape(-1, dim)
                    batch = models.Batch(
                        ids=[point_uuid(m) for m in ids], vectors=rows.tolist(), payloads=payloads
                    )
                    client.upsert(collection, batch, wait=True)
                elif request[0] == "delete":
                    selector = models.PointIdsList(points=[point_uuid(m) for m in request[1]])
                    client.delete(collection, selector, wait=True)
                else:
                    result = int(client.count(collection, exact=True).count)
                if storage is not None and request[0] != "count":
                    storage.execute("PRAGMA wal_checkpoint(PASSIVE)")
            except Exception as exc:
                _write_frame(replies, ["error", "unavailable", f"Qdrant local mode failed: {exc}"])
                continue
            _write_frame(replies, ["ok", result])
    except BrokenPipeError:
        return 0
    finally:
        client.close()


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
