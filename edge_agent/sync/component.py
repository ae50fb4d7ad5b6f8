"""The sync component: keeps a link up forever, announces the node, drains, answers commands.

Per link, one TaskGroup runs four siblings: the task that ends the group when the link goes
(`Link.wait_closed`), the publisher's drain and its acker, and the command server (plus a
steady-state watch, and a re-subscriber while the broker refuses our commands). After the
group, the publisher settles: PUBACKed rows are deleted, the rest go back to the outbox.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from edge_agent.audit import Auditor
from edge_agent.backoff import Backoff
from edge_agent.config import MqttConfig
from edge_agent.contract import CONTRACT_VERSION, Topics, dumps, utc_iso
from edge_agent.errors import SyncError
from edge_agent.health import ComponentHealth, Reason, State, reason
from edge_agent.sync.commands import CommandHandlers, CommandProcessor, ReplayGuard, ReplyRoute
from edge_agent.sync.desk import CommandDesk, publish_reply
from edge_agent.sync.link import (
    SESSION_TAKEN_OVER,
    Closed,
    Link,
    LinkLost,
    Refused,
    Unreachable,
    Will,
)
from edge_agent.sync.publisher import OutboxSource, Publisher, TokenBucket
from edge_agent.sync.signing import Verifier, load_public_key
from edge_agent.sync.values import link_options

log = logging.getLogger(__name__)

STATUS_CONTENT_TYPE = "application/vnd.ioc.status+json"
SERVER_SHUTTING_DOWN = 0x8B
# A link the broker ends this soon after CONNACK, this many times in a row, is taken to be
# another client with our id (a broker that sends no 0x8E, or MQTT 3.1.1).
QUICK_DROP_S = 10.0
QUICK_DROPS = 3


@dataclass(frozen=True)
class NodeInfo:
    id: str
    district: str
    version: str
    config_hash: str
    capabilities: tuple[str, ...] = ()
    area: tuple[tuple[str, str], ...] = ()  # the administrative unit: ("code", ...), ("name", ...)


@dataclass(frozen=True)
class Notice:
    """A reply to publish once the next link is up (e.g. a `config.set` rolled back)."""

    route: ReplyRoute
    payload: bytes


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
        auditor: Auditor | None = None,
        on_birth: Callable[[], None] | None = None,
        notices: Sequence[Notice] = (),
    ) -> None:
        self.config = config
        self.node = node
        self.outbox = outbox
        self.handlers = handlers
        self.health = health
        # The publisher writes an entry of its own: one writer per entry.
        self.publisher_health = publisher_health or ComponentHealth("publisher", kind="publisher")
        self.state_dir = state_dir
        self.auditor = auditor
        self.on_birth = on_birth
        self.notices = list(notices)
        self.topics = Topics(config.topic_prefix, node.district, node.id)
        self.client_id = link_options(config, node.id).client_id
        self.link: Link | None = None
        self.desk: CommandDesk | None = None
        self.publisher: Publisher | None = None
        # A beat period that covers the slowest honest turn: a connect attempt, then a
        # birth that waits for its PUBACK until the link is declared dead.
        self._turn_s = config.connect_timeout_s + 1.5 * config.keepalive_s
        self._stable_s = max(30.0, 2 * config.backoff_max_s)
        self._retry = Backoff(config.backoff_min_s, config.backoff_max_s)
        self._quick_drops = 0
        self._taken_over = False
        self._commands_refused: Refused | None = None
        self._birth_refused: Refused | None = None

    async def __aenter__(self) -> Sync:
        auth = self.config.commands
        verifier = Verifier(
            public_keys=tuple(load_public_key(p) for p in auth.public_keys),
            hmac_key=auth.hmac_key.get_secret_value().encode() if auth.hmac_key else None,
        )
        processor = CommandProcessor(
            topics=self.topics,
            handlers=self.handlers,
            verifier=verifier,
            max_payload_bytes=auth.max_payload_bytes,
            clock_skew_s=auth.clock_skew_s,
            max_ttl_s=auth.max_ttl_s,
            replay=ReplayGuard(self.state_dir / "commands-seen.json" if self.state_dir else None),
        )
        self.desk = CommandDesk(processor, health=self.health, auditor=self.auditor)
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
            beat_s=self._turn_s,
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
        # run() said offline and settled the publisher when it was cancelled.
        self.health.set_state(State.STOPPED)

    # -- state --------------------------------------------------------------------------

    def _where(self) -> str:
        return f"{self.config.host}:{self.config.port}"

    def _unreachable(self) -> Reason:
        return reason(
            "broker_unreachable",
            "broker unreachable",
            broker=self._where(),
            since=self.health.since if self.health.state is not State.OK else time.time(),
        )

    def _takeover(self) -> Reason:
        return reason(
            "client_id_in_use",
            f"another client is using node id {self.node.id} (MQTT client id {self.client_id})",
            client_id=self.client_id,
            node=self.node.id,
        )

    def _show(self, state: State, why: Reason, *, error: str | None = None) -> bool:
        """Set the link's state; True when it changed or its reason did (log those)."""
        before = self.health.reason.code if self.health.reason else None
        changed = self.health.set_state(state, why, error=error)
        return changed or before != why.code

    def _show_connected(self) -> None:
        if self._taken_over:
            self._show(State.DEGRADED, self._takeover())
        elif self._commands_refused is not None:
            refused = self._commands_refused
            self._show(
                State.DEGRADED,
                reason(
                    "commands_refused",
                    f"commands refused by the broker ({refused.name}, 0x{refused.code:02X})",
                    topic=self.topics.cmd_filter,
                    reason_code=refused.code,
                ),
            )
        elif self._birth_refused is not None:
            refused = self._birth_refused
            self._show(
                State.DEGRADED,
                reason(
                    "status_refused",
                    f"status refused by the broker ({refused.name}, 0x{refused.code:02X})",
                    topic=self.topics.status,
                    reason_code=refused.code,
                ),
            )
        else:
            self._show(
                State.OK,
                reason("connected", f"connected to {self._where()}", broker=self._where()),
            )

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

    # -- the reconnect loop -------------------------------------------------------------

    async def run(self) -> None:
        assert self.desk is not None and self.publisher is not None
        while True:
            self.health.beat(self._turn_s)
            refusals = self.publisher.refusals
            try:
                link = Link(
                    link_options(self.config, self.node.id),
                    will=Will(self.topics.status, self._status_payload("offline", reason="will")),
                    on_message=self.desk.on_message,
                )
                async with link:
                    closed = await self._session(link)
            except LinkLost as lost:  # during the subscription or the birth
                closed = lost.closed
            except SyncError as exc:
                self._connect_failed(exc)
                await self._pause(self._retry.next(), probe=isinstance(exc, Unreachable))
                continue
            probe = self._link_ended(closed, refused=self.publisher.refusals > refusals)
            await self._pause(self._retry.next(), probe=probe)

    def _connect_failed(self, exc: SyncError) -> None:
        self.health.count("connect_failures")
        if self._taken_over:
            why = self._takeover()
        elif isinstance(exc, Refused):
            why = reason(
                "connection_refused",
                f"broker refused the connection ({exc.name}, 0x{exc.code:02X})",
                broker=self._where(),
                reason_code=exc.code,
            )
        else:
            why = self._unreachable()
        if self._show(State.DEGRADED, why, error=str(exc)):
            log.warning("cannot connect to broker %s: %s (retrying)", self._where(), exc)

    def _link_ended(self, closed: Closed, *, refused: bool) -> bool:
        """Name why the link ended; True when probing for the broker's return makes sense.
        `refused`: the broker refused a publish on it (mosquitto then often drops the link,
        which is no sign of a second client)."""
        self.link = None
        uptime = closed.uptime_s or 0.0
        if closed.code == SESSION_TAKEN_OVER:
            taken = True
        elif closed.code is None and uptime < QUICK_DROP_S and not refused:
            self._quick_drops += 1
            taken = self._quick_drops >= QUICK_DROPS
        else:
            self._quick_drops = 0
            taken = False
        if taken:
            self.health.count("sessions_taken_over")
            if not self._taken_over:
                log.warning(
                    "another client is using node id %s (MQTT client id %s): the broker keeps"
                    " only the last one connected; give every node its own [node] id"
                    " (backing off)",
                    self.node.id,
                    self.client_id,
                )
            self._taken_over = True
            self._show(State.DEGRADED, self._takeover(), error=closed.reason)
            return False
        why = self._takeover() if self._taken_over else self._unreachable()
        if self._show(State.DEGRADED, why, error=closed.reason):
            log.warning("link to %s lost: %s (reconnecting)", self._where(), closed.reason)
        return closed.code in (None, SERVER_SHUTTING_DOWN)

    async def _pause(self, seconds: float, *, probe: bool) -> None:
        """Wait before the next attempt; after a lost TCP connection, end the wait early
        when a cheap TCP probe finds the broker listening again."""
        self.health.beat(seconds + 5.0)
        interval = self.config.probe_interval_s
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while (left := deadline - loop.time()) > 0:
            if not probe or interval <= 0 or left <= interval:
                await asyncio.sleep(left)
                return
            await asyncio.sleep(min(left, interval * random.uniform(0.67, 1.33)))
            if await self._probe():
                self.health.count("probes_answered")
                return

    async def _probe(self) -> bool:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(min(2.0, self.config.connect_timeout_s)):
                transport, _ = await loop.create_connection(
                    asyncio.Protocol, self.config.host, self.config.port
                )
        except (OSError, TimeoutError):
            return False
        transport.close()
        return True

    # -- one link -----------------------------------------------------------------------

    async def _session(self, link: Link) -> Closed:
        assert self.publisher is not None and self.desk is not None
        self.link = link
        self.health.count("connects")
        log.info("connected to broker %s as %s", self._where(), link.options.client_id)
        try:
            commands = await self._subscribe(link)
            await self._announce(link)
            self._show_connected()
            async with asyncio.TaskGroup() as tg:
                tg.create_task(link.wait_closed(), name="sync-link")
                tg.create_task(self.publisher.drain(link), name="sync-drain")
                tg.create_task(self.publisher.acker(), name="sync-acker")
                tg.create_task(self.desk.serve(link), name="sync-commands")
                tg.create_task(self._steady(), name="sync-steady")
                if not commands:
                    tg.create_task(self._resubscribe(link), name="sync-resubscribe")
        except BaseExceptionGroup as group:
            _, rest = group.split(LinkLost)
            if rest is not None:
                raise (rest.exceptions[0] if len(rest.exceptions) == 1 else rest) from None
        finally:
            task = asyncio.current_task()
            if task is not None and task.cancelling() and not link.closed.done():
                await self._say_offline(link)
            # Every PUBACK that came (the offline status's came last) is deleted now.
            await self.publisher.settle()
        return link.closed.result()

    async def _say_offline(self, link: Link) -> None:
        # A clean shutdown says so itself; the will covers everything else.
        try:
            async with asyncio.timeout(2.0):
                await link.publish(
                    self.topics.status,
                    self._status_payload("offline"),
                    retain=True,
                    content_type=STATUS_CONTENT_TYPE,
                )
        except (SyncError, TimeoutError) as exc:
            log.debug("offline status not confirmed: %s", exc)

    async def _subscribe(self, link: Link) -> bool:
        topic = self.topics.cmd_filter
        try:
            await link.subscribe(topic, qos=1)
        except Refused as exc:
            if self._commands_refused is None:
                log.warning(
                    "broker refused the subscription to %s: %s (0x%02X); this node cannot be"
                    " commanded until its ACL allows reading it",
                    topic,
                    exc.name,
                    exc.code,
                )
            self._commands_refused = exc
            return False
        if self._commands_refused is not None:
            log.info("broker accepts the subscription to %s again", topic)
        self._commands_refused = None
        return True

    async def _resubscribe(self, link: Link) -> None:
        retry = Backoff(30.0, 600.0)
        while True:
            await asyncio.sleep(retry.next())
            if await self._subscribe(link):
                self._show_connected()
                return

    async def _announce(self, link: Link) -> None:
        try:
            await link.publish(
                self.topics.status,
                await self._birth(),
                retain=True,
                content_type=STATUS_CONTENT_TYPE,
            )
        except Refused as exc:
            if self._birth_refused is None:
                log.warning(
                    "broker refused the status publish on %s: %s (0x%02X)",
                    self.topics.status,
                    exc.name,
                    exc.code,
                )
            self._birth_refused = exc
            return
        self._birth_refused = None
        if self.on_birth is not None:
            self.on_birth()
        while self.notices:
            notice = self.notices[0]
            try:
                await publish_reply(link, notice.route, notice.payload)
            except LinkLost:
                raise
            except SyncError as exc:
                log.warning("notice on %s not delivered: %s", notice.route.topic, exc)
            self.notices.pop(0)

    async def _steady(self) -> None:
        """Beat while the link serves; once it has stayed up long enough, the backoff starts
        again from its base and a contested client id counts as settled."""
        started = time.monotonic()
        settled = False
        while True:
            self.health.beat(self._turn_s)
            await asyncio.sleep(self._turn_s / 2)
            if settled or time.monotonic() - started < self._stable_s:
                continue
            settled = True
            self._quick_drops = 0
            self._retry.reset()
            if self._taken_over:
                self._taken_over = False
                log.info("node id %s no longer contested", self.node.id)
                self._show_connected()
