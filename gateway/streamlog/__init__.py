"""The stream log: topics of partitioned, append-only records with dense offsets."""

from gateway.streamlog.interface import (
    NewRecord,
    PartitionInfo,
    Produced,
    Record,
    StartPosition,
    StreamLog,
    Tail,
    TopicDescription,
    TopicSpec,
)

__all__ = [
    "NewRecord",
    "PartitionInfo",
    "Produced",
    "Record",
    "StartPosition",
    "StreamLog",
    "Tail",
    "TopicDescription",
    "TopicSpec",
]
