"""Settings: precedence, validation messages, and the documented table."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.settings import Settings, SettingsError, configuration_table, load_settings


def test_defaults() -> None:
    settings = load_settings({})
    assert settings == Settings()
    assert settings.port == 8080 and settings.host == "127.0.0.1"
    assert settings.database_path == Path("data/log.sqlite3")


def test_environment_and_flag_precedence() -> None:
    env = {"AGENTMEM_PORT": "9000", "AGENTMEM_DURABILITY": "POWER"}
    assert load_settings(env).port == 9000
    assert load_settings(env).durability == "power"
    assert load_settings(env, {"port": "9100", "host": None}).port == 9100


def test_settings_are_frozen() -> None:
    settings = load_settings({})
    with pytest.raises(AttributeError):
        settings.port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"AGENTMEM_PORT": "abc"}, "AGENTMEM_PORT='abc' is not valid: expected an integer from 0"),
        ({"AGENTMEM_PORT": "70000"}, "AGENTMEM_PORT='70000'"),
        ({"AGENTMEM_DURABILITY": "sometimes"}, "expected one of process, power"),
        ({"AGENTMEM_STREAM_BACKEND": "kafka"}, "AGENTMEM_STREAM_BACKEND='kafka'"),
        ({"AGENTMEM_LOG_FORMAT": "xml"}, "one of auto, json, console"),
        ({"AGENTMEM_RETENTION_INTERVAL_S": "-1"}, "greater than 0"),
        ({"AGENTMEM_JWT_SECRET": "short"}, "AGENTMEM_JWT_SECRET=<hidden>"),
        ({"AGENTMEM_MAX_BODY_BYTES": "1"}, "AGENTMEM_MAX_BODY_BYTES='1'"),
        ({"AGENTMEM_PROT": "8080"}, "Unknown setting AGENTMEM_PROT"),
        (
            {"AGENTMEM_COMMIT_MAX_RECORDS": "100", "AGENTMEM_PRODUCE_QUEUE_LIMIT": "10"},
            "must not exceed",
        ),
    ],
)
def test_bad_values_name_variable_value_and_accepted(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(env)
    assert message in str(info.value)


def test_bad_flag_names_the_flag() -> None:
    with pytest.raises(SettingsError, match="--port='x'"):
        load_settings({}, {"port": "x"})


def test_secret_never_shown() -> None:
    with pytest.raises(SettingsError) as info:
        load_settings({"AGENTMEM_JWT_SECRET": "tiny-secret"})
    assert "tiny-secret" not in str(info.value)


def test_configuration_document_lists_every_setting() -> None:
    document = (Path(__file__).parents[2] / "docs" / "configuration.md").read_text()
    assert configuration_table() in document, (
        "docs/configuration.md is out of date: paste gateway.settings.configuration_table()"
    )
