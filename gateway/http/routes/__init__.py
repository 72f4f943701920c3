"""Route handlers, one file per resource."""
