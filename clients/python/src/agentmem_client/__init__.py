"""Python client of the agentmem-gateway WebSocket protocol (``agentmem.v1``).

::

    from agentmem_client import Client

    async with Client("ws://127.0.0.1:8080/ws", token=TOKEN) as client:
        ack = await client.publish(
            "user-events", {"type": "user_interaction", "payload": {"action": "opened"}}
        )
        async for event in client.subscribe("user-events", from_="beginning"):
            print(event.partition, event.offset, event.data)
"""

from agentmem_client.backoff import Backoff
from agentmem_client.client import DEFAULT, Client, normalize_url
from agentmem_client.codes import CloseCode, ErrorCode, close_code_name, is_reconnectable
from agentmem_client.errors import (
    AgentMemError,
    ConnectError,
    ConnectionClosed,
    ErrorDetail,
    Forbidden,
    InternalError,
    InvalidEvent,
    InvalidFrame,
    InvalidOffset,
    LimitExceeded,
    ProtocolError,
    RateLimited,
    ServerError,
    Timeout,
    TokenError,
    TooLarge,
    Unauthorized,
    Unavailable,
    UnknownOp,
    UnknownTopic,
)
from agentmem_client.frames import Codec
from agentmem_client.ids import event_id
from agentmem_client.models import (
    Ack,
    ConnectionState,
    ErrorResult,
    Event,
    StateChange,
    SubscriptionState,
)
from agentmem_client.resume import ResumeState
from agentmem_client.subscription import Subscription

__version__ = "0.1.0"

__all__ = [
    "DEFAULT",
    "Ack",
    "AgentMemError",
    "Backoff",
    "Client",
    "CloseCode",
    "Codec",
    "ConnectError",
    "ConnectionClosed",
    "ConnectionState",
    "ErrorCode",
    "ErrorDetail",
    "ErrorResult",
    "Event",
    "Forbidden",
    "InternalError",
    "InvalidEvent",
    "InvalidFrame",
    "InvalidOffset",
    "LimitExceeded",
    "ProtocolError",
    "RateLimited",
    "ResumeState",
    "ServerError",
    "StateChange",
    "Subscription",
    "SubscriptionState",
    "Timeout",
    "TokenError",
    "TooLarge",
    "Unauthorized",
    "Unavailable",
    "UnknownOp",
    "UnknownTopic",
    "close_code_name",
    "event_id",
    "is_reconnectable",
    "normalize_url",
]
