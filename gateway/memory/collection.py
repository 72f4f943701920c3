"""A vector collection's identity: its name, the model and dimension recorded with it, the
stable point id of a memory, and the errors of opening one (every backend shares them)."""

from __future__ import annotations

import hashlib
import re
import uuid
from typing import Any


class VectorIndexMismatch(RuntimeError):
    """The stored collection was made with another embedding model or dimension."""


class VectorIndexUnavailable(RuntimeError):
    """The index cannot be opened (a missing package, a directory in use, a server down)."""


def collection_name(model: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", model.lower()).strip("-")
    return f"memories-{slug}"


def point_uuid(memory_id: str) -> str:
    """Qdrant ids are integers or UUIDs: a stable UUID per memory id."""
    return str(uuid.UUID(bytes=hashlib.blake2b(memory_id.encode(), digest_size=16).digest()))


def collection_metadata(model: str, dim: int) -> dict[str, Any]:
    """What a collection records about its vectors when it is created."""
    return {"embedding_model": model, "dim": dim, "distance": "cosine"}


def check_collection(
    collection: str, where: str, model: Any, dim: Any, want_model: str, want_dim: int
) -> None:
    """Refuse a collection whose recorded model or dimension is not the embedder's."""
    if model != want_model or dim != want_dim:
        raise VectorIndexMismatch(
            f"vector collection {collection!r} in {where} holds {model or 'unknown'!s} vectors "
            f"of dimension {dim}, but the configured embedder is {want_model} ({want_dim}). "
            "Use the embedder it was built with, or delete the collection to rebuild it from "
            "the memory database (it is re-indexed on the next start)."
        )
