"""The sync component: keeps a link up forever, announces the node, drains, answers commands."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from edge_agent.backoff import Backoff
from edge_agent.config import MqttConfig
from edge_agent.contract import CONTRACT_VERSION, Topics, dumps, utc_iso
from edge_agent.errors import SyncError
from edge_agent.health import ComponentHealth, Reason, State, reason
from edge_agent.sync.commands import CommandHandlers, CommandProcessor, ReplayGuard
from edge_agent.sync.link import Link, LinkOptions, Message, Will
from edge_agent.sync.publisher import OutboxSource, Publisher, TokenBucket
from edge_agent.sync.signing import Verifier, load_public_key

log = logging.getLogger(__name__)

STATUS_CONTENT_TYPE = "application/vnd.ioc.status+json"
REPLY_CONTENT_TYPE = "application/vnd.ioc.reply+json"


@dataclass(frozen=True)
class NodeInfo:
    id: str
    district: str
    version: str
    config_hash: str
    capabilities: tuple[str, ...] = ()
    area: tuple[tuple[str, str], ...] = ()  # the administrative unit: ("code", ...), ("name", ...)


def credential_path(path: Path | None) -> Path | None:
    """A relative TLS path names a systemd credential (`LoadCredential=node.key:...`) when
    `$CREDENTIALS_DIRECTORY` holds it; otherwise it is taken as it is."""
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    if path is None or path.is_absolute() or not directory:
        return path
    candidate = Path(directory) / path
    return candidate if candidate.exists() else path


def link_options(config: MqttConfig, node_id: str) -> LinkOptions:
    return LinkOptions(
        host=config.host,
        port=config.port,
        client_id=config.client_id or f"edge-{node_id}",
        protocol=config.protocol,
        keepalive_s=config.keepalive_s,
        session_expiry_s=config.session_expiry_s,
        connect_timeout_s=config.connect_timeout_s,
        username=config.username,
        password=config.password.get_secret_value() if config.password else None,
        tls=config.tls.enabled,
        ca_file=credential_path(config.tls.ca_file),
        cert_file=credential_path(config.tls.cert_file),
        key_file=credential_path(config.tls.key_file),
        max_inflight=config.inflight_window,
    )


class Sync:
    """Outbox → provincial broker, live state and remote commands."""

    name = "sync"

    def __init__(
        self,
        config: MqttConfig,
        *,
        node: NodeInfo,
        outbox: OutboxSource,
        handlers: CommandHandlers,
        health: ComponentHealth,
        publisher_health: ComponentHealth | None = None,
        state_dir: Path | None = None,
    ) -> None:
        self.config = config
        self.node = node
        self.outbox = outbox
        self.handlers = handlers
        self.health = health
        # The publisher writes an entry of its own: one writer per entry.
        self.publisher_health = publisher_health or ComponentHealth("publisher", kind="publisher")
        self.state_dir = state_dir
        self.topics = Topics(config.topic_prefix, node.district, node.id)
        self.link: Link | None = None
        self._commands: asyncio.Queue[Message] = asyncio.Queue(maxsize=64)
        self.processor: CommandProcessor | None = None
        self.publisher: Publisher | None = None

    async def __aenter__(self) -> Sync:
        auth = self.config.commands
        verifier = Verifier(
            public_keys=tuple(load_public_key(p) for p in auth.public_keys),
            hmac_key=auth.hmac_key.get_secret_value().encode() if auth.hmac_key else None,
        )
        if self.config.compression == "zstd":
            try:
                import zstandard  # noqa: F401
            except ImportError:
                from edge_agent.errors import DependencyMissingError

                raise DependencyMissingError(
                    "mqtt.compression = 'zstd' needs the zstandard package:"
                    " pip install zstandard, or set mqtt.compression = 'none'"
                ) from None
        self.processor = CommandProcessor(
            node=self.node.id,
            handlers=self.handlers,
            verifier=verifier,
            max_payload_bytes=auth.max_payload_bytes,
            clock_skew_s=auth.clock_skew_s,
            max_ttl_s=auth.max_ttl_s,
            replay=ReplayGuard(self.state_dir / "commands-seen.json" if self.state_dir else None),
            on_reject=lambda code: self.health.count(f"commands_rejected_{code}"),
        )
        self.publisher = Publisher(
            self.outbox,
            self.topics,
            health=self.publisher_health,
            window=self.config.inflight_window,
            batch_max=self.config.batch_max_events,
            batch_min=self.config.batch_min_events,
            batch_window=self.config.batch_inflight_window,
            compress=self.config.compression == "zstd",
            rate=TokenBucket(self.config.rate_messages_per_s, self.config.rate_bytes_per_s),
        )
        self.health.set_state(
            State.STARTING,
            reason("connecting", f"connecting to {self._where()}", broker=self._where()),
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        link, self.link = self.link, None
        if link is not None and not link.closed.done():
            # A clean shutdown says so itself; the will covers everything else.
            with contextlib.suppress(SyncError, TimeoutError):
                async with asyncio.timeout(2.0):
                    await link.publish_wait(
                        self.topics.status,
                        self._status_payload("offline"),
                        retain=True,
                        content_type=STATUS_CONTENT_TYPE,
                    )
            await link.disconnect()
        self.health.set_state(State.STOPPED)

    def _unreachable(self) -> Reason:
        return reason(
            "broker_unreachable",
            "broker unreachable",
            broker=self._where(),
            since=self.health.since if self.health.state is not State.OK else time.time(),
        )

    def _where(self) -> str:
        return f"{self.config.host}:{self.config.port}"

    def _status_payload(self, state: str, **extra: Any) -> bytes:
        return dumps(
            {
                "v": CONTRACT_VERSION,
                "node": self.node.id,
                "district": self.node.district,
                "state": state,
                "ts": utc_iso(time.time()),
                **({"area": dict(self.node.area)} if self.node.area else {}),
                **extra,
            }
        )

    async def _birth(self) -> bytes:
        stats = await asyncio.to_thread(self.outbox.stats)
        return self._status_payload(
            "online",
            version=self.node.version,
            config_hash=self.node.config_hash,
            capabilities=list(self.node.capabilities),
            epoch=self.outbox.epoch,
            last_seq=stats.get("last_seq"),
            pending_rows=stats.get("pending_rows"),
        )

    def _on_message(self, message: Message) -> None:
        try:
            self._commands.put_nowait(message)
        except asyncio.QueueFull:
            self.health.count("commands_dropped_busy")

    async def run(self) -> None:
        assert self.publisher is not None
        retry = Backoff(self.config.backoff_min_s, self.config.backoff_max_s)
        while True:
            # The watchdog promise covers the slowest honest turn: a connect attempt, then a
            # birth that waits for its PUBACK until the link is declared dead.
            self.health.beat(self.config.connect_timeout_s + 1.5 * self.config.keepalive_s)
            link = Link(
                link_options(self.config, self.node.id),
                will=Will(self.topics.status, self._status_payload("offline", reason="will")),
                on_message=self._on_message,
                on_ack=self.publisher.on_ack,
            )
            try:
                await link.connect()
                await link.subscribe(self.topics.cmd_filter, qos=1)
                await link.publish_wait(
                    self.topics.status,
                    await self._birth(),
                    retain=True,
                    content_type=STATUS_CONTENT_TYPE,
                )
            except SyncError as exc:
                await link.disconnect()
                if self.health.set_state(State.DEGRADED, self._unreachable(), error=str(exc)):
                    log.warning("broker %s unreachable: %s (retrying)", self._where(), exc)
                self.health.count("connect_failures")
                await self._pause(retry.next())
                continue
            self.link = link
            retry.reset()
            self.health.set_state(
                State.OK, reason("connected", f"connected to {self._where()}", broker=self._where())
            )
            self.health.count("connects")
            log.info("connected to broker %s as %s", self._where(), link.options.client_id)
            lost = await self._serve(link)
            self.link = None
            if self.health.set_state(State.DEGRADED, self._unreachable(), error=lost):
                log.warning("link to %s lost: %s (reconnecting)", self._where(), lost)
            await self._pause(retry.next())

    async def _pause(self, seconds: float) -> None:
        self.health.beat(seconds + 5.0)
        await asyncio.sleep(seconds)

    async def _serve(self, link: Link) -> str:
        assert self.publisher is not None
        async with asyncio.TaskGroup() as tg:
            drain = tg.create_task(self.publisher.drain(link), name="sync-drain")
            commands = tg.create_task(self._serve_commands(link), name="sync-commands")
            done: list[asyncio.Future[Any]] = [link.closed, drain]
            await asyncio.wait(done, return_when=asyncio.FIRST_COMPLETED)
            commands.cancel()
            if not link.closed.done():
                await link.disconnect()
        return link.closed.result()

    async def _serve_commands(self, link: Link) -> None:
        assert self.processor is not None
        while True:
            message = await self._commands.get()
            reply = await self.processor.handle(message)
            self.health.count("commands")
            topic = reply.response_topic or self.topics.reply(reply.verb)
            try:
                await link.publish_wait(
                    topic,
                    reply.payload,
                    content_type=REPLY_CONTENT_TYPE,
                    correlation_data=reply.correlation_data,
                )
            except SyncError as exc:
                log.warning("reply on %s not delivered: %s", topic, exc)
            if reply.then is not None:
                reply.then()
