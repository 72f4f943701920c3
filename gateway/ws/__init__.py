"""The WebSocket gateway: protocol frames (sans-I/O), sessions, subscriptions and fan-out."""
