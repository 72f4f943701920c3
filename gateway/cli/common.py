"""What every command shares: settings flags, opening the log, reporting errors."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable

from gateway.settings import SETTINGS, Settings, load_settings

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def add_settings_flags(
    parser: argparse.ArgumentParser, fields: Iterable[str] | None = None
) -> None:
    """Add ``--flag`` overrides for the given settings (all when ``None``)."""
    wanted = None if fields is None else set(fields)
    group = parser.add_argument_group("settings (override AGENTMEM_* variables)")
    for spec in SETTINGS:
        if wanted is not None and spec.field not in wanted:
            continue
        group.add_argument(
            spec.flag,
            dest=f"setting_{spec.field}",
            metavar=spec.field.upper(),
            help=f"{spec.help} [{spec.env}; {spec.accepted}]",
        )


def settings_from_args(args: argparse.Namespace) -> Settings:
    overrides = {spec.field: getattr(args, f"setting_{spec.field}", None) for spec in SETTINGS}
    return load_settings(overrides=overrides)


def fail(message: str, code: int = EXIT_FAILED) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code
