"""The memory database: schema and the aiosqlite store (``agents.store.sqlite``)."""
