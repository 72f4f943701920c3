"""The Redis backend: each topic partition is a Redis stream whose ids are the offsets."""

from gateway.streamlog.redis.log import RedisLog

__all__ = ["RedisLog"]
