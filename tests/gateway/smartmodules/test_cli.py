"""``agentmem-gateway smartmodule list|test`` through its handlers and as a process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from sm_helpers import FIXTURES, event

from gateway.cli.smartmodule import main, settings_from_env

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(autouse=True)
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("AGENTMEM_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("AGENTMEM_SMARTMODULE_DIR", raising=False)
    return tmp_path / "data"


def test_settings_from_env(tmp_path: Path) -> None:
    settings = settings_from_env({"AGENTMEM_SMARTMODULE_DIR": f"/a{':'}/b"})
    assert settings.cache_dir == Path("data/smartmodule-cache")
    assert settings.directories == (Path("/a"), Path("/b"))


def test_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "event-filter (filter)" in out
    assert "-e min_importance=...  a number between 0 and 1, default 0.7" in out
    assert "event-aggregate (aggregate)" in out and "params: none" in out


def test_list_json_includes_configured_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "upper.wasm").write_bytes((FIXTURES / "sdk_map.wasm").read_bytes())
    monkeypatch.setenv("AGENTMEM_SMARTMODULE_DIR", str(extra))
    assert main(["list", "--json"]) == 0
    infos = {i["name"]: i for i in json.loads(capsys.readouterr().out)}
    assert infos["upper"]["kind"] == "map" and infos["upper"]["params"] is None
    assert infos["memory-filter"]["builtin"] is True


def test_test_prints_each_output_value(capsys: pytest.CaptureFixture[str], data_dir: Path) -> None:
    kept = event(importance=0.9)
    code = main(
        [
            "test",
            "event-filter",
            "-e",
            "min_importance=0.8",
            "--text",
            kept,
            "--text",
            event(importance=0.1),
        ]
    )
    assert code == 0
    assert capsys.readouterr().out == kept + "\n"
    assert list((data_dir / "smartmodule-cache").glob("*.cwasm"))


def test_test_key_value_and_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "in.txt"
    path.write_text("ab\n\ncd\n")
    code = main(
        [
            "test",
            str(FIXTURES / "sdk_map.wasm"),
            "--file",
            str(path),
            "--key",
            "k1",
            "--key-value",
            "--key-separator",
            " => ",
        ]
    )
    assert code == 0
    assert capsys.readouterr().out == "k1 => AB\nk1 => CD\n"
    assert main(["test", str(FIXTURES / "sdk_map.wasm"), "--file", str(path), "--raw"]) == 0
    assert capsys.readouterr().out == "AB\n\nCD\n\n"


def test_test_aggregate_initial(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(
            [
                "test",
                str(FIXTURES / "sdk_aggregate.wasm"),
                "--aggregate-initial",
                "10",
                "--text",
                "1",
                "--text",
                "2",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out == "11\n13\n"


def test_test_soft_error_prints_successes_then_fails(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["test", str(FIXTURES / "sdk_filter_map.wasm"), "--text", "4", "--text", "x"])
    captured = capsys.readouterr()
    assert code == 1
    assert captured.out == "2\n"
    assert "error: SmartModule 'sdk_filter_map' failed on the record at offset 1" in captured.err


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["test", "event-filter"], 2, "no input records"),
        (["test", "event-filter", "-e", "oops", "--text", "{}"], 2, "-e expects KEY=VALUE"),
        (["test", "nope", "--text", "x"], 1, "unknown SmartModule 'nope'"),
        (
            ["test", "event-filter", "-e", "types=[", "--text", "x"],
            1,
            "param 'types' of SmartModule 'event-filter' must be a comma list",
        ),
        (["test", str(FIXTURES / "sdk_misbehave.wasm"), "--text", "panic"], 1, "trapped in filter"),
    ],
)
def test_test_errors_go_to_stderr(
    argv: list[str], code: int, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == code
    captured = capsys.readouterr()
    assert captured.out == ""
    assert message in captured.err


def test_runs_as_a_process(data_dir: Path) -> None:
    script = "import sys; from gateway.cli.smartmodule import main; sys.exit(main(sys.argv[1:]))"
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            "test",
            "data-transform",
            "--text",
            event(payload={"action": "wrote a poem"}),
            "--text",
            "not json",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert json.loads(result.stdout)["content"] == "wrote a poem"
    assert "value is not a JSON object" in result.stderr
