"""The consumer side: chains, the stream processor, agent lanes, progress and the worker."""
