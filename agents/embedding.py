"""The default text embedder: hashed character n-gram vectors compared by cosine.

It needs no model, no download and no native library: a text loses a short list of
English function words ("i", "my", "am", "the", ...), then becomes a sparse vector of its
character 3- and 4-grams and its words, each hashed (CRC-32, stable across processes and
Python versions, unlike ``hash()``) into ``2**20`` buckets and weighted by count, then
scaled to unit length. Function words are dropped because short first-person statements
share most of them: without that, "I like tea" and "I like coffee" look alike.

Two texts score high when they share spelling: re-wordings that keep most words ("I like
green tea" / "I really like green tea": 1.0), typos, case and punctuation. It knows
nothing of meaning: "I love cats" and "I adore felines" score 0, and a negation scores
high ("I like tea" / "I don't like tea": 0.74), so a stored fact may be superseded by its
own negation when the threshold is set low (the newer statement wins, the older one stays
in the history).
"""

from __future__ import annotations

import math
import re
import zlib

import msgspec

BUCKETS = 1 << 20
_WORDS = re.compile(r"[^\W_]+", re.UNICODE)
_SPACES = re.compile(r"\s+")
STOPWORDS = frozenset(
    (
        *("i", "me", "my", "mine", "myself", "am", "is", "are", "was", "were", "be", "been"),
        *("being", "a", "an", "the", "to", "of", "in", "on", "at", "and", "or", "for"),
        *("with", "really", "very", "so", "just", "that", "this", "it", "its"),
    )
)

SparseVector = dict[int, float]
"""Bucket -> weight, unit length (empty for a text with no letters or digits)."""


def normalize_text(text: str) -> str:
    """Lower case, one space between words, no surrounding punctuation: the form that is
    hashed for exact deduplication and embedded for near-duplicate detection."""
    return _SPACES.sub(" ", text.casefold()).strip(" \t\n.!?,;:")


class HashedNgramEmbedder:
    """Sparse character n-gram embeddings; deterministic and dependency free."""

    def __init__(self, ngram_sizes: tuple[int, ...] = (3, 4), word_weight: float = 1.0) -> None:
        if not ngram_sizes or min(ngram_sizes) < 1:
            raise ValueError("ngram_sizes must hold positive sizes, for example (3, 4)")
        self.ngram_sizes = ngram_sizes
        self.word_weight = word_weight

    def embed(self, text: str) -> SparseVector:
        words = [w for w in _WORDS.findall(normalize_text(text)) if w not in STOPWORDS]
        if not words:
            return {}
        padded = " " + " ".join(words) + " "
        # Buckets in the order their n-grams first appear; n-grams sharing a bucket add up.
        weights: dict[int, float] = {}
        weight = weights.get
        known = _GRAMS.get
        for size in self.ngram_sizes:
            for i in range(len(padded) - size + 1):
                gram = padded[i : i + size]
                bucket = known(gram)
                if bucket is None:
                    bucket = _new_bucket(_GRAMS, "c", gram)
                weights[bucket] = weight(bucket, 0.0) + 1.0
        known = _WORD_BUCKETS.get
        for word in words:
            bucket = known(word)
            if bucket is None:
                bucket = _new_bucket(_WORD_BUCKETS, "w", word)
            weights[bucket] = weight(bucket, 0.0) + self.word_weight
        norm = math.sqrt(sum(w * w for w in weights.values()))
        return {k: w / norm for k, w in weights.items()}


_GRAMS: dict[str, int] = {}
_WORD_BUCKETS: dict[str, int] = {}
_OTHER_BUCKETS: dict[str, int] = {}
"""Bucket of each n-gram and word seen: texts share most of them, so a bucket is mostly
a dict lookup rather than a CRC. Each is cleared when it reaches ``_BUCKET_CACHE``."""
_BUCKET_CACHE = 1 << 18


def _bucket(kind: str, gram: str) -> int:
    """The bucket of a feature of any kind (``"c"``: n-gram, ``"w"``: word, ...)."""
    cache = _GRAMS if kind == "c" else _WORD_BUCKETS if kind == "w" else _OTHER_BUCKETS
    found = cache.get(gram if kind in ("c", "w") else kind + gram)
    if found is not None:
        return found
    if kind in ("c", "w"):
        return _new_bucket(cache, kind, gram)
    if len(cache) >= _BUCKET_CACHE:
        cache.clear()
    found = cache[kind + gram] = zlib.crc32((kind + gram).encode()) % BUCKETS
    return found


def _new_bucket(cache: dict[str, int], kind: str, gram: str) -> int:
    if len(cache) >= _BUCKET_CACHE:
        cache.clear()
    bucket = cache[gram] = zlib.crc32((kind + gram).encode()) % BUCKETS
    return bucket


def cosine(a: SparseVector, b: SparseVector) -> float:
    """Cosine similarity of two unit-length sparse vectors (0 when either is empty)."""
    if len(a) > len(b):
        a, b = b, a
    get = b.get
    return sum(w * get(k, 0.0) for k, w in a.items())


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(dict[int, float])


def pack(vector: SparseVector) -> bytes:
    """Compact bytes for the ``embedding`` column."""
    return _encoder.encode(vector)


def unpack(data: bytes | None) -> SparseVector:
    return _decoder.decode(data) if data else {}
