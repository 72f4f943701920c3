"""Constants of the Fluvio SmartModule ABI: kinds, versions and status codes.

A SmartModule is a wasm module that exports ``memory``, ``alloc`` and one transform
(``filter``, ``map``, ``filter_map``, ``array_map`` or ``aggregate``), optionally
``init``, ``look_back`` and ``dealloc``, and imports ``copy_records`` (normally from
``env``). Every export takes ``(ptr, len, version)`` and returns an i32 status.
"""

from __future__ import annotations

import enum
from typing import Final


class Kind(enum.StrEnum):
    """What a SmartModule does with each record; detected from its exports."""

    FILTER = "filter"
    MAP = "map"
    FILTER_MAP = "filter_map"
    ARRAY_MAP = "array_map"
    AGGREGATE = "aggregate"


KIND_PROBE_ORDER: Final = (Kind.FILTER, Kind.MAP, Kind.FILTER_MAP, Kind.ARRAY_MAP, Kind.AGGREGATE)
"""A Fluvio SPU uses the first of these exports it finds; so does the engine."""

KIND_TAGS: Final = {
    0: "filter",
    1: "map",
    2: "array_map",
    3: "aggregate",
    4: "filter_map",
    5: "join",
    6: "generic",
}
"""``SmartModuleKind`` tags found in a runtime error record."""

DEFAULT_VERSION: Final = 24
"""The ``version`` passed to every export unless configured.

It is what a Fluvio SPU passes to a stream consumed by the ``fluvio`` Python client
0.21 (whose protocol version is 24), the client this project's Fluvio backend uses, so
a module sees the same number whether the gateway runs it or a Fluvio cluster does.
Versions 23 to 25 share one input layout; 22 is what ``smdk test`` passes.
"""

SUPPORTED_VERSIONS: Final = range(21, 26)

COPY_RECORDS: Final = "copy_records"
WASI_MODULE: Final = "wasi_snapshot_preview1"

TRANSFORM_STATUS: Final = {
    -1: "UnknownError",
    -11: "DecodingBaseInput",
    -22: "DecodingRecords",
    -33: "EncodingOutput",
    -44: "ParsingExtraParams",
    -55: "UndefinedRightRecord",
}
INIT_STATUS: Final = {
    -1: "UnknownError",
    -2: "InitError",
    -10: "DecodingInput",
    -11: "EncodingOutput",
}
LOOK_BACK_STATUS: Final = {
    -1: "UnknownError",
    -66: "DecodingBaseInput",
    -77: "DecodingRecords",
    -88: "EncodingOutput",
    -99: "PropagatedError",
}

INIT_ERROR_WITH_HINT: Final = -2
"""``init`` returned an error and sent ``SmartModuleInitOutput`` (a hint)."""
LOOK_BACK_ERROR_WITH_DETAILS: Final = -99
"""``look_back`` returned an error and sent ``SmartModuleLookbackOutput``."""


def status_name(table: dict[int, str], status: int) -> str:
    # Fluvio maps any negative value it does not know to UnknownError.
    return table.get(status, "UnknownError")
