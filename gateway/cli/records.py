"""``agentmem-gateway produce`` and ``consume``: write and read records from a terminal.

Both open the log directly (like the ``fluvio`` CLI talks to the cluster), so they work
while a gateway runs on the same data directory, or without one.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import msgspec

from gateway.cli.common import EXIT_FAILED, EXIT_USAGE, add_settings_flags, fail, settings_from_args
from gateway.errors import GatewayError
from gateway.logging import configure_logging
from gateway.schemas.envelope import (
    check_topic,
    decode_json,
    encode_event,
    event_decoder,
    stamp,
)
from gateway.schemas.record_view import view
from gateway.settings import Settings
from gateway.streamlog.factory import open_log
from gateway.streamlog.interface import StartPosition, StreamLog

_encoder = msgspec.json.Encoder()
_LOG_FLAGS = ["data_dir", "topics_file", "durability", "stream_backend", "max_event_bytes"]


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    produce = commands.add_parser(
        "produce",
        help="write events read from stdin",
        description="Read one JSON event envelope per line from stdin, validate it, write it "
        "durably and print where it landed. An event whose id the organization already "
        "wrote to the topic within the dedup window is not written again. Invalid lines are "
        "reported on stderr and skipped (exit status 1 at the end).",
    )
    produce.add_argument("topic")
    produce.add_argument("--key", help="record key for every event (e.g. a user id)")
    produce.add_argument("--org", default="default", help="organization stamped on events")
    produce.add_argument("--user", default="cli", help="user stamped when an event names none")
    produce.add_argument(
        "--raw", action="store_true", help="write each line as it is, without validation"
    )
    add_settings_flags(produce, _LOG_FLAGS)
    produce.set_defaults(handler=run_produce)

    consume = commands.add_parser(
        "consume",
        help="print records of a topic",
        description="Print records as JSON lines: by default new records from the end, "
        "following live until interrupted.",
    )
    consume.add_argument("topic")
    consume.add_argument(
        "-B", "--from-beginning", action="store_true", help="start at the oldest record"
    )
    consume.add_argument(
        "-p", "--partition", type=int, action="append", help="only this partition (repeatable)"
    )
    consume.add_argument("--offset", type=int, help="start at this offset (per chosen partition)")
    consume.add_argument("-n", "--count", type=int, help="stop after this many records")
    consume.add_argument(
        "-d", "--disable-continuous", action="store_true", help="stop at the end of the log"
    )
    add_settings_flags(consume, _LOG_FLAGS)
    consume.set_defaults(handler=run_consume)


def _settings(args: argparse.Namespace) -> Settings:
    """The settings; log lines go to stderr so that stdout carries only JSON lines."""
    settings = settings_from_args(args)
    configure_logging(settings.log_level, settings.log_format)
    return settings


def run_produce(args: argparse.Namespace) -> int:
    settings = _settings(args)

    async def main() -> int:
        failed = 0
        async with open_log(settings) as log:
            try:
                spec = log.topic(args.topic)
            except GatewayError as error:
                return fail(error.message)
            key = args.key.encode() if args.key else None
            for number, line in enumerate(sys.stdin.buffer, start=1):
                line = line.strip()
                if not line:
                    continue
                try:
                    idempotency_key = None
                    if args.raw:
                        value, event_id = line, None
                    else:
                        event = decode_json(event_decoder, line)
                        check_topic(spec, event, internal=True)
                        event = stamp(
                            event,
                            organization_id=args.org,
                            user_id=args.user,
                            may_act_for_users=True,
                        )
                        value, event_id = encode_event(event, settings.max_event_bytes), event.id
                        # The event id is the idempotency key, as on the HTTP and WebSocket APIs.
                        idempotency_key = f"{args.org}\x00{event_id}"
                    produced = await log.produce(
                        args.topic, key, value, idempotency_key=idempotency_key
                    )
                except GatewayError as error:
                    failed += 1
                    print(f"line {number}: {error.code}: {error.message}", file=sys.stderr)
                    continue
                print(
                    _encoder.encode(
                        {
                            "id": event_id,
                            "topic": args.topic,
                            "partition": produced.partition,
                            "offset": produced.offset,
                            "duplicate": produced.duplicate,
                        }
                    ).decode(),
                    flush=True,
                )
        return EXIT_FAILED if failed else 0

    return asyncio.run(main())


def run_consume(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if args.count is not None and args.count < 1:
        return fail("--count must be at least 1", EXIT_USAGE)
    if args.offset is not None and args.offset < 0:
        return fail("--offset must be 0 or more", EXIT_USAGE)

    async def main() -> int:
        async with open_log(settings) as log:
            try:
                return await _consume(log, args)
            except GatewayError as error:
                return fail(error.message)

    try:
        return asyncio.run(main())
    except KeyboardInterrupt:
        return 0


async def _consume(log: StreamLog, args: argparse.Namespace) -> int:
    description = await log.describe_topic(args.topic)
    partitions = args.partition or [p.partition for p in description.partitions]
    start: StartPosition
    if args.offset is not None:
        start = {p: args.offset for p in partitions}
    elif args.from_beginning:
        start = "beginning"
    else:
        start = "end"
    ends = {p.partition: p.end_offset for p in description.partitions}
    remaining = args.count
    out = sys.stdout
    async with log.tail(args.topic, partitions, start) as tail:
        await tail.start()  # type: ignore[attr-defined]

        def at_end() -> bool:
            return all(tail.positions[p] >= ends[p] for p in partitions)

        if args.disable_continuous and at_end():
            return 0
        async for batch in tail:
            for record in batch:
                out.write(_encoder.encode(view(record)).decode() + "\n")
                if remaining is not None:
                    remaining -= 1
                    if remaining == 0:
                        out.flush()
                        return 0
            out.flush()
            if args.disable_continuous and at_end():
                return 0
    return 0
