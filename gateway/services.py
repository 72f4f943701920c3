"""The long-lived parts of a running gateway, opened and closed in the app's lifespan."""

from __future__ import annotations

from agents import MemoryPipeline
from gateway.auth.tokens import TokenAuthority
from gateway.memory.service import MemoryService
from gateway.metrics import Metrics
from gateway.settings import Settings
from gateway.smartmodules import SmartModuleEngine, SmartModuleRegistry
from gateway.streamlog.factory import open_log
from gateway.ws.filters import FilterChains
from gateway.ws.hub import Hub


def open_registry(settings: Settings) -> SmartModuleRegistry:
    """The SmartModules known by name: the project's own plus ``AGENTMEM_SMARTMODULE_DIR``."""
    engine = SmartModuleEngine(
        settings.data_dir / "smartmodule-cache",
        memory_limit_bytes=settings.smartmodule_memory_bytes,
    )
    directories = [settings.smartmodule_dir] if settings.smartmodule_dir else []
    return SmartModuleRegistry(engine, directories)


class Services:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.tokens = TokenAuthority.from_settings(settings.jwt_secret, settings.data_dir)
        self.metrics = Metrics()
        self.log = open_log(settings)
        self.metrics.log_group_commits.source = lambda: self.log.group_commits
        self.metrics.log_committed_records.source = lambda: self.log.committed_records
        self.smartmodules = open_registry(settings)
        self.hub = Hub(
            settings, self.log, self.tokens, self.metrics, FilterChains(self.smartmodules)
        )
        self.memory: MemoryPipeline | None = None
        if settings.memory_pipeline == "serve":
            self.memory = MemoryPipeline.from_settings(
                settings, self.log, registry=self.smartmodules
            )
        self.memories = MemoryService(settings, self.memory, self.metrics)

    async def open(self) -> None:
        await self.log.open()
        if self.memory is not None:
            await self.memory.start()
        await self.memories.open()
        self.hub.start()

    async def close(self) -> None:
        await self.hub.drain(self.settings.drain_timeout_s)
        await self.hub.stop()
        await self.memories.close()
        # The pipeline's tails and outbox need the log: it stops first.
        if self.memory is not None:
            await self.memory.stop(self.settings.drain_timeout_s)
        await self.log.close()
