"""Remote commands from the IOC: checked end to end, answered on `reply/{verb}`.

Every reject gets a reply saying why and one log line; nothing a sender can put in a
command payload raises out of `CommandProcessor.handle`.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from edge_agent.contract import CONTRACT_VERSION, ContractError, dumps, parse_iso, utc_iso
from edge_agent.errors import CameraError
from edge_agent.sync.link import Message
from edge_agent.sync.signing import Verifier

log = logging.getLogger(__name__)

VERBS = ("ping", "status", "config.get", "config.set", "snapshot", "outbox.stats")


@dataclass(frozen=True)
class Applied:
    """The result of `config.set`: `then` runs after the reply went out (the restart)."""

    result: dict[str, Any]
    then: Callable[[], None] | None = None


class CommandHandlers(Protocol):
    """What the commands act on; app.py provides the real implementation."""

    def status(self) -> dict[str, Any]: ...
    def config_get(self) -> dict[str, Any]: ...
    async def config_set(self, changes: dict[str, Any]) -> Applied: ...
    async def snapshot(self, camera: str) -> bytes: ...
    async def outbox_stats(self) -> dict[str, Any]: ...


class Rejected(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Reply:
    verb: str
    payload: bytes
    response_topic: str | None
    correlation_data: bytes | None
    then: Callable[[], None] | None = None


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


_REQUIRED: dict[str, type | tuple[type, ...]] = {
    "v": int,
    "id": str,
    "node": str,
    "verb": str,
    "args": dict,
    "issued_at": str,
    "expires_at": str,
    "alg": str,
    "sig": str,
}


class CommandProcessor:
    def __init__(
        self,
        *,
        node: str,
        handlers: CommandHandlers,
        verifier: Verifier,
        max_payload_bytes: int,
        clock_skew_s: float,
        max_ttl_s: float,
        replay: ReplayGuard,
        on_reject: Callable[[str], None] | None = None,
    ) -> None:
        self.node = node
        self.handlers = handlers
        self.verifier = verifier
        self.max_payload_bytes = max_payload_bytes
        self.clock_skew_s = clock_skew_s
        self.max_ttl_s = max_ttl_s
        self.replay = replay
        self.on_reject = on_reject
        self._dispatch: dict[str, Callable[[dict[str, Any]], Awaitable[Any]]] = {
            "ping": self._ping,
            "status": self._status,
            "config.get": self._config_get,
            "config.set": self._config_set,
            "snapshot": self._snapshot,
            "outbox.stats": self._outbox_stats,
        }

    async def handle(self, message: Message) -> Reply:
        topic_verb = message.topic.rsplit("/", 1)[-1]
        command_id: str | None = None
        then: Callable[[], None] | None = None
        try:
            command = self._check(message, topic_verb)
            command_id = command["id"]
            result = await self._dispatch[command["verb"]](command["args"])
            if isinstance(result, Applied):
                then = result.then
                result = result.result
            body: dict[str, Any] = {"ok": True, "result": result}
        except Rejected as exc:
            if self.on_reject is not None:
                self.on_reject(exc.code)
            log.warning("command on %s rejected (%s): %s", message.topic, exc.code, exc)
            body = {"ok": False, "error": {"code": exc.code, "message": str(exc)}}
        except Exception as exc:  # a handler failure is answered, never fatal
            log.exception("command %s failed", topic_verb)
            body = {"ok": False, "error": {"code": "failed", "message": str(exc)}}
        reply = {
            "v": CONTRACT_VERSION,
            "id": command_id,
            "node": self.node,
            "verb": topic_verb,
            "ts": utc_iso(time.time()),
            **body,
        }
        return Reply(
            verb=topic_verb if topic_verb in VERBS else "invalid",
            payload=dumps(reply),
            response_topic=message.response_topic,
            correlation_data=message.correlation_data,
            then=then,
        )

    def _check(self, message: Message, topic_verb: str) -> dict[str, Any]:
        if len(message.payload) > self.max_payload_bytes:
            raise Rejected(
                "too_large", f"{len(message.payload)} bytes > cap {self.max_payload_bytes}"
            )
        if message.retain:
            raise Rejected("retained", "retained commands are refused (they would replay)")
        try:
            command = json.loads(message.payload.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise Rejected("bad_utf8", f"payload is not UTF-8: {exc}") from None
        except json.JSONDecodeError as exc:
            raise Rejected("bad_json", f"payload is not JSON: {exc}") from None
        if not isinstance(command, dict):
            raise Rejected("bad_schema", "a command is a JSON object")
        for key, kind in _REQUIRED.items():
            if not isinstance(command.get(key), kind) or isinstance(command.get(key), bool):
                raise Rejected("bad_schema", f"field {key!r} is missing or of the wrong type")
        if command["v"] != CONTRACT_VERSION:
            raise Rejected("bad_version", f"contract version {command['v']} is not supported")
        if command["verb"] != topic_verb:
            raise Rejected("bad_schema", "verb differs from the topic")
        if command["verb"] not in self._dispatch:
            raise Rejected("unknown_verb", f"unknown verb {command['verb']!r}")
        if not self.verifier.configured:
            raise Rejected("no_keys", "no command keys are configured on this node")
        if not self.verifier.verify(command):
            raise Rejected("bad_signature", "signature does not verify")
        if command["node"] != self.node:
            raise Rejected("wrong_node", f"command is for node {command['node']!r}")
        try:
            issued = parse_iso(command["issued_at"])
            expires = parse_iso(command["expires_at"])
        except (ValueError, ContractError):
            raise Rejected("bad_schema", "issued_at/expires_at are not RFC 3339 times") from None
        now = time.time()
        if issued > now + self.clock_skew_s:
            raise Rejected("future", "issued_at is in the future (check the clocks)")
        if expires < now - self.clock_skew_s:
            raise Rejected("expired", f"expired at {command['expires_at']}")
        if expires - issued > self.max_ttl_s:
            raise Rejected("ttl_too_long", f"valid for more than {self.max_ttl_s:.0f} s")
        if not self.replay.check_and_add(command["id"], expires + self.clock_skew_s):
            raise Rejected("replayed", f"command id {command['id']} was already seen")
        return command

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
        except ValueError as exc:
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
