"""``agentmem-gateway token``: mint a signed token with the configured secret."""

from __future__ import annotations

import argparse

from gateway.auth.tokens import SCOPES, TokenAuthority
from gateway.cli.common import EXIT_USAGE, add_settings_flags, fail, settings_from_args
from gateway.streamlog.topics import parse_duration_ms


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "token",
        help="mint an access token",
        description="Print an HS256 token for a user of an organization.",
    )
    parser.add_argument("--user", required=True, help="user id (the `sub` claim)")
    parser.add_argument("--org", required=True, help="organization id (the `org` claim)")
    parser.add_argument(
        "--scopes",
        default="publish,subscribe",
        help=f"comma-separated scopes from {', '.join(SCOPES)} (default: publish,subscribe)",
    )
    parser.add_argument(
        "--ttl", default="1h", help="lifetime: seconds, or <n>s/m/h/d (default: 1h)"
    )
    add_settings_flags(parser, ["data_dir", "jwt_secret"])
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    ttl = args.ttl.strip()
    try:
        ttl_s = float(ttl) if ttl.isdigit() else parse_duration_ms(ttl) / 1000
    except ValueError as exc:
        return fail(f"--ttl {ttl!r}: {exc}", EXIT_USAGE)
    scopes = tuple(s.strip() for s in args.scopes.split(",") if s.strip())
    authority = TokenAuthority.from_settings(settings.jwt_secret, settings.data_dir)
    try:
        print(authority.mint(args.user, args.org, scopes, ttl_s))
    except ValueError as exc:
        return fail(f"{exc}", EXIT_USAGE)
    return 0
