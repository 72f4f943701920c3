"""A subscription: the events of one topic, delivered in offset order per partition.

:meth:`Client.subscribe <agentmem_client.Client.subscribe>` returns a :class:`Subscription`
that can be used three ways::

    sub = await client.subscribe("user-events")       # wait for ``subscribed``
    async for event in sub: ...
    await sub.unsubscribe()

    async for event in client.subscribe("user-events"):  # subscribes on first iteration
        ...

    async with client.subscribe("user-events") as sub:   # unsubscribes on exit
        async for event in sub: ...
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable, Generator, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

from agentmem_client.errors import AgentMemError, ConnectionClosed, Timeout
from agentmem_client.models import Event, StateChange, SubscriptionState
from agentmem_client.resume import ResumeState

if TYPE_CHECKING:
    from agentmem_client.client import Client

__all__ = ["Subscription"]

logger = logging.getLogger("agentmem_client")

StateCallback = Callable[[StateChange], Any]


class Subscription:
    """Events of one topic from a position, resumed across reconnects without gap or repeat.

    Delivered events wait in a buffer of at most ``max_buffer`` events until iterated. When
    the buffer is full, the client stops reading from the connection (TCP backpressure, as
    the protocol expects of a slow consumer): acknowledgements and other subscriptions of the
    same client wait too, and a consumer that stays behind long enough makes the gateway
    close the session (4001 or 4002), after which the client resumes it from the last
    buffered offsets.

    Iteration ends (``StopAsyncIteration``) after :meth:`unsubscribe` (buffered events are
    discarded) or :meth:`Client.close`; if the subscription fails (an ``error`` frame, a
    terminal close code) the buffered events are yielded first, then the error is raised.
    """

    def __init__(
        self,
        client: Client,
        name: str,
        topic: str,
        resume: ResumeState,
        filters: list[dict[str, Any]] | None,
        timeout: float | None,
        max_buffer: int | None,
    ) -> None:
        if max_buffer is not None and max_buffer < 1:
            raise ValueError("max_buffer must be >= 1 or None")
        self._client = client
        self.name = name
        """The ``sub`` name of the subscription on the wire (unique in the client)."""
        self.topic = topic
        self.filters = filters
        self._resume = resume
        self._timeout = timeout
        self._max_buffer = max_buffer
        self._state = SubscriptionState.UNSUBSCRIBED
        self._callbacks: list[StateCallback] = []
        self._buffer: collections.deque[Event] = collections.deque()
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self._ready: asyncio.Future[None] | None = None
        self._ended = False
        self._error: AgentMemError | None = None

    # -- public API ------------------------------------------------------------------------

    @property
    def state(self) -> SubscriptionState:
        return self._state

    @property
    def positions(self) -> dict[int, int]:
        """Next offset per partition (what a ``from_`` would resume from), once known."""
        return dict(self._resume.next_offsets)

    @property
    def error(self) -> AgentMemError | None:
        """Why the subscription failed, if it did."""
        return self._error

    def on_state_change(self, callback: StateCallback) -> Callable[[], None]:
        """Call ``callback(change)`` on every state change; returns a function to stop."""
        self._callbacks.append(callback)

        def remove() -> None:
            if callback in self._callbacks:
                self._callbacks.remove(callback)

        return remove

    async def unsubscribe(self, timeout: float | None = None) -> None:
        """Stop the subscription; events still buffered are discarded.

        Waits for the gateway's ``unsubscribed`` when connected (at most ``timeout``
        seconds, the client's default when ``None``). Calling it again does nothing.
        """
        if self._ended:
            return
        started = self._state is not SubscriptionState.UNSUBSCRIBED
        self._end(None, discard=True, reason="unsubscribed")
        if started:
            await self._client._unsubscribe(self, timeout)

    def __await__(self) -> Generator[Any, None, Subscription]:
        return self._start().__await__()

    async def __aenter__(self) -> Subscription:
        return await self._start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self.unsubscribe()
        except AgentMemError as error:
            # The session is gone or did not answer: the subscription ended with it.
            logger.debug("unsubscribe of %s failed: %r", self.name, error)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        if self._ready is None:
            await self._start()
        while True:
            if self._buffer:
                event = self._buffer.popleft()
                if self._max_buffer is None or len(self._buffer) < self._max_buffer:
                    self._writable.set()
                return event
            if self._ended:
                if self._error is not None:
                    raise self._error
                raise StopAsyncIteration
            self._readable.clear()
            await self._readable.wait()

    def __repr__(self) -> str:
        return f"<Subscription {self.name} topic={self.topic!r} state={self._state.value}>"

    # -- driven by the client --------------------------------------------------------------

    async def _start(self) -> Subscription:
        if self._ready is None:
            loop = asyncio.get_running_loop()
            self._ready = loop.create_future()
            # Mark a failure as retrieved: it is also raised by iteration.
            self._ready.add_done_callback(lambda f: f.cancelled() or f.exception())
            try:
                self._client._activate(self)
            except AgentMemError as refused:
                self._end(refused, reason=refused.message)
                raise
        if not self._ready.done():
            try:
                async with asyncio.timeout(self._timeout):
                    await asyncio.shield(self._ready)
            except TimeoutError:
                late = Timeout(f"no 'subscribed' for {self.topic!r} within {self._timeout}s")
                self._end(late, discard=True, reason=late.message)
                self._client._forget(self)
                raise late from None
        self._ready.result()
        return self

    @property
    def _wire_from(self) -> str | dict[int, int]:
        return self._resume.resume_from()

    def _set_state(
        self,
        state: SubscriptionState,
        code: int | None = None,
        reason: str = "",
        error: AgentMemError | None = None,
    ) -> None:
        if state is self._state:
            return
        change = StateChange(state.value, self._state.value, code, reason, error)
        self._state = state
        for callback in list(self._callbacks):
            try:
                callback(change)
            except Exception:
                logger.exception("subscription state callback %r failed", callback)

    def _on_subscribed(self, positions: Mapping[int, int]) -> None:
        self._resume.on_subscribed(positions)
        self._set_state(SubscriptionState.SUBSCRIBED)
        if self._ready is not None and not self._ready.done():
            self._ready.set_result(None)

    def _accepts(self, partition: int, offset: int) -> bool:
        return not self._ended and self._resume.is_new(partition, offset)

    async def _put(self, event: Event) -> bool:
        """Buffer a delivery, waiting while the buffer is full; ``False`` if dropped."""
        while (
            self._max_buffer is not None
            and len(self._buffer) >= self._max_buffer
            and not self._ended
        ):
            self._writable.clear()
            await self._writable.wait()
        if self._ended:
            return False
        self._buffer.append(event)
        self._resume.delivered(event.partition, event.offset)
        self._readable.set()
        return True

    def _end(
        self,
        error: AgentMemError | None,
        *,
        discard: bool = False,
        code: int | None = None,
        reason: str = "",
    ) -> None:
        if self._ended:
            return
        self._ended = True
        self._error = error
        if discard:
            self._buffer.clear()
        self._readable.set()
        self._writable.set()
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(
                error or ConnectionClosed(code or 1000, reason or "subscription ended")
            )
        self._set_state(SubscriptionState.UNSUBSCRIBED, code, reason, error)
