"""Modules by name: the project's own, configured directories, params, filters."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from sm_helpers import DIST, FIXTURES, event, make_records, values

from gateway.smartmodules import (
    InvalidSmartModuleParams,
    Kind,
    SmartModuleEngine,
    SmartModuleLoadError,
    SmartModuleRegistry,
    UnknownSmartModule,
)

SOURCES = DIST.parent


def test_project_modules_are_listed_with_their_params(registry: SmartModuleRegistry) -> None:
    infos = {info.name: info for info in registry.list()}
    assert {name: info.kind for name, info in infos.items()} == {
        "data-transform": Kind.MAP,
        "event-aggregate": Kind.AGGREGATE,
        "event-filter": Kind.FILTER,
        "memory-filter": Kind.FILTER,
    }
    assert all(info.builtin and info.description for info in infos.values())
    params = infos["event-filter"].params
    assert params is not None
    assert [(p.name, p.type, p.default) for p in params] == [
        ("min_importance", "float", "0.7"),
        ("types", "list", None),
    ]
    assert infos["event-aggregate"].params == ()


def test_dist_matches_the_crates() -> None:
    crates = sorted(p.parent.name for p in SOURCES.glob("*/smartmodule.toml"))
    assert sorted(p.stem for p in DIST.glob("*.wasm")) == crates
    for name in crates:
        assert (DIST / f"{name}.toml").read_bytes() == (
            SOURCES / name / "smartmodule.toml"
        ).read_bytes()


def test_configured_directory_adds_and_overrides_modules(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    extra = tmp_path / "modules"
    extra.mkdir()
    shutil.copy(FIXTURES / "sdk_map.wasm", extra / "upper.wasm")
    shutil.copy(FIXTURES / "sdk_array_map.wasm", extra / "event-filter.wasm")
    (extra / "broken.wasm").write_bytes(b"\x00asm\x01\x00\x00\x00\x07\xff")
    (extra / "text.wasm").write_text("hello")
    registry = SmartModuleRegistry(SmartModuleEngine(tmp_path / "cache"), [extra])
    infos = {info.name: info for info in registry.list()}
    assert infos["upper"].kind == Kind.MAP and infos["upper"].params is None
    assert not infos["upper"].builtin
    assert infos["event-filter"].kind == Kind.ARRAY_MAP  # the directory wins
    assert "broken" not in infos and "text" not in infos
    assert any("skipping SmartModule" in m for m in caplog.messages)
    # Without a manifest any params pass, as strings.
    assert registry.validate("upper", {"a": 1, "b": True, "c": ["x", "y,z"]}) == {
        "a": "1",
        "b": "true",
        "c": '["x","y,z"]',
    }
    chain = registry.chain([{"smartmodule": "upper", "params": {"anything": "goes"}}])
    assert values(chain.process(make_records(["ok"])).records) == [b"OK"]


def test_unknown_names_list_the_known_ones(registry: SmartModuleRegistry) -> None:
    with pytest.raises(UnknownSmartModule) as caught:
        registry.chain([{"smartmodule": "nope"}])
    assert caught.value.code == "unknown_smartmodule" and caught.value.http_status == 404
    assert (
        "known SmartModules: data-transform, event-aggregate, event-filter, memory-filter"
        in str(caught.value)
    )


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        ([{"module": "event-filter"}], "filters[0] is not a SmartModule invocation"),
        ([{"smartmodule": "event-filter", "params": [1]}], "filters[0]"),
        (
            [
                {"smartmodule": "event-filter"},
                {"smartmodule": "event-filter", "params": {"types": {}}},
            ],
            "param 'types' must be a string, a number, a boolean or a list of strings, got {}",
        ),
        (
            [{"smartmodule": "memory-filter", "params": {"min_importance": "high"}}],
            "must be a number between 0 and 1, got 'high'",
        ),
        ([{"smartmodule": "event-filter", "look_back": {"last": 0}}], "look-back"),
    ],
)
def test_malformed_filters_are_rejected(
    registry: SmartModuleRegistry, filters: list[dict[str, Any]], message: str
) -> None:
    with pytest.raises(InvalidSmartModuleParams, match=re.escape(message)):
        registry.links(filters)


def test_specs_of_equivalent_filters_are_equal(registry: SmartModuleRegistry) -> None:
    a = registry.spec([{"smartmodule": "event-filter", "params": {"min_importance": 0.8}}])
    b = registry.spec([{"smartmodule": "event-filter", "params": {"min_importance": "0.8"}}])
    c = registry.spec([{"smartmodule": "event-filter"}])
    assert a == b and a != c


def test_filters_carry_aggregate_initial(registry: SmartModuleRegistry) -> None:
    chain = registry.chain(
        [{"smartmodule": "event-aggregate", "aggregate_initial": '{"event_count": 41}'}]
    )
    assert b'"event_count":42' in chain.process(make_records([event()])).records[0].value


def test_resolve_by_name_or_path(registry: SmartModuleRegistry) -> None:
    assert registry.resolve("event-filter").name == "event-filter"
    by_path = registry.resolve(FIXTURES / "sdk_map.wasm")
    assert by_path.name == "sdk_map" and by_path.params is None
    with pytest.raises(UnknownSmartModule):
        registry.resolve("nothing-here")
    with pytest.raises(SmartModuleLoadError, match="cannot read"):
        registry.resolve("missing.wasm")


def test_manifest_that_contradicts_the_exports_is_refused(tmp_path: Path) -> None:
    shutil.copy(FIXTURES / "sdk_map.wasm", tmp_path / "liar.wasm")
    (tmp_path / "liar.toml").write_text('name = "liar"\nkind = "filter"\n')
    engine = SmartModuleEngine(None)
    with pytest.raises(
        SmartModuleLoadError, match="manifest says kind filter but its exports make it map"
    ):
        engine.load(tmp_path / "liar.wasm")
    (tmp_path / "liar.toml").write_text('name = "liar"\nkind = "sorter"\n')
    with pytest.raises(SmartModuleLoadError, match=r"manifest .*liar\.toml is invalid"):
        engine.load(tmp_path / "liar.wasm")
