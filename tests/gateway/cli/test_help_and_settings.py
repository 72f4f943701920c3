"""``--help`` of every command, and settings errors reported before anything runs."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from gateway import __version__
from gateway.cli.main import build_parser


def _commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], list[str]]]:
    """(command path, its sub-commands) for the top level and every (sub-)command."""
    children: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            children.update(action.choices)
    yield path, sorted(children)
    for name, child in children.items():
        yield from _commands(child, (*path, name))


COMMANDS = list(_commands(build_parser()))


def test_every_command_group_is_found() -> None:
    paths = {path for path, _ in COMMANDS}
    expected = {
        (),
        ("serve",),
        ("token",),
        ("topics",),
        ("topics", "list"),
        ("topics", "describe"),
        ("topics", "create"),
        ("produce",),
        ("consume",),
    }
    assert expected <= paths


@pytest.mark.parametrize(
    ("path", "children"), COMMANDS, ids=[" ".join(p) or "agentmem-gateway" for p, _ in COMMANDS]
)
def test_help(cli, path, children) -> None:
    result = cli(*path, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(" ".join(("usage: agentmem-gateway", *path)))
    for child in children:
        assert child in result.stdout
    assert result.stderr == ""


def test_version(cli) -> None:
    result = cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"agentmem-gateway {__version__}"


def test_no_command_is_a_usage_error(cli) -> None:
    result = cli()
    assert result.returncode == 2
    assert "usage:" in result.stderr


BAD_SETTINGS = [
    pytest.param(
        {"AGENTMEM_PORT": "abc"},
        ["AGENTMEM_PORT='abc'", "an integer from 0 to 65_535"],
        id="port-not-a-number",
    ),
    pytest.param(
        {"AGENTMEM_DURABILITY": "sometimes"},
        ["AGENTMEM_DURABILITY='sometimes'", "one of process, power"],
        id="durability",
    ),
    pytest.param(
        {"AGENTMEM_MAX_BODY_BYTES": "12"},
        ["AGENTMEM_MAX_BODY_BYTES='12'", "an integer from 1_024"],
        id="body-limit-too-small",
    ),
    pytest.param(
        {"AGENTMEM_FOO": "1"},
        ["Unknown setting AGENTMEM_FOO", "AGENTMEM_PORT", "AGENTMEM_DATA_DIR"],
        id="unknown-variable",
    ),
]


@pytest.mark.parametrize(("env", "says"), BAD_SETTINGS)
def test_bad_settings_exit_2_naming_variable_value_and_accepted(cli, env, says) -> None:
    result = cli("topics", "list", env=env)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert result.stderr.startswith("error: ")
    assert "Traceback" not in result.stderr
    for text in says:
        assert text in result.stderr


@pytest.mark.parametrize(
    "command",
    [
        ("serve",),
        ("consume", "user-events", "-B", "-d"),
        ("token", "--user", "u", "--org", "o"),
    ],
    ids=lambda command: command[0],
)
def test_every_command_checks_the_settings(cli, command) -> None:
    result = cli(*command, stdin="", env={"AGENTMEM_DURABILITY": "sometimes"}, timeout=15)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert "AGENTMEM_DURABILITY='sometimes' is not valid: expected one of process, power" in (
        result.stderr
    )


def test_bad_flag_names_the_flag(cli) -> None:
    result = cli("serve", "--port", "abc", timeout=15)
    assert result.returncode == 2
    assert "--port='abc'" in result.stderr
    assert "an integer from 0 to 65_535" in result.stderr


def test_secret_value_is_never_shown(cli) -> None:
    result = cli("topics", "list", env={"AGENTMEM_JWT_SECRET": "short-secret"})
    assert result.returncode == 2
    assert "AGENTMEM_JWT_SECRET=<hidden>" in result.stderr
    assert "short-secret" not in result.stderr
