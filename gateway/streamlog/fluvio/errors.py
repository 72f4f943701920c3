"""Mapping the ``fluvio`` client's errors onto the project's error types.

The client raises one exception type whose message carries the cause; the mapping reads
it, so callers see ``UnknownTopic``, ``TopicExists`` or a temporary ``Unavailable``.
"""

from __future__ import annotations

from gateway.errors import GatewayError, TopicExists, Unavailable, UnknownTopic


def map_error(exc: BaseException, topic: str | None = None) -> GatewayError:
    text = str(exc)
    lowered = text.lower()
    if "not found" in lowered and "topic" in lowered:
        return UnknownTopic(f"Topic {topic!r} does not exist in the Fluvio cluster: {text}.")
    if "already exists" in lowered or "topicalreadyexists" in lowered.replace(" ", ""):
        return TopicExists(f"Topic {topic!r} already exists in the Fluvio cluster.")
    return Unavailable(
        f"The Fluvio cluster did not answer as expected ({text}); check "
        "AGENTMEM_FLUVIO_ENDPOINT and that the SC and SPUs are up, then retry."
    )
