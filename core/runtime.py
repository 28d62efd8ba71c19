"""The process's core parts, wired once: database, rules, keys, channels, ingest and the dispatcher."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from core.approvals import CALLBACK_CHANNEL, ApprovalService
from core.auth import ApiKeyring
from core.channels.base import Channel, ChannelContext, Renderer
from core.channels.registry import ChannelRegistry
from core.clock import Clock, SystemClock
from core.config import AckbotConfig, ChannelConfig
from core.dispatch import Dispatcher, DispatcherConfig, Enricher, new_worker_id
from core.ingest import IngestDeps
from core.intake import IngestQueue
from core.metrics import Metrics
from core.models.deliveries import HeldUpdate
from core.noise import NoiseScheduler, NoiseSettings
from core.rulebook import RuleBook
from core.store import channels as channel_store
from core.store import migrate
from core.store.db import CHECKPOINT_SECONDS, IDLE_PING_SECONDS, Database

log = logging.getLogger("ackbot")

RULES_REFRESH_SECONDS = 5.0
GAUGES_REFRESH_SECONDS = 15.0


@dataclass
class Runtime:
    """Everything that outlives one request; built by bot/app.py, started and stopped with the web app."""

    config: AckbotConfig
    registry: ChannelRegistry
    clock: Clock = field(default_factory=SystemClock)
    metrics: Metrics = field(default_factory=Metrics)
    run_dispatcher: bool = True
    enrichers: list[Enricher] = field(default_factory=list)
    renderers: dict[str, Renderer] = field(default_factory=dict)
    origin: str = field(default_factory=lambda: secrets.token_hex(8))

    def __post_init__(self) -> None:
        self.db = Database(
            self.config.database.url, pool_size=self.config.database.pool_size, echo=self.config.database.echo
        )
        self.keyring = ApiKeyring(self.config.api_keys)
        self.rulebook = RuleBook(db=self.db, config_rules=self.config.rules)
        self.channels: dict[str, Channel] = {}
        # This process's outbox worker: it claims deliveries, and holds a clicked message's update for the click.
        self.worker_id = new_worker_id()
        self.channel_configs: dict[str, ChannelConfig] = {}
        self.http: aiohttp.ClientSession | None = None
        self.dispatcher: Dispatcher | None = None
        self.config_channel_names = {c.name for c in self.config.channels}
        self._channels_version: tuple[int, str] | None = None
        self._background: list[asyncio.Task[None]] = []
        # Noise control: global quiet hours and people for ingest; the digest and report scheduler once started.
        self.noise_settings = NoiseSettings.from_config(self.config, public_url=self.public_url)
        self.noise: NoiseScheduler | None = None
        # Approvals: decisions, escalation and expiry, and the enricher that puts buttons on messages.
        self.approvals = ApprovalService(
            db=self.db,
            clock=self.clock,
            config=self.config,
            rules=self.rulebook.all_rules,
            channel_types=lambda: {name: c.type for name, c in self.channel_configs.items()},
            channel_tenants=lambda: {name: c.tenant for name, c in self.channel_configs.items()},
            public_url=lambda: self.public_url,
            on_commit=self._wake_dispatcher,
            holder=self.worker_id,
        )
        # Whether this process runs the approvals scheduler; None: whenever it runs the dispatcher.
        self.run_scheduler: bool | None = None
        # Intake's group commit. SQLite has one writer anyway; on PostgreSQL a second group can be read and
        # written while the first one commits.
        self.intake = IngestQueue(self.ingest_deps, writers=2 if self.db.is_postgres else 1)

    @property
    def public_url(self) -> str:
        server = self.config.server
        return server.public_url or f"http://{server.host}:{server.port}"

    @property
    def listen_url(self) -> str:
        """Where this process listens, as a URL (an IPv6 host in brackets)."""
        host = self.config.server.host
        return (
            f"http://[{host}]:{self.config.server.port}" if ":" in host else f"http://{host}:{self.config.server.port}"
        )

    def channel_context(self, *, from_api: bool = False) -> ChannelContext:
        """What every channel is lent: the shared HTTP session, our public URL, the renderers; a channel made
        through the API also the secrets allowlist its references must pass."""
        return ChannelContext(
            http=self.http,
            public_url=self.public_url,
            renderers=self.renderers,
            origin=self.origin,
            secret_policy=self.config.secrets.policy() if from_api else None,
            own_urls=(self.listen_url,),
        )

    def add_channel(self, channel_config: ChannelConfig) -> Channel:
        """Build a channel from its config and put it into service (replacing one of the same name)."""
        from_api = channel_config.name not in self.config_channel_names
        channel = self.registry.build(
            channel_config.name, channel_config.type, channel_config.settings, self.channel_context(from_api=from_api)
        )
        self.channels[channel_config.name] = channel
        self.channel_configs[channel_config.name] = channel_config
        return channel

    def remove_channel(self, name: str) -> Channel | None:
        """Take a channel out of service; the caller closes it."""
        self.channel_configs.pop(name, None)
        return self.channels.pop(name, None)

    async def refresh_channels(self, *, force: bool = False) -> bool:
        """Bring API-created channels in line with the database (they may change on any replica)."""
        async with self.db.read() as session:
            stamp = await channel_store.version(session=session)
            if not force and stamp == self._channels_version:
                return False
            stored = await channel_store.list_channels(session=session)
        wanted = {c.name: c for c in stored if c.name not in self.config_channel_names}
        for name in [n for n in self.channel_configs if n not in self.config_channel_names and n not in wanted]:
            removed = self.remove_channel(name)
            if removed is not None:
                await removed.close()
        for name, channel_config in wanted.items():
            if self.channel_configs.get(name) == channel_config:
                continue
            previous = self.remove_channel(name)
            if previous is not None:
                await previous.close()
            if not channel_config.enabled:
                # Known (listed, changeable, enabled again through the API) but out of service.
                self.channel_configs[name] = channel_config
                continue
            try:
                self.add_channel(channel_config)
            except Exception as exc:
                log.error("API channel %r cannot be built and is out of service: %s", name, exc)
                self.channel_configs[name] = channel_config
        self._channels_version = stamp
        return True

    def ingest_deps(self) -> IngestDeps:
        """The parts ingest needs."""
        return IngestDeps(
            db=self.db,
            rulebook=self.rulebook,
            clock=self.clock,
            metrics=self.metrics,
            default_window=self.config.noise.dedup_window,
            noise=self.noise_settings,
            channel_names=lambda: set(self.channels),
            open_approval=self.approvals.open_for_action,
        )

    def _wake_dispatcher(self) -> None:
        if self.dispatcher is not None:
            self.dispatcher.wake()

    async def settle_answer(self, held: HeldUpdate | None, *, shown: bool) -> None:
        """A click's answer replaced the clicked message (shown) or could not: settle the update its decision held
        for it as sent, or hand it to the outbox now. Never raises: unsettled, it is sent when its hold runs out."""
        if held is None or self.dispatcher is None:
            return
        try:
            await self.dispatcher.settle_held(held, shown=shown)
        except Exception:
            log.exception("could not settle the held update %s; the outbox sends it when the hold runs out", held)

    async def start(self, *, migrate_db: bool = True) -> None:
        """Migrate, load rules and channels, and start the workers."""
        if migrate_db:
            await migrate.upgrade(self.db)
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        for channel_config in self.config.channels:
            if channel_config.enabled:
                self.add_channel(channel_config)
            else:
                self.channel_configs[channel_config.name] = channel_config  # listed, out of service
        await self.refresh_channels(force=True)
        await self.rulebook.refresh(force=True)
        if CALLBACK_CHANNEL in self.channel_configs:
            raise ValueError(f"the channel name {CALLBACK_CHANNEL!r} is reserved for approval callbacks")
        scheduler = self.run_dispatcher if self.run_scheduler is None else self.run_scheduler
        await self.approvals.start(run_scheduler=scheduler)
        self.channels[CALLBACK_CHANNEL] = self.approvals.callback_channel(self.channel_context())
        if self.approvals.enrich not in self.enrichers:
            self.enrichers.append(self.approvals.enrich)
        dispatch = self.config.dispatch
        self.dispatcher = Dispatcher(
            worker_id=self.worker_id,
            db=self.db,
            channels=self.channels,
            clock=self.clock,
            metrics=self.metrics,
            config=DispatcherConfig(
                workers=dispatch.workers,
                lease=dispatch.lease,
                poll_interval=dispatch.poll_interval.total_seconds(),
                batch=dispatch.batch,
                public_url=self.public_url,
            ),
            enrichers=self.enrichers,
            prefetchers=[self.approvals.prefetch],
        )
        if self.run_dispatcher:
            await self.dispatcher.start()
        self._every(CHECKPOINT_SECONDS, self.db.checkpoint)
        self._every(IDLE_PING_SECONDS, self.db.tidy)
        self._every(RULES_REFRESH_SECONDS, self.rulebook.refresh)
        self._every(RULES_REFRESH_SECONDS, self.refresh_channels)
        if self.run_dispatcher:
            self._every(GAUGES_REFRESH_SECONDS, self.dispatcher.refresh_gauges)
        # Digests and reports: every replica that runs workers runs the scheduler; the database makes each happen once.
        self.noise = NoiseScheduler(
            db=self.db,
            clock=self.clock,
            config=self.config,
            public_url=self.public_url,
            worker=self.dispatcher.worker_id,
            on_enqueued=self.dispatcher.wake,
        )
        if self.run_dispatcher:
            self._every(self.config.noise.scheduler_interval.total_seconds(), self.noise.tick)
        if not len(self.keyring):
            log.warning("no API key is usable: the HTTP API will refuse every request (see api_keys in the config)")

    def _every(self, seconds: float, job: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        async def loop() -> None:
            while True:
                await asyncio.sleep(seconds)
                try:
                    await job()
                except Exception:
                    log.exception("background job %s failed", getattr(job, "__qualname__", job))

        self._background.append(asyncio.create_task(loop()))

    async def stop(self) -> None:
        """Stop the workers and close connections; work in flight is reclaimed after its lease."""
        await self.intake.drain()
        for task in self._background:
            task.cancel()
        for task in self._background:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._background.clear()
        await self.approvals.stop()
        if self.dispatcher is not None:
            await self.dispatcher.stop()
        for channel in self.channels.values():
            with contextlib.suppress(Exception):
                await channel.close()
        if self.http is not None:
            await self.http.close()
        await self.db.close()
