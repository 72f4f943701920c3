"""Fan-out with SmartModule filters: 10,000 subscriptions on a few distinct chains.

    python -m loadtest.bench.fanout_chains [--subscriptions 10000] [--chains 4] [--records 20000]

Runs the gateway's real feed, subscriptions, chains and send queues in one process, with
sessions whose sockets are replaced by a counter (the socket cost is measured by
``ws_gateway``). Reports records/s through the feed, deliveries/s, and how many chain
evaluations ran per batch: with shared chains that is the number of distinct chains, not
the number of subscriptions. The same run without sharing (one chain instance per
subscription, on fewer subscriptions) is the comparison, and the same subscriptions with no
filter at all the ceiling.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec

from gateway.auth.tokens import Principal
from gateway.smartmodules import SmartModuleEngine, SmartModuleError, SmartModuleRegistry
from gateway.streamlog.embedded import EmbeddedLog
from gateway.streamlog.interface import NewRecord, TopicSpec
from gateway.ws.fanout import Subscription, TopicFeed
from gateway.ws.filters import FilterChain, FilterChains
from gateway.ws.frames import Filter
from gateway.ws.outbox import Outbox
from loadtest.bench.report import machine, print_table, write_json


class CountingSession:
    """A session whose socket is a counter: what the fan-out needs, nothing else."""

    binary = False

    def __init__(self, principal: Principal) -> None:
        self.principal = principal
        self.delivered = 0

        async def write(frames: list[bytes]) -> None:
            return None

        self.outbox = Outbox(write, max_frames=1_000_000, max_bytes=1 << 40)

    def count_delivery(self, n: int) -> None:
        self.delivered += n

    def subscription_failed(self, name: str, error: SmartModuleError) -> None:
        raise error


def events(count: int) -> list[NewRecord]:
    encoder = msgspec.json.Encoder()
    return [
        NewRecord(
            value=encoder.encode(
                {
                    "type": "user_interaction",
                    "id": f"e{i}",
                    "organization_id": "bench",
                    "user_id": "watcher",
                    "timestamp": 1_763_000_000_000 + i,
                    "payload": {"action": f"a{i}", "importance": (i % 10) / 10, "context": {}},
                }
            ),
            key=b"watcher",
        )
        for i in range(count)
    ]


async def run(
    subscriptions: int, distinct: int, records: int, share: bool, filtered: bool = True
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        log = EmbeddedLog(Path(tmp) / "log.sqlite3", topics=[TopicSpec(name="t", partitions=4)])
        await log.open()
        registry = SmartModuleRegistry(SmartModuleEngine(Path(tmp) / "cache"))
        chains = FilterChains(registry)
        principal = Principal("watcher", "bench", frozenset({"subscribe"}), time.time() + 3600)
        feed = TopicFeed(log, "t", lambda _: None)
        await feed.start()
        sessions = [CountingSession(principal) for _ in range(subscriptions)]
        evaluations = 0
        built: list[FilterChain] = []
        for n, session in enumerate(sessions):
            if not filtered:
                plain = Subscription(session, f"s{n}", feed, dict(feed.positions), None)  # type: ignore[arg-type]
                feed.join(plain)
                feed.attach(plain)
                continue
            threshold = round(0.1 + 0.8 * (n % distinct) / max(1, distinct - 1), 2)
            filters = [Filter(smartmodule="event-filter", params={"min_importance": threshold})]
            chain = chains.build(filters)
            assert chain is not None
            if not share:
                chain = FilterChain(
                    registry.chain(
                        [{"smartmodule": "event-filter", "params": {"min_importance": threshold}}]
                    ),
                    False,
                )
            built.append(chain)
            subscription = Subscription(session, f"s{n}", feed, dict(feed.positions), chain)  # type: ignore[arg-type]
            feed.join(subscription)
            feed.attach(subscription)
        distinct_instances = len({id(c.instance) for c in built})
        originals = {id(c): c.run for c in built}

        def counting(chain: FilterChain) -> Any:
            def run_counted(batch: Any) -> Any:
                nonlocal evaluations
                evaluations += 1
                return originals[id(chain)](batch)

            return run_counted

        for chain in {id(c): c for c in built}.values():
            chain.run = counting(chain)  # type: ignore[method-assign]
        payload = events(records)
        started = time.perf_counter()
        for start in range(0, records, 1000):
            await log.produce_batch("t", payload[start : start + 1000])
        while any(
            feed.positions.get(p, 0) < e.end_offset
            for p, e in enumerate((await log.describe_topic("t")).partitions)
        ):
            await asyncio.sleep(0.001)
        elapsed = time.perf_counter() - started
        delivered = sum(s.delivered for s in sessions)
        await feed.stop()
        await log.close()
        batches = max(1, records // 1000)
        return {
            "subscriptions": subscriptions,
            "filters": "event-filter" if filtered else "none (ceiling)",
            "distinct_chains": distinct if filtered else 0,
            "shared": share,
            "chain_instances": distinct_instances,
            "records_per_s": records / elapsed,
            "deliveries_per_s": delivered / elapsed,
            "evaluations": evaluations,
            "evaluations_per_1000_records": evaluations / batches,
        }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--subscriptions", type=int, default=10_000)
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--unshared-subscriptions", type=int, default=200)
    parser.add_argument("--out")
    args = parser.parse_args()
    rows = [
        asyncio.run(run(args.subscriptions, args.chains, args.records, True)),
        asyncio.run(run(args.unshared_subscriptions, args.chains, args.records // 10, False)),
        # Without a filter every subscription gets every record: half the records give
        # about as many deliveries as the filtered run (its filters keep about half).
        asyncio.run(run(args.subscriptions, args.chains, args.records // 2, True, filtered=False)),
    ]
    print_table("Subscriptions with SmartModule filters (event-filter, one topic)", rows)
    info = machine()
    print(f"\nmachine: {info}")
    write_json(args.out, {"machine": info, "results": rows})


if __name__ == "__main__":
    main()
