"""The engine with real modules: kinds, versions, params, chains, look-back, caching."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from sm_helpers import BASE_TS, DIST, FIXTURES, make_records, values, wat

from gateway.smartmodules import (
    ChainLink,
    Kind,
    LookBack,
    SmartModule,
    SmartModuleEngine,
    SmartModuleError,
    SmartModuleInitError,
    SmartModuleLoadError,
    SmartModuleLookBackError,
    SmartModuleRecordError,
)

Load = Callable[[str], SmartModule]


def test_kind_and_exports_are_detected(fixture_module: Load) -> None:
    kinds = {
        "sdk_map": Kind.MAP,
        "sdk_filter_map": Kind.FILTER_MAP,
        "sdk_array_map": Kind.ARRAY_MAP,
        "sdk_aggregate": Kind.AGGREGATE,
        "sdk_look_back": Kind.FILTER,
    }
    for name, kind in kinds.items():
        module = fixture_module(name)
        assert module.kind == kind
        assert module.has_dealloc
    assert fixture_module("sdk_look_back").has_look_back
    assert fixture_module("wasi_map").uses_wasi


def test_map_keeps_key_offset_and_timestamp(
    engine: SmartModuleEngine, fixture_module: Load
) -> None:
    chain = engine.chain([fixture_module("sdk_map")])
    records = make_records(["ab", "cd"], first_offset=40, key=b"k")
    out = chain.process(records).records
    assert [(r.offset, r.timestamp, r.key, r.value) for r in out] == [
        (40, BASE_TS, b"k", b"AB"),
        (41, BASE_TS + 1, b"k", b"CD"),
    ]
    assert {(r.topic, r.partition) for r in out} == {("events", 0)}


def test_array_map_outputs_sit_at_the_batch_base(
    engine: SmartModuleEngine, fixture_module: Load
) -> None:
    chain = engine.chain([fixture_module("sdk_array_map")])
    out = chain.process(make_records(["a,b", "c"], first_offset=10)).records
    assert values(out) == [b"a", b"b", b"c"]
    assert [(r.offset, r.timestamp) for r in out] == [(10, BASE_TS)] * 3


def test_filter_map_soft_error_delivers_successes_then_the_failing_offset(
    engine: SmartModuleEngine, fixture_module: Load
) -> None:
    chain = engine.chain([fixture_module("sdk_filter_map")])
    records = make_records(["2", "3", "4", "x", "6"], first_offset=500)
    with pytest.raises(SmartModuleRecordError) as caught:
        chain.process(records)
    error = caught.value
    assert error.code == "smartmodule_record_error"
    assert values(error.successes) == [b"1", b"2"]
    assert (error.offset, error.topic, error.partition) == (503, "events", 0)
    assert error.kind == "filter_map" and error.value == b"x"
    assert "invalid digit" in error.hint and "offset 503" in str(error)
    assert [r.offset for r in error.remaining] == [504]
    # A soft error does not break the chain: go on after the bad record.
    assert values(chain.process(error.remaining).records) == [b"3"]
    assert chain.stats.recycles == 0


def test_aggregate_carries_state_across_batches(
    engine: SmartModuleEngine, fixture_module: Load
) -> None:
    chain = engine.chain([fixture_module("sdk_aggregate")], aggregate_initial=b"100")
    first = chain.process(make_records(["1", "2"]))
    assert values(first.records) == [b"101", b"103"] and first.accumulator == b"103"
    second = chain.process(make_records(["10"], first_offset=2))
    assert values(second.records) == [b"113"] and second.accumulator == b"113"
    # A new chain starts again from its own initial accumulator.
    fresh = engine.chain([fixture_module("sdk_aggregate")])
    assert values(fresh.process(make_records(["5"])).records) == [b"5"]


@pytest.mark.parametrize("version", [21, 22, 23, 24, 25])
def test_every_supported_version_reaches_the_module(tmp_path: Path, version: int) -> None:
    engine = SmartModuleEngine(tmp_path, version=version)
    module = engine.load(FIXTURES / "sdk_position_map.wasm")
    chain = engine.chain([(module, {"a": "1"})])
    out = chain.process(make_records(["v"], first_offset=9, first_ts=BASE_TS + 5))
    # Version 21 carries no base timestamp: the module sees only the delta.
    ts = BASE_TS + 5 if version >= 22 else 0
    assert (
        out.records[0].value
        == f"offset=9 timestamp={ts} version={version} params=a=1 value=v".encode()
    )


def test_offsets_and_timestamps_far_apart_still_arrive_intact(
    engine: SmartModuleEngine, fixture_module: Load
) -> None:
    # Deltas past the i32 range would be corrupted by Fluvio's encoder: new batches.
    records = make_records(["a"], first_offset=5) + make_records(
        ["b"], first_offset=3_000_000_000, first_ts=BASE_TS + 40 * 86_400_000
    )
    out = engine.chain([fixture_module("sdk_position_map")]).process(records).records
    assert [(r.offset, r.timestamp) for r in out] == [
        (5, BASE_TS),
        (3_000_000_000, BASE_TS + 40 * 86_400_000),
    ]
    assert out[1].value.startswith(
        f"offset=3000000000 timestamp={BASE_TS + 40 * 86_400_000}".encode()
    )


def test_records_of_several_partitions_keep_their_place(
    engine: SmartModuleEngine, fixture_module: Load
) -> None:
    records = (
        make_records(["a"], partition=0)
        + make_records(["b"], partition=1)
        + make_records(["c"], partition=0, first_offset=1)
    )
    out = engine.chain([fixture_module("sdk_map")]).process(records).records
    assert [(r.partition, r.offset, r.value) for r in out] == [
        (0, 0, b"A"),
        (1, 0, b"B"),
        (0, 1, b"C"),
    ]


def test_init_errors_carry_the_module_hint(engine: SmartModuleEngine, fixture_module: Load) -> None:
    with pytest.raises(SmartModuleInitError) as caught:
        engine.chain([(fixture_module("sdk_position_map"), {"fail": "please"})])
    assert caught.value.status == -2
    assert caught.value.hint == "asked to fail: please"
    assert "sdk_position_map" in str(caught.value) and "asked to fail" in str(caught.value)


def test_chain_feeds_successes_forward(engine: SmartModuleEngine, fixture_module: Load) -> None:
    chain = engine.chain(
        [
            fixture_module("sdk_filter_map"),
            fixture_module("sdk_map"),
            fixture_module("sdk_position_map"),
        ]
    )
    out = chain.process(make_records(["4", "5", "8"], first_offset=20)).records
    assert [r.offset for r in out] == [20, 22]
    assert out[0].value.endswith(b"value=2") and out[1].value.endswith(b"value=4")


def test_soft_error_mid_chain_still_runs_the_rest_of_the_chain(
    engine: SmartModuleEngine, fixture_module: Load
) -> None:
    # Unlike the SPU, records before the failure still pass the later modules.
    chain = engine.chain([fixture_module("sdk_filter_map"), fixture_module("sdk_position_map")])
    with pytest.raises(SmartModuleRecordError) as caught:
        chain.process(make_records(["2", "x", "4"]))
    assert values(caught.value.successes) == [
        f"offset=0 timestamp={BASE_TS} version=24 params= value=1".encode()
    ]
    assert caught.value.module == "sdk_filter_map" and caught.value.offset == 1


def test_look_back_sees_history_once_and_survives_recycling(
    engine: SmartModuleEngine, fixture_module: Load
) -> None:
    link = ChainLink(fixture_module("sdk_look_back"), {"last": "2"}, look_back=LookBack(last=2))
    chain = engine.chain([link])
    need = chain.history_needed
    assert need is not None and need.last == 2
    history = make_records(["50", "7", "9"])
    chain.look_back(history)  # selects the last two: max seen is 9
    assert values(chain.process(make_records(["8", "10", "3", "11"])).records) == [b"10", b"11"]


def test_look_back_failure_names_the_offset(
    engine: SmartModuleEngine, fixture_module: Load
) -> None:
    chain = engine.chain([ChainLink(fixture_module("sdk_look_back"), look_back=LookBack(last=5))])
    with pytest.raises(SmartModuleLookBackError) as caught:
        chain.look_back(make_records(["1", "oops", "3"], first_offset=70))
    # Like the SPU, look-back records arrive with base offset 0: the offset is relative.
    assert caught.value.status == -99 and caught.value.offset == 1
    assert "invalid digit" in caught.value.hint


def test_look_back_by_age(engine: SmartModuleEngine, fixture_module: Load) -> None:
    chain = engine.chain(
        [ChainLink(fixture_module("sdk_look_back"), look_back=LookBack(age_ms=100))]
    )
    history = make_records(["90", "5"], ts_step=1000)  # 90 is 1 s older than 5
    chain.look_back(history, now_ms=BASE_TS + 1050)
    assert values(chain.process(make_records(["6", "80"])).records) == [b"6", b"80"]


def test_wasi_module_runs_and_writes_to_stderr(
    engine: SmartModuleEngine, fixture_module: Load, capfd: pytest.CaptureFixture[str]
) -> None:
    chain = engine.chain([fixture_module("wasi_map")])
    out = chain.process(make_records(["abc", "xy"])).records
    assert values(out) == [b"cba", b"yx"]
    assert "wasi_map: 2 records" in capfd.readouterr().err


def test_prepared_input_serves_several_chains(
    engine: SmartModuleEngine, fixture_module: Load
) -> None:
    prepared = engine.prepare(make_records(["2", "4"]))
    a = engine.chain([fixture_module("sdk_map")]).process(prepared)
    b = engine.chain([fixture_module("sdk_filter_map")]).process(prepared)
    assert values(a.records) == [b"2", b"4"] and values(b.records) == [b"1", b"2"]


def test_chain_spec_identifies_identical_chains(
    engine: SmartModuleEngine, fixture_module: Load
) -> None:
    mod = fixture_module("sdk_position_map")
    a = engine.spec([(mod, {"x": "1", "y": "2"})])
    b = engine.spec([(mod, {"y": "2", "x": "1"})])
    c = engine.spec([(mod, {"x": "2"})])
    assert a == b and hash(a) == hash(b) and a.key == b.key
    assert a != c and a.key != c.key
    assert a.shareable
    assert engine.chain([(mod, {"x": "1", "y": "2"})]).spec == a
    agg = engine.spec([fixture_module("sdk_aggregate")], aggregate_initial=b"1")
    assert not agg.shareable
    assert agg != engine.spec([fixture_module("sdk_aggregate")], aggregate_initial=b"2")


def test_compiled_modules_are_cached_on_disk(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = SmartModuleEngine(cache)
    module = first.load(DIST / "event-filter.wasm")
    assert first.compiler.compiled == 1
    assert len(list(cache.glob(f"{module.digest}.wasmtime-*.cwasm"))) == 1
    second = SmartModuleEngine(cache)  # a restart
    again = second.load(DIST / "event-filter.wasm")
    assert (second.compiler.compiled, second.compiler.deserialized) == (1 - 1, 1)
    assert again.digest == module.digest
    chain = second.chain([(again, {"min_importance": "0"})])
    assert len(chain.process(make_records(['{"a":1}'])).records) == 1
    # A damaged cache file is recompiled, not trusted.
    path = next(cache.glob("*.cwasm"))
    path.write_bytes(b"garbage")
    third = SmartModuleEngine(cache)
    third.load(DIST / "event-filter.wasm")
    assert third.compiler.compiled == 1


def test_same_module_loads_once_per_engine(tmp_path: Path) -> None:
    engine = SmartModuleEngine(tmp_path)
    assert engine.load(DIST / "event-filter.wasm") is engine.load(DIST / "event-filter.wasm")
    assert engine.compiler.compiled == 1


INVALID = [
    (b"not wasm at all", "not a valid WebAssembly module"),
    (wat('(module (memory (export "memory") 1))'), "none of the transform functions"),
    (
        wat(
            '(module (import "env" "copy_records" (func (param i32 i32)))'
            '(func (export "filter") (param i32 i32 i32) (result i32) i32.const 0)'
            '(func (export "alloc") (param i32) (result i32) i32.const 0))'
        ),
        "does not export its memory",
    ),
    (
        wat(
            '(module (memory (export "memory") 1)'
            '(func (export "filter") (param i32 i32 i32) (result i32) i32.const 0)'
            '(func (export "alloc") (param i32) (result i32) i32.const 0))'
        ),
        "does not import copy_records",
    ),
    (
        wat(
            '(module (import "env" "copy_records" (func (param i32 i32)))'
            '(import "env" "now" (func (result i64)))(memory (export "memory") 1)'
            '(func (export "map") (param i32 i32 i32) (result i32) i32.const 0)'
            '(func (export "alloc") (param i32) (result i32) i32.const 0))'
        ),
        "imports env.now",
    ),
    (
        wat(
            '(module (import "env" "copy_records" (func (param i32 i32)))(memory (export "memory") 1)'
            '(func (export "filter") (param i32) (result i32) i32.const 0)'
            '(func (export "alloc") (param i32) (result i32) i32.const 0))'
        ),
        "export filter has type (i32)->(i32)",
    ),
]


@pytest.mark.parametrize(("wasm", "problem"), INVALID)
def test_modules_that_break_the_contract_fail_at_load(
    engine: SmartModuleEngine, wasm: bytes, problem: str
) -> None:
    with pytest.raises(SmartModuleLoadError) as caught:
        engine.load(wasm, name="bad")
    assert problem in str(caught.value) and "'bad'" in str(caught.value)


def test_copy_records_is_found_under_any_module_name(engine: SmartModuleEngine) -> None:
    module = engine.load(
        wat(
            '(module (import "host" "copy_records" (func $c (param i32 i32)))(memory (export "memory") 1)'
            '(data (i32.const 8) "\\00\\00\\00\\00\\00")'
            '(func (export "filter") (param i32 i32 i32) (result i32) (call $c (i32.const 8) (i32.const 5)) i32.const 0)'
            '(func (export "alloc") (param i32) (result i32) i32.const 1024))'
        )
    )
    assert module.copy_records_modules == ("host",)
    assert engine.chain([module]).process(make_records(["a"])).records == []


def test_public_call_path_gives_the_same_results(tmp_path: Path) -> None:
    engine = SmartModuleEngine(tmp_path, direct_calls=False)
    chain = engine.chain([engine.load(FIXTURES / "sdk_filter_map.wasm")])
    assert values(chain.process(make_records(["2", "3", "10"])).records) == [b"1", b"5"]
    with pytest.raises(SmartModuleRecordError):
        chain.process(make_records(["y"]))


def test_engine_rejects_unsupported_settings(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="version 19"):
        SmartModuleEngine(tmp_path, version=19)
    with pytest.raises(ValueError, match="memory_limit_bytes"):
        SmartModuleEngine(tmp_path, memory_limit_bytes=1000)


def test_recycled_chain_replays_init_and_look_back(
    engine: SmartModuleEngine, fixture_module: Load
) -> None:
    look = ChainLink(fixture_module("sdk_look_back"), look_back=LookBack(last=10))
    chain = engine.chain([fixture_module("sdk_misbehave"), look])
    chain.look_back(make_records(["9"]))
    with pytest.raises(SmartModuleError):
        chain.process(make_records(["panic"]))
    assert chain.stats.recycles == 1
    # Fresh instances saw the same history again: 8 is still below what it remembers.
    assert values(chain.process(make_records(["8", "10"])).records) == [b"10"]
