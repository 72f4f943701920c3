"""``agentmem-gateway agents``: run the memory pipeline on its own (also ``python -m agents``).

It opens the configured stream log and ``<data_dir>/memory.sqlite3`` itself and runs until
SIGTERM or SIGINT, after which it stops cleanly (queued work applied, updates published;
what is left is durable and picked up by the next start). ``--exit-when-idle`` stops once
everything written to the topics so far is turned into memories (a one-off catch-up).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from gateway.cli.common import EXIT_USAGE, add_settings_flags, fail, settings_from_args
from gateway.logging import configure_logging
from gateway.settings import SettingsError
from gateway.streamlog.topics import TopicsFileError

if TYPE_CHECKING:
    from agents.config import PipelineConfig
    from gateway.settings import Settings

DESCRIPTION = (
    "Run the memory pipeline: consume the event topics, turn events into memories in "
    "<data_dir>/memory.sqlite3 and publish every change to memory-updates."
)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--exit-when-idle",
        action="store_true",
        help="stop once every record written so far is applied and published",
    )
    add_settings_flags(parser)
    parser.set_defaults(handler=run)


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``agents`` on the ``agentmem-gateway`` command."""
    configure(
        commands.add_parser("agents", help="run the memory pipeline", description=DESCRIPTION)
    )


def run(args: argparse.Namespace) -> int:
    # The pipeline, imported only to run it: other commands start faster without it.
    from agents.config import PipelineConfig
    from agents.errors import PipelineError
    from gateway.cli.serve import loop_factory

    settings = settings_from_args(args)
    configure_logging(settings.log_level, settings.log_format)
    try:
        config = PipelineConfig.from_settings(settings)
        # The same event loop as ``serve`` (the ``event_loop`` setting: uvloop when installed).
        with asyncio.Runner(loop_factory=loop_factory(settings.event_loop)) as runner:
            runner.run(_serve(settings, config, exit_when_idle=bool(args.exit_when_idle)))
    except PipelineError as exc:
        return fail(str(exc))
    return 0


async def _serve(settings: Settings, config: PipelineConfig, *, exit_when_idle: bool) -> None:
    from agents.runner import run_pipeline

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await run_pipeline(settings, config=config, stop=stop, exit_when_idle=exit_when_idle)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agents", description=DESCRIPTION)
    configure(parser)
    args = parser.parse_args(argv)
    try:
        code: int = args.handler(args)
    except (SettingsError, TopicsFileError) as exc:
        return fail(str(exc), EXIT_USAGE)
    return code


if __name__ == "__main__":
    sys.exit(main())
