"""agentmem-gateway: a real-time WebSocket gateway in front of a durable stream log."""

__version__ = "0.1.0"
