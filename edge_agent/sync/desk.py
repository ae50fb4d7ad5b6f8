"""The command desk: screens every message as it arrives, serves signed commands first.

A flood of junk on `cmd/` cannot starve signed commands: the cheap checks run in the link's
message callback, a signed command waits in its own queue and is served before any refusal,
refusals are answered at a budgeted rate from a short queue (what does not fit is only
counted), and the log says each kind of refusal once a minute with a count.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque

from edge_agent.audit import Auditor
from edge_agent.errors import SyncError
from edge_agent.health import ComponentHealth
from edge_agent.sync.commands import CommandProcessor, Reply, ReplyRoute, Screened
from edge_agent.sync.limits import Budget, QuietLog
from edge_agent.sync.link import Link, LinkLost, Message

log = logging.getLogger(__name__)

REPLY_CONTENT_TYPE = "application/vnd.ioc.reply+json"
# Signed commands wait here (screened, cheap); refusals to answer wait apart, fewer.
COMMANDS_QUEUED = 32
REFUSALS_QUEUED = 16


class CommandDesk:
    """`on_message` is the link's callback; `serve(link)` answers, one reply at a time."""

    def __init__(
        self,
        processor: CommandProcessor,
        *,
        health: ComponentHealth,
        auditor: Auditor | None = None,
        replies_per_s: float = 5.0,
    ) -> None:
        self.processor = processor
        self.health = health
        self.auditor = auditor
        self._commands: deque[Screened] = deque()
        self._refusals: deque[Reply] = deque()
        self._ready = asyncio.Event()  # anything queued
        self._command_ready = asyncio.Event()  # a signed command queued
        self._reply_budget = Budget(rate=replies_per_s, burst=2 * replies_per_s)
        self._quiet = QuietLog(log)

    def on_message(self, message: Message) -> None:
        """Screen at once; queue a signed command, or count a refusal (and maybe answer)."""
        screened = self.processor.screen(message)
        if screened.signed:
            if len(self._commands) >= COMMANDS_QUEUED:
                self.health.count("commands_dropped_busy")
                self._quiet.warning("busy", "too many signed commands at once; one dropped")
                return
            self._commands.append(screened)
            self._command_ready.set()
            self._ready.set()
            return
        self._refused(screened)
        if len(self._refusals) >= REFUSALS_QUEUED:
            self.health.count("replies_skipped")
            return
        self._refusals.append(self.processor.refusal(screened))
        self._ready.set()

    def _refused(self, screened: Screened, code: str | None = None, text: str = "") -> None:
        if screened.rejected is not None:
            code, text = screened.rejected.code, str(screened.rejected)
        assert code is not None
        self.health.count(f"commands_rejected_{code}")
        verb = screened.route.verb
        self._quiet.warning(code, "command %s rejected (%s): %s", verb, code, text)
        if self.auditor is not None:
            self.auditor.record(
                "command_rejected", code, source=screened.source, detail=f"{verb}: {text}"
            )

    async def serve(self, link: Link) -> None:
        """Answer queued messages over `link`, signed commands first (never returns)."""
        while True:
            if self._commands:
                screened = self._commands.popleft()
                reply = await self.processor.execute(screened)
                if reply.code is not None:
                    self._refused(screened, reply.code, reply.message)
            elif self._refusals:
                wait = self._reply_budget.wait_s()
                if wait > 0:  # a signed command may still come first
                    self._command_ready.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(wait):
                            await self._command_ready.wait()
                    continue
                self._reply_budget.take()
                reply = self._refusals.popleft()
            else:
                self._ready.clear()
                await self._ready.wait()
                continue
            self.health.count("commands")
            try:
                await publish_reply(link, reply.route, reply.payload)
            except LinkLost:
                raise
            except SyncError as exc:  # Refused too: the ACL does not let us answer there
                self._quiet.warning(
                    "reply", "reply on %s not delivered: %s", reply.route.topic, exc
                )
            finally:
                if reply.then is not None:
                    # config.set wrote the file: restart (with its safety net) even if the
                    # reply was lost with the link.
                    reply.then(reply.route)


async def publish_reply(link: Link, route: ReplyRoute, payload: bytes) -> None:
    await link.publish(
        route.topic,
        payload,
        content_type=REPLY_CONTENT_TYPE,
        correlation_data=route.correlation_data,
    )
