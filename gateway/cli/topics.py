"""``agentmem-gateway topics list|describe|create``: manage topics of the stream log."""

from __future__ import annotations

import argparse
import asyncio

import msgspec

from gateway.cli.common import EXIT_USAGE, add_settings_flags, fail, settings_from_args
from gateway.errors import GatewayError
from gateway.logging import configure_logging
from gateway.settings import Settings
from gateway.streamlog.factory import open_log
from gateway.streamlog.interface import TopicSpec
from gateway.streamlog.topics import parse_duration_ms, parse_size, validate_topic_name

_encoder = msgspec.json.Encoder()

_LOG_FLAGS = ["data_dir", "topics_file", "durability", "stream_backend"]


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("topics", help="list, describe and create topics")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    listing = actions.add_parser("list", help="list topics", description="List every topic.")
    add_settings_flags(listing, _LOG_FLAGS)
    listing.set_defaults(handler=run_list)

    describe = actions.add_parser(
        "describe",
        help="show a topic's partitions and offsets",
        description="Show a topic's settings and each partition's start and end offsets.",
    )
    describe.add_argument("name")
    add_settings_flags(describe, _LOG_FLAGS)
    describe.set_defaults(handler=run_describe)

    create = actions.add_parser(
        "create",
        help="create a topic",
        description="Create a topic in the log (topics.toml topics are created at start).",
    )
    create.add_argument("name")
    create.add_argument("-p", "--partitions", type=int, default=1, help="partition count")
    create.add_argument("--retention", help="retention time: <n>s/m/h/d (default: forever)")
    create.add_argument("--max-partition-bytes", help="size cap per partition, e.g. 512MiB")
    add_settings_flags(create, _LOG_FLAGS)
    create.set_defaults(handler=run_create)


def _settings(args: argparse.Namespace) -> Settings:
    """The settings; log lines go to stderr so that stdout carries only the output."""
    settings = settings_from_args(args)
    configure_logging(settings.log_level, settings.log_format)
    return settings


def run_list(args: argparse.Namespace) -> int:
    async def main() -> None:
        async with open_log(_settings(args)) as log:
            for spec in sorted(log.topics(), key=lambda s: s.name):
                print(
                    f"{spec.name:<20} partitions={spec.partitions:<4} "
                    f"retention={_duration(spec.retention_ms)}"
                )

    asyncio.run(main())
    return 0


def run_describe(args: argparse.Namespace) -> int:
    async def main() -> int:
        async with open_log(_settings(args)) as log:
            try:
                description = await log.describe_topic(args.name)
            except GatewayError as error:
                return fail(error.message)
            print(_encoder.encode(description).decode())
            return 0

    return asyncio.run(main())


def run_create(args: argparse.Namespace) -> int:
    try:
        spec = TopicSpec(
            name=validate_topic_name(args.name),
            partitions=args.partitions,
            retention_ms=None if args.retention is None else parse_duration_ms(args.retention),
            max_partition_bytes=(
                None if args.max_partition_bytes is None else parse_size(args.max_partition_bytes)
            ),
        )
    except ValueError as exc:
        return fail(str(exc), EXIT_USAGE)
    if not 1 <= spec.partitions <= 1024:
        return fail("--partitions must be from 1 to 1024", EXIT_USAGE)

    async def main() -> int:
        async with open_log(_settings(args)) as log:
            try:
                await log.create_topic(spec)
            except GatewayError as error:
                return fail(error.message)
            print(f"topic {spec.name!r} created with {spec.partitions} partitions")
            return 0

    return asyncio.run(main())


def _duration(ms: int | None) -> str:
    if ms is None:
        return "forever"
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"
