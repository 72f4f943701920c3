"""Entry point of ``agentmem-gateway`` and ``python -m gateway``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from agents import cli as agents_cli
from gateway import __version__
from gateway.cli import records, serve, smartmodule, token, topics
from gateway.cli.common import EXIT_USAGE, fail
from gateway.settings import SettingsError
from gateway.streamlog.topics import TopicsFileError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agentmem-gateway",
        description="Real-time WebSocket gateway in front of a durable stream log.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve.add_parser(commands)
    token.add_parser(commands)
    topics.add_parser(commands)
    records.add_parsers(commands)
    smartmodule.add_parser(commands)
    agents_cli.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.handler(args)
    except (SettingsError, TopicsFileError) as exc:
        return fail(str(exc), EXIT_USAGE)
    return code


if __name__ == "__main__":
    sys.exit(main())
