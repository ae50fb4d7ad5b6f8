"""Everything the province does on the broker, over `edge_agent.sync.link.Link`.

The one module of `ioc/` that speaks MQTT: the receiver's subscription (persistent session,
manual acks, optionally an MQTT 5 shared subscription) and the request/reply of `ioc send`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from edge_agent.backoff import Backoff
from edge_agent.errors import SyncError
from edge_agent.sync.link import Link
from edge_agent.sync.values import LinkOptions, Message

log = logging.getLogger(__name__)

Deliver = Callable[[Link, Message], None]


@dataclass(frozen=True)
class Subscription:
    """What the receiver subscribes to. With a share group, data is split between the
    group's receivers (`$share/{group}/...`); statuses never are, since a shared
    subscription gets no retained messages and every receiver keeps the fleet current."""

    prefix: str
    share_group: str | None = None

    def __post_init__(self) -> None:
        group = self.share_group
        if group is not None and (not group or any(c in group for c in "/+#$")):
            raise ValueError(f"share group {group!r} must be one topic level without wildcards")

    @property
    def filters(self) -> list[str]:
        data = f"{self.prefix}/+/+/data/#"
        if self.share_group:
            data = f"$share/{self.share_group}/{data}"
        return [data, f"{self.prefix}/+/+/status"]


class Subscriber:
    """Keeps one persistent, manually acknowledged subscription up, reconnecting with
    backoff. Each message goes to `deliver(link, message)`; the caller acks it on that
    link once its rows are committed (a link gone by then: the broker sends it again)."""

    def __init__(
        self,
        options: LinkOptions,
        subscription: Subscription,
        deliver: Deliver,
        *,
        backoff: Backoff | None = None,
        on_state: Callable[[bool], None] | None = None,
    ) -> None:
        if not options.manual_ack:
            raise ValueError("the receiver's link must use manual acks")
        self.options = options
        self.subscription = subscription
        self.deliver = deliver
        self.backoff = backoff or Backoff(0.5, 30.0)
        self.on_state = on_state
        self.link: Link | None = None
        self.ready = asyncio.Event()
        self.connects = 0
        self._warned_at = 0.0

    def _warn(self, text: str, *args: object) -> None:
        # Rate-limited: a broker down for hours must not fill the journal.
        now = time.monotonic()
        if now - self._warned_at >= 60.0:
            self._warned_at = now
            log.warning(text, *args)

    def _new_link(self) -> Link:
        def on_message(message: Message) -> None:
            self.deliver(link, message)

        link = Link(self.options, on_message=on_message)
        return link

    async def run(self) -> None:
        where = f"{self.options.host}:{self.options.port}"
        while True:
            link = self._new_link()
            try:
                async with link:
                    for topic_filter in self.subscription.filters:
                        await link.subscribe(topic_filter, qos=1)
                    self.link = link
                    self.connects += 1
                    self.backoff.reset()
                    self.ready.set()
                    if self.on_state is not None:
                        self.on_state(True)
                    log.info(
                        "receiving from %s as %s: %s",
                        where,
                        self.options.client_id,
                        ", ".join(self.subscription.filters),
                    )
                    # Not `await link.closed`: cancelling this task would cancel that
                    # future itself, and a link whose `closed` is done skips its disconnect.
                    await asyncio.wait([link.closed])
                    reason = link.closed.result().reason
                self._warn("link to %s lost: %s (reconnecting)", where, reason)
            except SyncError as exc:
                self._warn("cannot receive from %s: %s (retrying)", where, exc)
            finally:
                if self.link is not None and self.on_state is not None:
                    self.on_state(False)
                self.link = None
                self.ready.clear()
            await asyncio.sleep(self.backoff.next())


async def request(
    options: LinkOptions,
    *,
    topic: str,
    payload: bytes,
    reply_topic: str,
    correlation: bytes,
    matches: Callable[[Message], bool],
    timeout_s: float,
) -> Message:
    """Publish one command and wait for its reply. MQTT 5 carries `reply_topic` and the
    correlation data with it; an MQTT 3.1.1 node answers on its fixed reply topic, which
    the caller then passes as `reply_topic`, and `matches` picks the reply out."""
    replies: asyncio.Queue[Message] = asyncio.Queue()
    async with (
        asyncio.timeout(timeout_s),
        Link(options, on_message=replies.put_nowait) as link,
    ):
        await link.subscribe(reply_topic, qos=1)
        v5 = options.protocol == "5"
        await link.publish(
            topic,
            payload,
            response_topic=reply_topic if v5 else None,
            correlation_data=correlation if v5 else None,
        )
        while True:
            message = await replies.get()
            if matches(message):
                return message


async def first_message(
    options: LinkOptions, topic_filter: str, *, timeout_s: float
) -> Message | None:
    """The first message on `topic_filter`, typically a retained one the broker sends right
    after the SUBACK; None if nothing came within `timeout_s`."""
    found: asyncio.Queue[Message] = asyncio.Queue()
    async with Link(options, on_message=found.put_nowait) as link:
        await link.subscribe(topic_filter, qos=1)
        try:
            async with asyncio.timeout(timeout_s):
                return await found.get()
        except TimeoutError:
            return None
