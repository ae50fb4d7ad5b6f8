"""Remote commands from the IOC: checked end to end, answered on `reply/{verb}`.

Two steps. `screen()` runs in the link's message callback and does every cheap check (size,
retained, UTF-8, JSON, fields, signature, node, times), so a flood of junk costs little and
valid commands can be served ahead of it. `execute()` runs a screened command (replay
check, then the verb). Nothing a sender can put in a message raises out of either.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import os
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from edge_agent.contract import (
    CONTRACT_VERSION,
    ContractError,
    Topics,
    dumps,
    parse_iso,
    utc_iso,
)
from edge_agent.errors import CameraError, ConfigError
from edge_agent.sync.link import Message
from edge_agent.sync.signing import Verifier

log = logging.getLogger(__name__)

VERBS = ("ping", "status", "config.get", "config.set", "snapshot", "outbox.stats")
CORRELATION_MAX = 1024
# An MQTT 5 user property a broker (or the IOC's bridge) may set to name the sender.
SOURCE_PROPERTY = "client_id"
_SOURCE = re.compile(r"^[\x21-\x7e]{1,128}$")


@dataclass(frozen=True)
class ReplyRoute:
    """Where the answers to one command go: a topic checked against the contract."""

    topic: str
    verb: str
    command_id: str | None = None
    correlation_data: bytes | None = None


@dataclass(frozen=True)
class Applied:
    """The result of `config.set`: `then(route)` runs after the reply went out (the
    restart), with the route a later answer (a rollback) should take."""

    result: dict[str, Any]
    then: Callable[[ReplyRoute], None] | None = None


class CommandHandlers(Protocol):
    """What the commands act on; app.py provides the real implementation.

    `config_set` raises `ConfigError` (or ValueError) for changes it refuses; `snapshot`
    raises LookupError for an unknown camera, `CameraError` for one without a frame."""

    def status(self) -> dict[str, Any]: ...
    def config_get(self) -> dict[str, Any]: ...
    async def config_set(self, changes: dict[str, Any]) -> Applied: ...
    async def snapshot(self, camera: str) -> bytes: ...
    async def outbox_stats(self) -> dict[str, Any]: ...


class Rejected(Exception):
    """Why a command is refused; `signed` once its signature verified (the IOC sent it)."""

    def __init__(self, code: str, message: str, *, signed: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.signed = signed


@dataclass(frozen=True)
class Screened:
    """A message after the cheap checks: a command to execute, or why it was refused."""

    route: ReplyRoute
    source: str | None
    command: dict[str, Any] | None = None
    rejected: Rejected | None = None

    @property
    def signed(self) -> bool:
        """Signed by a key we trust (accepted, or refused for a reason after the signature):
        such a message is the IOC's and is served ahead of anything unsigned."""
        return self.command is not None or (self.rejected is not None and self.rejected.signed)


@dataclass(frozen=True)
class Reply:
    route: ReplyRoute
    payload: bytes
    code: str | None = None  # None when ok
    message: str = ""
    then: Callable[[ReplyRoute], None] | None = None


def reply_payload(
    *,
    node: str,
    route: ReplyRoute,
    result: Any = None,
    error: tuple[str, str] | None = None,
) -> bytes:
    """The `reply` JSON for a command: `result` when ok, else `error` (code, message)."""
    body: dict[str, Any] = {
        "v": CONTRACT_VERSION,
        "id": route.command_id,
        "node": node,
        "verb": route.verb,
        "ts": utc_iso(time.time()),
    }
    if error is None:
        body.update(ok=True, result=result)
    else:
        body.update(ok=False, error={"code": error[0], "message": error[1]})
    try:
        return dumps(body)
    except (ContractError, UnicodeEncodeError):
        # A message quoting what the sender sent (a lone surrogate) must still be sent.
        return json.dumps(body, ensure_ascii=True, allow_nan=False, default=str).encode()


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is not a finite number")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (the contract allows no NaN or infinity)")


class ReplayGuard:
    """Command ids seen, kept until their expiry (plus skew) and persisted across restarts."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.seen: dict[str, float] = {}
        if path is not None and path.exists():
            try:
                data = json.loads(path.read_text())
                self.seen = {str(k): float(v) for k, v in data.items()}
            except (OSError, ValueError, AttributeError) as exc:
                log.warning("ignoring unreadable replay record %s: %s", path, exc)

    def check_and_add(self, command_id: str, keep_until: float) -> bool:
        now = time.time()
        self.seen = {k: v for k, v in self.seen.items() if v > now}
        if command_id in self.seen:
            return False
        self.seen[command_id] = keep_until
        if self.path is not None:
            tmp = self.path.with_suffix(".tmp")
            try:
                tmp.write_text(json.dumps(self.seen))
                os.replace(tmp, self.path)
            except OSError as exc:
                log.warning("cannot persist replay record %s: %s", self.path, exc)
        return True


_REQUIRED: dict[str, type] = {
    "v": int,
    "id": str,
    "node": str,
    "verb": str,
    "args": dict,
    "issued_at": str,
    "expires_at": str,
}


class CommandProcessor:
    def __init__(
        self,
        *,
        topics: Topics,
        handlers: CommandHandlers,
        verifier: Verifier,
        max_payload_bytes: int,
        clock_skew_s: float,
        max_ttl_s: float,
        replay: ReplayGuard,
    ) -> None:
        self.topics = topics
        self.node = topics.node
        self.handlers = handlers
        self.verifier = verifier
        self.max_payload_bytes = max_payload_bytes
        self.clock_skew_s = clock_skew_s
        self.max_ttl_s = max_ttl_s
        self.replay = replay
        self._cmd_prefix = f"{topics.base}/cmd/"
        self._dispatch: dict[str, Callable[[dict[str, Any]], Awaitable[Any]]] = {
            "ping": self._ping,
            "status": self._status,
            "config.get": self._config_get,
            "config.set": self._config_set,
            "snapshot": self._snapshot,
            "outbox.stats": self._outbox_stats,
        }

    # -- step 1, in the message callback ------------------------------------------------

    def screen(self, message: Message) -> Screened:
        """Every check that needs no I/O; never raises."""
        route = self._route(message)
        source = self._source(message)
        try:
            topic_verb = message.topic.removeprefix(self._cmd_prefix)
            command = self._verified(message, topic_verb)
        except Rejected as exc:
            return Screened(route, source, rejected=exc)
        except Exception as exc:  # a check we did not think of: refused, never raised
            log.exception("command check failed on %s", route.topic)
            return Screened(route, source, rejected=Rejected("failed", f"check failed: {exc}"))
        # Signed from here on: the id is echoed, and what is refused now the IOC sent.
        route = ReplyRoute(route.topic, route.verb, command["id"], route.correlation_data)
        try:
            self._check_signed(command, message, route)
        except Rejected as exc:
            exc.signed = True
            return Screened(route, source, rejected=exc)
        return Screened(route, source, command=command)

    def _route(self, message: Message) -> ReplyRoute:
        verb = message.topic[len(self._cmd_prefix) :]
        if not message.topic.startswith(self._cmd_prefix) or verb not in VERBS:
            verb = "invalid"
        topic = self.topics.reply(verb)
        if message.response_topic is not None and self.topics.owns_reply_topic(
            message.response_topic
        ):
            topic = message.response_topic
        correlation = message.correlation_data
        if correlation is not None and len(correlation) > CORRELATION_MAX:
            correlation = None
        return ReplyRoute(topic, verb, None, correlation)

    @staticmethod
    def _source(message: Message) -> str | None:
        for key, value in message.user_properties:
            if key == SOURCE_PROPERTY and _SOURCE.match(value):
                return value
        return None

    def _verified(self, message: Message, verb: str) -> dict[str, Any]:
        """The command, once it parses and its signature verifies."""
        if len(message.payload) > self.max_payload_bytes:
            raise Rejected(
                "too_large", f"{len(message.payload)} bytes > cap {self.max_payload_bytes}"
            )
        if message.retain:
            raise Rejected("retained", "retained commands are refused (they would replay)")
        try:
            text = message.payload.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise Rejected("bad_utf8", f"payload is not UTF-8: {exc}") from None
        try:
            command = json.loads(text, parse_float=_finite, parse_constant=_no_constant)
        except RecursionError:
            raise Rejected("bad_json", "payload is nested too deeply") from None
        except ValueError as exc:  # JSONDecodeError, NaN/Infinity, a number too long
            raise Rejected("bad_json", f"payload is not contract JSON: {exc}") from None
        if not isinstance(command, dict):
            raise Rejected("bad_schema", "a command is a JSON object")
        for key, kind in _REQUIRED.items():
            value = command.get(key)
            if not isinstance(value, kind) or isinstance(value, bool):
                raise Rejected("bad_schema", f"field {key!r} is missing or of the wrong type")
        if command["v"] != CONTRACT_VERSION:
            raise Rejected("bad_version", f"contract version {command['v']} is not supported")
        if command["verb"] != verb:
            raise Rejected("bad_schema", "verb differs from the topic")
        if command["verb"] not in self._dispatch:
            raise Rejected("unknown_verb", f"unknown verb {command['verb'][:64]!r}")
        if not self.verifier.configured:
            raise Rejected("no_keys", "no command keys are configured on this node")
        if not isinstance(command.get("alg"), str) or not isinstance(command.get("sig"), str):
            raise Rejected("bad_signature", "the command is not signed (alg and sig)")
        if not self.verifier.verify(command):
            raise Rejected("bad_signature", "signature does not verify")
        return command

    def _check_signed(self, command: dict[str, Any], message: Message, route: ReplyRoute) -> None:
        if message.response_topic is not None and route.topic != message.response_topic:
            raise Rejected(
                "bad_response_topic",
                f"response topic {message.response_topic[:100]!r} is not under"
                f" {self.topics.base}/reply/ (or has wildcards or empty levels)",
            )
        if message.correlation_data is not None and route.correlation_data is None:
            raise Rejected("bad_schema", f"correlation data over {CORRELATION_MAX} bytes")
        if command["node"] != self.node:
            raise Rejected("wrong_node", f"command is for node {command['node'][:64]!r}")
        try:
            issued = parse_iso(command["issued_at"])
            expires = parse_iso(command["expires_at"])
        except (ValueError, OverflowError, ContractError):
            raise Rejected("bad_schema", "issued_at/expires_at are not RFC 3339 times") from None
        now = time.time()
        if issued > now + self.clock_skew_s:
            raise Rejected("future", "issued_at is in the future (check the clocks)")
        if expires < now - self.clock_skew_s:
            raise Rejected("expired", f"expired at {command['expires_at']}")
        if expires - issued > self.max_ttl_s:
            raise Rejected("ttl_too_long", f"valid for more than {self.max_ttl_s:.0f} s")

    # -- step 2, in the command task ----------------------------------------------------

    def refusal(self, screened: Screened) -> Reply:
        """The answer to a screened message that was refused."""
        assert screened.rejected is not None
        error = (screened.rejected.code, str(screened.rejected))
        payload = reply_payload(node=self.node, route=screened.route, error=error)
        return Reply(screened.route, payload, code=error[0], message=error[1])

    async def execute(self, screened: Screened) -> Reply:
        """Run a screened command; every outcome is a reply, nothing raises."""
        command = screened.command
        if command is None:
            return self.refusal(screened)
        route = screened.route
        then: Callable[[ReplyRoute], None] | None = None
        try:
            keep_until = parse_iso(command["expires_at"]) + self.clock_skew_s
            if not self.replay.check_and_add(command["id"], keep_until):
                raise Rejected("replayed", f"command id {command['id']} was already seen")
            result = await self._dispatch[command["verb"]](command["args"])
            if isinstance(result, Applied):
                then = result.then
                result = result.result
            payload = reply_payload(node=self.node, route=route, result=result)
        except Rejected as exc:
            return self.refusal(Screened(route, screened.source, rejected=exc))
        except Exception as exc:  # a handler failure is answered, never fatal
            log.exception("command %s failed", route.verb)
            error = ("failed", str(exc))
            payload = reply_payload(node=self.node, route=route, error=error)
            return Reply(route, payload, code="failed", message=error[1])
        return Reply(route, payload, then=then)

    async def _ping(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"pong": True, "time": utc_iso(time.time())}

    async def _status(self, args: dict[str, Any]) -> dict[str, Any]:
        return self.handlers.status()

    async def _config_get(self, args: dict[str, Any]) -> dict[str, Any]:
        return self.handlers.config_get()

    async def _config_set(self, args: dict[str, Any]) -> Applied:
        changes = args.get("changes")
        if not isinstance(changes, dict) or not changes:
            raise Rejected("bad_args", "config.set needs args.changes: {dotted.key: value}")
        try:
            return await self.handlers.config_set(changes)
        except (ConfigError, ValueError) as exc:
            raise Rejected("invalid_config", str(exc)) from None

    async def _snapshot(self, args: dict[str, Any]) -> dict[str, Any]:
        camera = args.get("camera")
        if not isinstance(camera, str):
            raise Rejected("bad_args", "snapshot needs args.camera")
        try:
            jpeg = await self.handlers.snapshot(camera)
        except LookupError as exc:
            raise Rejected("unknown_camera", str(exc)) from None
        except CameraError as exc:  # configured, but offline or no frame yet
            raise Rejected("camera_unavailable", str(exc)) from None
        return {
            "camera": camera,
            "content_type": "image/jpeg",
            "jpeg_base64": base64.b64encode(jpeg).decode("ascii"),
        }

    async def _outbox_stats(self, args: dict[str, Any]) -> dict[str, Any]:
        return await self.handlers.outbox_stats()
