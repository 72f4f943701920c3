"""``agentmem-gateway smartmodule``: list the known SmartModules and try one on records.

``smartmodule test`` works like Fluvio's ``smdk test``: it runs a module (by name, or a
``.wasm`` path) with params on records given as ``--text`` values or lines of a
``--file``, prints each output record's value on its own line (``key<SEP>value`` with
``--key-value``) and reports errors on stderr with a non-zero exit status.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec

from gateway.smartmodules import (
    ChainLink,
    SmartModuleEngine,
    SmartModuleError,
    SmartModuleRecordError,
    SmartModuleRegistry,
)
from gateway.smartmodules.abi import DEFAULT_VERSION, SUPPORTED_VERSIONS
from gateway.smartmodules.batch import OutputRecord
from gateway.streamlog.interface import Record

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

TEST_TOPIC = "smartmodule-test"


class SmartModuleSettings(msgspec.Struct, frozen=True):
    cache_dir: Path
    directories: tuple[Path, ...]


def settings_from_env(environ: Mapping[str, str] = os.environ) -> SmartModuleSettings:
    """``AGENTMEM_DATA_DIR`` (default ``./data``) holds the compiled-module cache;
    ``AGENTMEM_SMARTMODULE_DIR`` lists extra module directories (``os.pathsep``-separated)."""
    data_dir = Path(environ.get("AGENTMEM_DATA_DIR") or "./data")
    extra = environ.get("AGENTMEM_SMARTMODULE_DIR", "")
    directories = tuple(Path(p) for p in extra.split(os.pathsep) if p)
    return SmartModuleSettings(data_dir / "smartmodule-cache", directories)


def _registry(settings: SmartModuleSettings, version: int = DEFAULT_VERSION) -> SmartModuleRegistry:
    engine = SmartModuleEngine(settings.cache_dir, version=version)
    return SmartModuleRegistry(engine, settings.directories)


def _fail(message: str, code: int = EXIT_FAILED) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


# -- list -----------------------------------------------------------------------------


def handle_list(args: argparse.Namespace) -> int:
    try:
        infos = _registry(settings_from_env()).list()
    except SmartModuleError as exc:
        return _fail(exc.message)
    if args.json:
        sys.stdout.write(msgspec.json.encode(infos).decode() + "\n")
        return EXIT_OK
    if not infos:
        print("no SmartModules found")
        return EXIT_OK
    for info in infos:
        origin = "" if info.builtin else f"  [{info.path}]"
        print(f"{info.name} ({info.kind}){origin}")
        if info.description:
            print(f"  {info.description}")
        if info.params is None:
            print("  params: any (no manifest)")
        elif not info.params:
            print("  params: none")
        for param in info.params or ():
            default = f", default {param.default}" if param.default is not None else ""
            required = ", required" if param.required else ""
            print(f"  -e {param.name}=...  {param.accepted()}{default}{required}")
            if param.description:
                print(f"      {param.description}")
    return EXIT_OK


# -- test -----------------------------------------------------------------------------


def _parse_params(items: Sequence[str]) -> dict[str, str]:
    params = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ValueError(f"-e expects KEY=VALUE, got {item!r}")
        params[name] = value
    return params


def _input_values(args: argparse.Namespace) -> list[bytes]:
    found = [text.encode() for text in args.text]
    if args.file is not None:
        data = Path(args.file).read_bytes()
        if args.raw:
            found.append(data)
        else:
            found.extend(line for line in data.splitlines() if line)
    return found


def _print(records: Sequence[OutputRecord], key_value: bool, separator: str) -> None:
    out = sys.stdout.buffer
    sep = separator.encode()
    for record in records:
        if key_value:
            out.write((record.key if record.key is not None else b"null") + sep)
        out.write(record.value + b"\n")
    out.flush()


def handle_test(args: argparse.Namespace) -> int:
    try:
        params = _parse_params(args.param)
        values = _input_values(args)
    except (ValueError, OSError) as exc:
        return _fail(str(exc), EXIT_USAGE)
    if not values:
        return _fail("no input records: give --text VALUE (repeatable) or --file FILE", EXIT_USAGE)
    key = args.key.encode() if args.key is not None else None
    now = int(time.time() * 1000)
    records = [Record(TEST_TOPIC, 0, i, now, key, v) for i, v in enumerate(values)]
    try:
        registry = _registry(settings_from_env(), args.abi_version)
        module = registry.resolve(args.module)
        link = ChainLink(module, params, aggregate_initial=args.aggregate_initial)
        with registry.engine.chain([link]) as chain:
            output = chain.process(records)
    except SmartModuleRecordError as exc:
        _print(exc.successes, args.key_value, args.key_separator)
        return _fail(exc.message)
    except SmartModuleError as exc:
        return _fail(exc.message)
    _print(output.records, args.key_value, args.key_separator)
    return EXIT_OK


# -- deploy ---------------------------------------------------------------------------


def deploy_plan(infos: Sequence[Any], names: Sequence[str]) -> list[tuple[str, str]]:
    """(name, wasm path) of the modules to register: those named, or all of them."""
    wanted = set(names)
    unknown = wanted - {info.name for info in infos}
    if unknown:
        known = ", ".join(sorted(info.name for info in infos))
        raise ValueError(f"unknown SmartModule {sorted(unknown)[0]!r}; known: {known}")
    return [(info.name, info.path) for info in infos if not wanted or info.name in wanted]


def handle_deploy(args: argparse.Namespace) -> int:
    """Register SmartModules in a Fluvio cluster, as ``fluvio smartmodule create`` does."""
    try:
        plan = deploy_plan(_registry(settings_from_env()).list(), args.names)
    except (SmartModuleError, ValueError) as exc:
        return _fail(str(exc))
    endpoint = args.endpoint or os.environ.get("AGENTMEM_FLUVIO_ENDPOINT")
    if args.dry_run:
        for name, path in plan:
            print(f"would register {name} from {path}")
        return EXIT_OK
    try:
        import fluvio
    except ImportError:
        return _fail("the fluvio client is not installed: pip install 'agentmem-gateway[fluvio]'")
    from gateway.streamlog.fluvio.specs import connection_config

    config = connection_config(endpoint, "anonymous" if args.tls else "none")
    try:
        admin = (
            fluvio.FluvioAdmin.connect()
            if config is None
            else fluvio.FluvioAdmin.connect_with_config(config)
        )
        existing = {m.name() for m in admin.list_smartmodules([])}
        for name, path in plan:
            if name in existing:
                print(f"{name}: already registered")
                continue
            admin.create_smartmodule(name, path, False)
            print(f"{name}: registered from {path}")
    except Exception as exc:
        return _fail(
            f"the Fluvio cluster refused or did not answer ({exc}); check "
            "--endpoint / AGENTMEM_FLUVIO_ENDPOINT"
        )
    return EXIT_OK


# -- wiring ---------------------------------------------------------------------------


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "smartmodule",
        help="list SmartModules or test one on records",
        description="Fluvio-compatible SmartModules: the project's own (smartmodules/dist) "
        "and those in AGENTMEM_SMARTMODULE_DIR.",
    )
    commands = parser.add_subparsers(dest="smartmodule_command", required=True, metavar="COMMAND")

    listing = commands.add_parser("list", help="known SmartModules with kind and params")
    listing.add_argument("--json", action="store_true", help="print JSON instead of text")
    listing.set_defaults(handler=handle_list)

    test = commands.add_parser(
        "test",
        help="run a SmartModule on records and print the output",
        description="Run a SmartModule on records and print each output record's value on "
        "its own line; errors go to stderr with a non-zero exit status.",
    )
    test.add_argument("module", metavar="NAME_OR_WASM_PATH")
    test.add_argument(
        "-e",
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a param passed to the module's init (repeatable)",
    )
    test.add_argument(
        "--aggregate-initial", metavar="VALUE", help="initial accumulator of an aggregate module"
    )
    test.add_argument(
        "--text",
        action="append",
        default=[],
        metavar="VALUE",
        help="an input record value (repeatable)",
    )
    test.add_argument("--file", metavar="FILE", help="input record values, one per line")
    test.add_argument(
        "--raw", action="store_true", help="with --file: the whole file is one record"
    )
    test.add_argument("--key", metavar="KEY", help="key of every input record")
    test.add_argument("--key-value", action="store_true", help="print key<SEP>value")
    test.add_argument(
        "--key-separator",
        default="=",
        metavar="SEP",
        help="separator for --key-value (default: '=')",
    )
    test.add_argument(
        "--abi-version",
        type=int,
        default=DEFAULT_VERSION,
        choices=list(SUPPORTED_VERSIONS),
        metavar="N",
        help=f"version passed to the module (default: {DEFAULT_VERSION})",
    )
    test.set_defaults(handler=handle_test)

    deploy = commands.add_parser(
        "deploy",
        help="register SmartModules in a Fluvio cluster",
        description="Register the project's SmartModules (and those in "
        "AGENTMEM_SMARTMODULE_DIR) in a Fluvio cluster by name, so consumers can run them "
        "there. Modules already registered are left as they are.",
    )
    deploy.add_argument("names", nargs="*", metavar="NAME", help="only these modules")
    deploy.add_argument(
        "--endpoint", help="SC address host:port (default: AGENTMEM_FLUVIO_ENDPOINT, else profile)"
    )
    deploy.add_argument("--tls", action="store_true", help="connect with anonymous TLS")
    deploy.add_argument("--dry-run", action="store_true", help="print what would be registered")
    deploy.set_defaults(handler=handle_deploy)


def main(argv: Sequence[str] | None = None) -> int:
    """``agentmem-gateway smartmodule ...`` on its own (``argv`` without ``smartmodule``)."""
    parser = argparse.ArgumentParser(prog="agentmem-gateway")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["smartmodule", *(sys.argv[1:] if argv is None else argv)])
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
