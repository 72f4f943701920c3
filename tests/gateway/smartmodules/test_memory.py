"""Memory stays flat over millions of records.

SDK-built modules leak every output buffer unless the host frees it; the engine calls
``dealloc`` after copying. A module that leaks anyway is recycled once its memory
passes the engine's threshold.
"""

from __future__ import annotations

from pathlib import Path

from sm_helpers import DIST, FIXTURES, LEAKY_FILTER, event, make_records, wat

from gateway.smartmodules import SmartModuleEngine

MiB = 1024 * 1024


def test_two_million_records_through_an_sdk_style_module_keep_memory_flat(tmp_path: Path) -> None:
    # Recycling disabled: only dealloc can keep this module's memory from growing.
    engine = SmartModuleEngine(tmp_path, recycle_memory_bytes=10**12)
    chain = engine.chain([engine.load(FIXTURES / "sdk_map.wasm")])
    batch = make_records([b"m%07d" % i for i in range(2000)])
    sizes = []
    for call in range(1000):  # 2,000,000 records
        out = chain.process(batch)
        if call % 100 == 99:
            sizes.append(chain.memory_bytes())
    assert out.records[-1].value == b"M0001999"
    assert chain.stats.records_out == 2_000_000 and chain.stats.recycles == 0
    # Growth, if any, stops after the first calls: the last 900k records add nothing.
    assert sizes[-1] == sizes[0], sizes
    assert sizes[-1] < 4 * MiB

    # The same module without the engine's dealloc calls grows with every call.
    other = SmartModuleEngine(tmp_path, recycle_memory_bytes=10**12)
    module = other.load(FIXTURES / "sdk_map.wasm")
    module.has_dealloc = False
    leaking = other.chain([module])
    for _ in range(100):
        leaking.process(batch)
    assert leaking.memory_bytes() > sizes[-1] + 2 * MiB


def test_a_leaking_module_is_recycled_before_it_grows_unbounded(tmp_path: Path) -> None:
    records = make_records([b"x" * 1000] * 100)  # each call leaks ~100 KB
    leaky = wat(LEAKY_FILTER)

    unchecked = SmartModuleEngine(tmp_path, recycle_memory_bytes=10**12)
    chain = unchecked.chain([unchecked.load(leaky, name="leaky")])
    for _ in range(100):
        chain.process(records)
    assert chain.memory_bytes() > 9 * MiB  # the leak is real

    engine = SmartModuleEngine(tmp_path, recycle_memory_bytes=2 * MiB)
    chain = engine.chain([engine.load(leaky, name="leaky")])
    peak = 0
    for _ in range(300):
        assert chain.process(records).records == []
        peak = max(peak, chain.memory_bytes())
    assert chain.stats.recycles >= 10
    assert peak <= 3 * MiB


def test_the_projects_event_filter_stays_flat(tmp_path: Path) -> None:
    engine = SmartModuleEngine(tmp_path, recycle_memory_bytes=10**12)
    chain = engine.chain([(engine.load(DIST / "event-filter.wasm"), {"min_importance": 0.5})])
    batch = make_records([event(importance=(i % 10) / 10, id=f"e{i}") for i in range(1000)])
    chain.process(batch)
    first = chain.memory_bytes()
    for _ in range(200):
        assert len(chain.process(batch).records) == 500
    assert chain.memory_bytes() == first
