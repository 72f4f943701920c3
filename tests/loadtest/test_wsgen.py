"""The benchmark generator's protocol client against a real WebSocket server (websockets):
frames of every length encoding, split over reads or packed into one, pings, closes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
from websockets.asyncio.server import Server, ServerConnection, serve

from loadtest.bench.wsgen import FrameProtocol

# 125 and below, 126-65,535 and 65,536 and up take the three length encodings.
SIZES = [0, 1, 125, 126, 65_535, 65_536, 300_000]


class Received:
    """What a client was handed: one list per read that held messages, and its end."""

    def __init__(self) -> None:
        self.reads: list[list[bytes]] = []
        self.lost: asyncio.Future[Exception] = asyncio.get_running_loop().create_future()

    @property
    def messages(self) -> list[bytes]:
        return [m for read in self.reads for m in read]

    def on_lost(self, error: Exception) -> None:
        self.lost.set_result(error)


async def start(handler: Callable[[ServerConnection], object]) -> tuple[Server, int]:
    server = await serve(handler, "127.0.0.1", 0, max_size=None)  # type: ignore[arg-type]
    port = server.sockets[0].getsockname()[1]
    return server, port


@pytest.fixture
async def echo() -> AsyncIterator[int]:
    async def handler(connection: ServerConnection) -> None:
        async for message in connection:
            if message == "pings":
                pong = await connection.ping(b"are you there")
                await pong
                await connection.send("ponged")
            elif message == "close":
                await connection.close(4001, "bye")
            elif isinstance(message, str) and message.startswith("sizes"):
                for size in SIZES:
                    await connection.send(b"x" * size)
            else:
                await connection.send(message)

    server, port = await start(handler)
    async with server:
        yield port


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(10):
        while not condition():
            await asyncio.sleep(0.005)


async def test_every_length_encoding_arrives_whole_and_in_order(echo: int) -> None:
    got = Received()
    client = await FrameProtocol.open("127.0.0.1", echo, "/", got.reads.append, got.on_lost)
    client.send([b"sizes"])
    await until(lambda: len(got.messages) == len(SIZES))
    assert [len(m) for m in got.messages] == SIZES
    assert all(m == b"x" * len(m) for m in got.messages)
    client.close()


async def test_frames_sent_together_are_answered_and_handed_over_per_read(echo: int) -> None:
    got = Received()
    client = await FrameProtocol.open("127.0.0.1", echo, "/", got.reads.append, got.on_lost)
    sent = [f"message {n}".encode() for n in range(200)]
    client.send(sent)
    await until(lambda: len(got.messages) == len(sent))
    assert got.messages == sent
    # The echoes of one write arrive in fewer reads than messages: each read is one call.
    assert len(got.reads) < len(sent)
    client.close()


async def test_a_ping_is_answered_with_its_payload(echo: int) -> None:
    got = Received()
    client = await FrameProtocol.open("127.0.0.1", echo, "/", got.reads.append, got.on_lost)
    client.send([b"pings"])
    # The server sends "ponged" only once its ping's pong came back.
    await until(lambda: got.messages == [b"ponged"])
    client.close()


async def test_a_close_by_the_server_is_reported_once_with_its_code(echo: int) -> None:
    got = Received()
    client = await FrameProtocol.open("127.0.0.1", echo, "/", got.reads.append, got.on_lost)
    client.send([b"close"])
    async with asyncio.timeout(10):
        error = await got.lost
    assert isinstance(error, ConnectionError) and "0fa1" in str(error) and "bye" in str(error)
    client.close()


async def test_our_own_close_is_not_reported(echo: int) -> None:
    got = Received()
    client = await FrameProtocol.open("127.0.0.1", echo, "/", got.reads.append, got.on_lost)
    client.close()
    await asyncio.sleep(0.2)
    assert not got.lost.done()


async def test_a_refused_upgrade_fails_the_open() -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n")
        await writer.drain()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    got = Received()
    async with server:
        with pytest.raises(ConnectionError, match="403"):
            await FrameProtocol.open("127.0.0.1", port, "/", got.reads.append, got.on_lost)
    assert not got.lost.done()
