"""The HTTP API: ingest, topics, health and metrics routes."""
