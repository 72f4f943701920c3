"""The Fluvio backend: the stream log as topics of a Fluvio cluster (``fluvio`` client)."""

from gateway.streamlog.fluvio.log import FluvioLog
from gateway.streamlog.fluvio.specs import ProducerOptions, SmartModuleInvocation

__all__ = ["FluvioLog", "ProducerOptions", "SmartModuleInvocation"]
