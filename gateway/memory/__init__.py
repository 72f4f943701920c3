"""The memory service behind ``/api/v1/memories``: operations, hybrid search, vector index.

- ``service``: ``MemoryService`` (writes with memory updates, tenancy-filtered reads, search);
- ``vectors``, ``indexer``, ``embedders``: the vector index (Qdrant or exact), kept in
  step with the memory database's history, and the embedding models;
- ``requests``: request bodies, validation, errors and how memories are shown;

See ``docs/memory-api.md``.
"""
