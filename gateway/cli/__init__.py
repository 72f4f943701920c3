"""The ``agentmem-gateway`` command line, one module per command group."""
