"""The memory pipeline: turns events from the stream log into memories."""
