"""Start positions and partition checks shared by every backend's reads and tails."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from gateway.errors import InvalidOffset
from gateway.streamlog.interface import StartPosition, TopicSpec


def check_partition(spec: TopicSpec, partition: int) -> None:
    if not 0 <= partition < spec.partitions:
        raise InvalidOffset(
            f"Topic {spec.name!r} has partitions 0 to {spec.partitions - 1}; "
            f"partition {partition} does not exist."
        )


def resolve_start(
    spec: TopicSpec,
    start: StartPosition,
    partitions: Iterable[int],
    bounds: Mapping[int, tuple[int, int]],
) -> dict[int, int]:
    """The next offset to deliver per partition, given each partition's (start, end).

    Partitions missing from an offset map start at the end; an offset older than the oldest
    stored record starts at that record (the rest was removed by retention).
    """
    positions: dict[int, int] = {}
    for partition in partitions:
        first, end = bounds[partition]
        if start == "beginning":
            positions[partition] = first
        elif start == "end":
            positions[partition] = end
        else:
            assert not isinstance(start, str)
            wanted = start.get(partition, end)
            if wanted < 0:
                raise InvalidOffset(
                    f"Offset {wanted} for partition {partition} of {spec.name!r} is negative; "
                    "offsets start at 0."
                )
            positions[partition] = max(wanted, first)
    return positions
