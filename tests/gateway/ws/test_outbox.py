"""The send queue's order and bounds when deliveries may skip it (``Outbox`` with ``direct``).

The queue is sans-I/O apart from its writer task: these tests give it a ``write`` that
records what a connection would send (and can be held, like a peer that stops reading) and
a ``direct`` that takes or refuses a frame, as ``Session._direct`` does."""

from __future__ import annotations

import asyncio

from gateway.ws.outbox import Outbox


class Connection:
    """What reached the peer, in order, and a switch for the socket pushing back."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.direct_calls: list[list[bytes]] = []
        self.accepts_direct = True
        self.release = asyncio.Event()
        self.release.set()

    async def write(self, frames: list[bytes]) -> None:
        await self.release.wait()
        self.sent.extend(frames)

    def direct(self, frames: list[bytes]) -> bool:
        self.direct_calls.append(list(frames))
        if not self.accepts_direct:
            return False
        self.sent.extend(frames)
        return True


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_delivery_to_an_idle_queue_is_sent_at_once() -> None:
    peer = Connection()
    outbox = Outbox(peer.write, max_frames=4, max_bytes=1_000, direct=peer.direct)
    assert outbox.offer(b"a")
    # No writer task has run: the frame went straight out.
    assert peer.sent == [b"a"] and outbox.depth == 0 and outbox.sent_frames == 1


async def test_replies_of_one_pass_go_out_together_without_the_writer() -> None:
    peer = Connection()
    calls = peer.direct_calls
    outbox = Outbox(peer.write, max_frames=4, max_bytes=1_000, direct=peer.direct)
    for reply in (b"ack-1", b"ack-2", b"ack-3"):
        outbox.put(reply)
    assert peer.sent == [] and outbox.depth == 3  # sent in the loop's next pass
    await settle()
    # No writer task exists: one scheduled call sent all three in one write.
    assert calls == [[b"ack-1", b"ack-2", b"ack-3"]]
    assert outbox.depth == 0 and outbox.sent_frames == 3 and outbox.has_room()
    outbox.put(b"ack-4")
    await settle()
    assert calls[-1] == [b"ack-4"] and peer.sent[-1] == b"ack-4"


async def test_replies_the_socket_refuses_are_written_by_the_writer() -> None:
    peer = Connection()
    peer.accepts_direct = False  # the socket pushes back
    outbox = Outbox(peer.write, max_frames=4, max_bytes=1_000, direct=peer.direct)
    outbox.put(b"ack-1")
    outbox.put(b"ack-2")
    await settle()
    assert peer.sent == [] and outbox.depth == 2  # refused, and no writer yet
    writer = asyncio.create_task(outbox.run())
    try:
        await settle()
        assert peer.sent == [b"ack-1", b"ack-2"] and outbox.depth == 0
    finally:
        outbox.close()
        await writer


async def test_frames_queued_or_in_write_keep_their_place() -> None:
    peer = Connection()
    outbox = Outbox(peer.write, max_frames=8, max_bytes=1_000, direct=peer.direct)
    writer = asyncio.create_task(outbox.run())
    try:
        peer.release.clear()  # the peer stops reading
        outbox.put(b"reply-1")  # replies always queue
        assert outbox.offer(b"event-1")  # behind the reply: queued, not sent ahead of it
        await settle()  # the writer now holds both in a write that does not return
        assert outbox.offer(b"event-2")  # a write is in progress: queued behind it
        assert peer.sent == []
        peer.release.set()
        await settle()
        assert peer.sent == [b"reply-1", b"event-1", b"event-2"]
        assert outbox.offer(b"event-3")  # idle again: straight out
        assert peer.sent[-1] == b"event-3" and outbox.depth == 0
    finally:
        outbox.close()
        await writer


async def test_a_refused_direct_send_falls_back_to_the_bounded_queue() -> None:
    peer = Connection()
    peer.accepts_direct = False  # the socket pushes back
    peer.release.clear()
    outbox = Outbox(peer.write, max_frames=3, max_bytes=1_000, direct=peer.direct)
    writer = asyncio.create_task(outbox.run())
    try:
        assert [outbox.offer(b"%d" % i) for i in range(5)] == [True, True, True, False, False]
        assert not outbox.has_room() and peer.sent == []
        peer.release.set()
        await settle()
        assert peer.sent == [b"0", b"1", b"2"]
    finally:
        outbox.close()
        await writer


async def test_offer_all_sends_a_batch_to_an_idle_queue_in_one_call() -> None:
    peer = Connection()
    calls = peer.direct_calls
    outbox = Outbox(peer.write, max_frames=4, max_bytes=1_000, direct=peer.direct)
    assert outbox.offer_all([b"a", b"b", b"c"])
    assert calls == [[b"a", b"b", b"c"]] and peer.sent == [b"a", b"b", b"c"]
    assert outbox.depth == 0 and outbox.sent_frames == 3


async def test_offer_all_takes_all_or_nothing_and_keeps_order_behind_replies() -> None:
    peer = Connection()
    peer.release.clear()
    outbox = Outbox(peer.write, max_frames=4, max_bytes=1_000, direct=peer.direct)
    writer = asyncio.create_task(outbox.run())
    try:
        outbox.put(b"reply")
        assert outbox.offer_all([b"e1", b"e2"])  # behind the reply: queued, in order
        assert outbox.depth == 3 and peer.sent == []
        assert not outbox.offer_all([b"e3", b"e4"])  # room for one of two: neither taken
        assert outbox.depth == 3
        assert outbox.offer(b"e3")  # one by one, what fits still goes
        assert not outbox.offer(b"e4")
        peer.release.set()
        await settle()
        assert peer.sent == [b"reply", b"e1", b"e2", b"e3"]
    finally:
        outbox.close()
        await writer


async def test_offer_all_respects_the_byte_bound() -> None:
    peer = Connection()
    peer.accepts_direct = False  # the socket pushes back: everything goes to the queue
    outbox = Outbox(peer.write, max_frames=100, max_bytes=10, direct=peer.direct)
    assert outbox.offer_all([b"1234", b"5678"])  # 8 of 10 bytes
    assert not outbox.offer_all([b"ab", b"cd"])  # 12 bytes: neither taken
    assert outbox.depth == 2 and peer.sent == []
