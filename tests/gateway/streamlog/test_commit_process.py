"""The commit process: a child that dies is replaced, a parent that dies takes it along, and
signals meant for the gateway leave it alone."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import uvloop
from servers import GatewayProcess

from gateway.errors import Unavailable
from gateway.streamlog.embedded import EmbeddedLog
from gateway.streamlog.embedded.commit_process import CommitProcess
from gateway.streamlog.interface import Produced, TopicSpec

SPEC = TopicSpec(name="t", partitions=3)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it has exited all the same.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def commit_pid(log: EmbeddedLog) -> int:
    process = log._process  # the child is the point of these tests
    assert process is not None and process.pid
    return process.pid


async def test_a_killed_child_fails_its_commit_and_is_replaced(tmp_path: Path) -> None:
    await kill_the_child_while_producing(tmp_path)


def test_a_killed_child_is_replaced_on_uvloop(tmp_path: Path) -> None:
    # The gateway serves on uvloop, whose subprocess transports are not asyncio's.
    uvloop.run(kill_the_child_while_producing(tmp_path))


async def kill_the_child_while_producing(tmp_path: Path) -> None:
    async with EmbeddedLog(tmp_path / "log.sqlite3", topics=[SPEC]) as log:
        first = commit_pid(log)
        acked: list[Produced] = []
        failed: list[Unavailable] = []

        async def producer(n: int) -> None:
            for i in range(150):
                try:
                    acked.append(await log.produce("t", b"k%d" % n, b"v-%d-%d" % (n, i)))
                except Unavailable as error:
                    failed.append(error)

        async def killer() -> None:
            while len(acked) < 300:
                await asyncio.sleep(0.001)
            os.kill(commit_pid(log), signal.SIGKILL)

        await asyncio.gather(killer(), *(producer(n) for n in range(10)))
        assert failed, "the kill landed while no commit was in flight"
        assert all(error.temporary for error in failed)
        assert "commit process exited" in str(failed[0])
        assert commit_pid(log) != first
        assert not alive(first)
        assert log.writer_restarts == 1
        assert len(acked) + len(failed) == 1_500
        # Every acknowledged record is there, and offsets stay dense: a record of the killed
        # commit is either wholly written or not at all.
        for partition in range(SPEC.partitions):
            records = await log.read("t", partition, 0, 10_000)
            assert [r.offset for r in records] == list(range(len(records)))
        positions = {(r.partition, r.offset) for r in acked}
        written = {
            (p, r.offset) for p in range(SPEC.partitions) for r in await log.read("t", p, 0, 10_000)
        }
        assert positions <= written
        assert len(written) - len(positions) <= len(failed)


async def test_an_idempotency_key_of_a_lost_commit_is_written_once(tmp_path: Path) -> None:
    async with EmbeddedLog(tmp_path / "log.sqlite3", topics=[SPEC]) as log:
        first = await log.produce("t", b"k", b"v", idempotency_key="event-1")
        os.kill(commit_pid(log), signal.SIGKILL)
        # The next produce finds the child gone and starts another, which must know the key.
        again: Produced | None = None
        deadline = time.monotonic() + 10
        while again is None and time.monotonic() < deadline:
            try:
                again = await log.produce("t", b"k", b"v", idempotency_key="event-1")
            except Unavailable:
                await asyncio.sleep(0.05)
        assert again == Produced(first.partition, first.offset, first.timestamp, True)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
async def test_the_child_ignores_the_gateways_signals(tmp_path: Path, sig: signal.Signals) -> None:
    async with EmbeddedLog(tmp_path / "log.sqlite3", topics=[SPEC]) as log:
        pid = commit_pid(log)
        os.kill(pid, sig)
        await asyncio.sleep(0.2)
        assert alive(pid)
        await log.produce("t", None, b"after the signal")
        assert commit_pid(log) == pid


async def test_closing_the_log_ends_the_child(tmp_path: Path) -> None:
    log = EmbeddedLog(tmp_path / "log.sqlite3", topics=[SPEC])
    await log.open()
    pid = commit_pid(log)
    await log.produce("t", None, b"x")
    await log.close()
    assert not alive(pid)


def test_the_child_ends_when_its_gateway_is_killed(tmp_path: Path) -> None:
    script = (
        "import asyncio, sys\n"
        "from pathlib import Path\n"
        "from gateway.streamlog.embedded import EmbeddedLog\n"
        "from gateway.streamlog.interface import TopicSpec\n"
        "async def main():\n"
        "    log = EmbeddedLog(Path(sys.argv[1]), topics=[TopicSpec(name='t', partitions=1)])\n"
        "    await log.open()\n"
        "    await log.produce('t', None, b'x')\n"
        "    print('pid', log._process.pid, flush=True)\n"
        "    await asyncio.sleep(60)\n"
        "asyncio.run(main())\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path / "log.sqlite3")], stdout=subprocess.PIPE
    )
    try:
        assert parent.stdout is not None
        line = parent.stdout.readline()
        while not line.startswith(b"pid "):
            line = parent.stdout.readline()
        child = int(line.split()[1])
        assert alive(child)
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 10
        while alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(child)
    finally:
        parent.kill()
        parent.wait()


def test_a_served_gateway_replaces_its_commit_process(
    tmp_path: Path, make_token: Callable[..., str]
) -> None:
    (tmp_path / "data").mkdir()
    gateway = GatewayProcess(tmp_path / "data").start()
    try:
        assert gateway.proc is not None
        token = make_token()
        body = {
            "topic": "user-events",
            "event": {"type": "user_interaction", "payload": {"action": "x"}},
        }

        def publish() -> httpx.Response:
            return httpx.post(
                gateway.url + "/api/v1/stream/events",
                json=body,
                headers={"Authorization": f"Bearer {token}"},
                timeout=10,
            )

        assert publish().is_success
        [child] = children(gateway.proc.pid, "commit_process")
        os.kill(child, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while alive(child) and time.monotonic() < deadline:
            time.sleep(0.02)
        first = publish()
        assert first.is_success, first.text
        assert children(gateway.proc.pid, "commit_process") != [child]
        metrics = httpx.get(gateway.url + "/metrics", timeout=5).text
        assert "agentmem_log_writer_restarts 1.0" in metrics
    finally:
        gateway.stop()


def children(pid: int, marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == pid and marker.encode() in cmdline and alive(int(entry.name)):
            found.append(int(entry.name))
    return found


async def test_a_child_that_cannot_open_the_log_is_reported(tmp_path: Path) -> None:
    # A directory where the database file should be: the child's connection fails.
    process = CommitProcess(tmp_path, "process")
    with pytest.raises(Unavailable, match="could not open the log: unable to open database"):
        await process.start()
    outcome: asyncio.Future[object] = asyncio.get_running_loop().create_future()
    process.commit([(1, [(0, None, b"v", (), None)])], outcome.set_result)
    failed = await asyncio.wait_for(outcome, 10)
    assert isinstance(failed, Unavailable) and failed.temporary
    await process.close()
    assert process.pid is None


def test_the_child_refuses_an_unknown_durability(tmp_path: Path) -> None:
    child = "gateway.streamlog.embedded.commit_process"
    run = subprocess.run(
        [sys.executable, "-m", child, str(tmp_path / "log.sqlite3"), "sometimes"],
        capture_output=True,
        timeout=30,
    )
    assert run.returncode == 2
    assert b"durability 'sometimes': not process or power" in run.stdout
    assert not (tmp_path / "log.sqlite3").exists()
