"""The gateway's locust file: ``locust -f loadtest/locust/locustfile.py --host http://...``.

Prefer ``python -m loadtest.locust.run`` (headless, reports in a folder). Run from the
repository root (locust puts the working directory on ``sys.path``). The load shape is the
preset named by ``$AGENTMEM_LOADTEST_SHAPE`` (steady, ramp, spike); without it, locust's
own ``--users``/``--spawn-rate``/``--run-time`` apply.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from locust import events
from locust.runners import MasterRunner

from loadtest.locust import shapes
from loadtest.locust.context import ConfigurationError, LoadTest, add_arguments
from loadtest.locust.users import (
    BatchPublisherUser,
    HttpIngestUser,
    MemorySearchUser,
    PublisherUser,
    SubscriberUser,
)

SHAPE_VARIABLE = "AGENTMEM_LOADTEST_SHAPE"

__all__ = [
    "BatchPublisherUser",
    "HttpIngestUser",
    "MemorySearchUser",
    "PublisherUser",
    "SubscriberUser",
]

_shape_name = os.environ.get(SHAPE_VARIABLE, "").strip().lower()
if _shape_name and _shape_name != "none":
    if _shape_name not in shapes.PRESETS:
        sys.exit(f"{SHAPE_VARIABLE}={_shape_name!r}: choose one of {', '.join(shapes.PRESETS)}")
    # The one shape class in this module's namespace: locust picks it up.
    Shape = shapes.PRESETS[_shape_name]


def _arguments(parser: Any) -> None:
    add_arguments(parser)


def _check_configuration(environment: Any, **_: Any) -> None:
    try:
        LoadTest.of(environment)
    except ConfigurationError as exc:
        sys.exit(f"loadtest: {exc}")


def _delivery_summary(environment: Any, **_: Any) -> None:
    if isinstance(environment.runner, MasterRunner):
        return  # the users ran in the workers, each of which logs its own line
    totals = LoadTest.of(environment).ledger.totals
    logging.getLogger("loadtest").info(
        "deliveries: %d expected, %d received, %d lost, %d late, %d duplicate",
        totals["expected"], totals["received"], totals["lost"], totals["late"], totals["duplicate"],
    )  # fmt: skip


events.init_command_line_parser.add_listener(_arguments)
events.init.add_listener(_check_configuration)
events.quitting.add_listener(_delivery_summary)
