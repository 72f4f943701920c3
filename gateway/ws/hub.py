"""The hub: every session of this process, the topic feeds, and the session clock.

One timer task looks after all sessions once a second (heartbeats, token expiry, auth
timeout, slow consumers) instead of a timer per session, so idle sessions cost no wakeups
of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter

import structlog

from gateway.auth.tokens import TokenAuthority
from gateway.metrics import LoopCounter, Metrics
from gateway.settings import Settings
from gateway.streamlog.interface import StreamLog
from gateway.waiting import wait_event
from gateway.ws import frames as f
from gateway.ws.codes import CloseCode
from gateway.ws.fanout import TopicFeed
from gateway.ws.filters import FilterChain, FilterChains
from gateway.ws.session import Session

logger = structlog.get_logger(__name__)


class Hub:
    def __init__(
        self,
        settings: Settings,
        log: StreamLog,
        tokens: TokenAuthority,
        metrics: Metrics,
        chains: FilterChains,
    ) -> None:
        self.settings = settings
        self.chains = chains
        self.log = log
        self.tokens = tokens
        self.metrics = metrics
        # Counters every session bumps per frame, looked up once for all of them.
        self.frames_in: dict[str, LoopCounter.Child] = {
            op: metrics.child(metrics.ws_frames_in, op) for op in f.CLIENT_OPS
        }
        self.acks_out: LoopCounter.Child = metrics.child(metrics.ws_frames_out, "ack")
        self.sessions: set[Session] = set()
        self.draining = False
        self._feeds: dict[str, TopicFeed] = {}
        self._users: Counter[tuple[str, str]] = Counter()
        self._clock: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[None]] = set()
        self._empty = asyncio.Event()
        self._empty.set()

    def start(self) -> None:
        self._clock = asyncio.create_task(self._tick(), name="ws-clock")

    async def stop(self) -> None:
        if self._clock is not None:
            self._clock.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._clock
        for feed in list(self._feeds.values()):
            await feed.stop()
        self._feeds.clear()

    # -- sessions --------------------------------------------------------------------------------

    def register(self, session: Session) -> None:
        self.sessions.add(session)
        self._empty.clear()
        self.metrics.ws_connections.set(len(self.sessions))

    def unregister(self, session: Session) -> None:
        self.sessions.discard(session)
        key = session.release_user()
        if key is not None:
            self._users[key] -= 1
            if self._users[key] <= 0:
                del self._users[key]
        if not self.sessions:
            self._empty.set()
        self.metrics.ws_connections.set(len(self.sessions))

    def admit_user(self, key: tuple[str, str]) -> bool:
        if self._users[key] >= self.settings.ws_max_connections_per_user:
            return False
        self._users[key] += 1
        return True

    async def drain(self, timeout: float) -> None:
        """Stop taking publishes, answer those in flight, close every session (going away)."""
        self.draining = True
        sessions = list(self.sessions)
        if sessions:
            await asyncio.wait(
                [asyncio.create_task(s.drain(timeout)) for s in sessions], timeout=timeout + 1
            )
            await wait_event(self._empty, 2.0)
            # Give clients a moment to answer the close frame before the server drops the
            # connections: closing TCP while a client is still sending makes the kernels
            # reset the connection, and the client would lose the acks and the close frame
            # it had not read yet.
            await asyncio.sleep(0.5)
        logger.info("drained", sessions=len(sessions), still_open=len(self.sessions))

    # -- feeds -----------------------------------------------------------------------------------

    async def feed(self, topic: str, chain: FilterChain | None = None) -> TopicFeed:
        """The feed for ``topic``; with a log that runs SmartModules itself, a shared chain
        gets a feed of its own whose tail runs the chain there (the gateway then only
        applies tenancy to what arrives)."""
        through = (
            chain if chain is not None and chain.shared and self.log.runs_smartmodules else None
        )
        key = topic if through is None else f"{topic}\x00{through.key}"
        feed = self._feeds.get(key)
        if feed is None:
            feed = self._feeds[key] = TopicFeed(
                self.log, topic, self._feed_empty, key=key,
                through=None if through is None else through.entries,
                delivered=self.metrics.ws_deliveries.inc,
            )  # fmt: skip
        await feed.start()
        return feed

    def _feed_empty(self, feed: TopicFeed) -> None:
        if self._feeds.get(feed.key) is feed:
            del self._feeds[feed.key]
            asyncio.get_running_loop().create_task(feed.stop())

    def queued_frames(self) -> int:
        return sum(s.outbox.depth for s in self.sessions)

    # -- the clock -------------------------------------------------------------------------------

    async def _tick(self) -> None:
        settings = self.settings
        while True:
            await asyncio.sleep(min(1.0, settings.ws_heartbeat_s / 2))
            now = time.monotonic()
            wall = time.time()
            for session in list(self.sessions):
                if session.closing:
                    continue
                try:
                    self._check(session, now, wall)
                except Exception:
                    logger.exception("session_check_failed", session=session.id)

    def _close(self, session: Session, code: int, reason: str) -> None:
        # Closing may wait on a client that stopped reading: never make the clock wait.
        task = asyncio.create_task(session.close(code, reason))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def _check(self, session: Session, now: float, wall: float) -> None:
        settings = self.settings
        principal = session.principal
        if principal is None:
            if now - session.connected_at > settings.ws_auth_timeout_s:
                self._close(session, CloseCode.AUTH_TIMEOUT, "no auth frame in time")
            return
        if wall >= principal.expires_at:
            self._close(session, CloseCode.TOKEN_EXPIRED, "token expired; reconnect with a new one")
            return
        if not session.warned_expiry and principal.expires_at - wall <= settings.ws_token_warning_s:
            session.warned_expiry = True
            session.reply(f.TokenExpiring(expires_at=int(principal.expires_at * 1000)))
        if session.outbox.full_for > settings.ws_slow_consumer_s:
            self._close(
                session,
                CloseCode.SLOW_CONSUMER,
                "send queue full too long; resume from your last offsets",
            )
            return
        if now - session.last_seen > 2 * settings.ws_heartbeat_s:
            self._close(session, CloseCode.NO_PONG, "no frame for two heartbeats")
            return
        if now - session.last_ping >= settings.ws_heartbeat_s:
            session.last_ping = now
            session.reply(f.ServerPing(ts=int(wall * 1000)))
