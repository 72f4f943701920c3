"""Reading the topic declarations file (``topics.toml``) into ``TopicSpec`` values."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from gateway.streamlog.interface import TopicSpec

TOPIC_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_DURATION = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d)\s*$")
_DURATION_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_SIZE = re.compile(r"^\s*(\d+)\s*(|B|KiB|MiB|GiB)\s*$")
_SIZE_BYTES = {"": 1, "B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}
_COMPRESSIONS = ("none", "gzip", "lz4", "snappy", "zstd")
_KEYS = {
    "partitions",
    "retention",
    "max_partition_bytes",
    "compression",
    "event_types",
    "client_writable",
    "description",
}


class TopicsFileError(ValueError):
    """The topics file cannot be used; the message names the file, the topic and the fix."""


def parse_duration_ms(text: str) -> int:
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration: use <n>ms, <n>s, <n>m, <n>h or <n>d")
    return int(match[1]) * _DURATION_MS[match[2]]


def parse_size(text: str | int) -> int:
    if isinstance(text, int) and not isinstance(text, bool) and text > 0:
        return text
    match = _SIZE.match(str(text))
    if not match or int(match[1]) == 0:
        raise ValueError(f"{text!r} is not a size: use <n>, <n>KiB, <n>MiB or <n>GiB")
    return int(match[1]) * _SIZE_BYTES[match[2]]


def validate_topic_name(name: str) -> str:
    if not TOPIC_NAME.match(name):
        raise ValueError(
            f"{name!r} is not a valid topic name: use 1-63 lowercase letters, digits and "
            "'-', starting with a letter or digit"
        )
    return name


def spec_from_table(name: str, table: dict[str, Any]) -> TopicSpec:
    """Build a ``TopicSpec`` from one ``[topics.NAME]`` table; raises ``ValueError``."""
    validate_topic_name(name)
    unknown = sorted(set(table) - _KEYS)
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r}; accepted keys: {', '.join(sorted(_KEYS))}")
    partitions = table.get("partitions")
    if (
        not isinstance(partitions, int)
        or isinstance(partitions, bool)
        or not 1 <= partitions <= 1024
    ):
        raise ValueError(f"partitions = {partitions!r}: expected an integer from 1 to 1024")
    retention = table.get("retention")
    compression = table.get("compression", "none")
    if compression not in _COMPRESSIONS:
        raise ValueError(
            f"compression = {compression!r}: expected one of {', '.join(_COMPRESSIONS)}"
        )
    event_types = table.get("event_types", [])
    if not isinstance(event_types, list) or not all(isinstance(t, str) for t in event_types):
        raise ValueError("event_types: expected a list of event type names")
    writable = table.get("client_writable", True)
    if not isinstance(writable, bool):
        raise ValueError(f"client_writable = {writable!r}: expected true or false")
    cap = table.get("max_partition_bytes")
    return TopicSpec(
        name=name,
        partitions=partitions,
        retention_ms=None if retention is None else parse_duration_ms(str(retention)),
        max_partition_bytes=None if cap is None else parse_size(cap),
        compression=compression,
        event_types=tuple(event_types),
        client_writable=writable,
        description=str(table.get("description", "")),
    )


def load_topics(path: Path) -> list[TopicSpec]:
    """Read every ``[topics.NAME]`` table of ``path``."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise TopicsFileError(f"Cannot read the topics file {path}: {exc.strerror}.") from None
    except tomllib.TOMLDecodeError as exc:
        raise TopicsFileError(f"The topics file {path} is not valid TOML: {exc}.") from None
    tables = document.get("topics")
    if not isinstance(tables, dict) or not tables:
        raise TopicsFileError(f"The topics file {path} declares no [topics.NAME] table.")
    specs = []
    for name, table in tables.items():
        try:
            specs.append(spec_from_table(name, table))
        except ValueError as exc:
            raise TopicsFileError(f"{path}: topic {name!r}: {exc}.") from None
    return specs
