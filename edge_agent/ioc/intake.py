"""From the wire to checked events: topic, size, framing, version, schema, node.

Everything a message can be wrong in is decided here, before anything is stored: the
receiver stores what `Intake.parse` accepts and counts what it refuses by `Invalid` reason.
Validation runs against the contract's own JSON Schema (`edge_agent/schema`), compiled once
by jsonschema-rs, and JSON is parsed by orjson (both in the `ioc` extra): together about
three microseconds per envelope, where the standard library's parser and the pure-Python
validator cost some hundreds. orjson refuses NaN, infinities and lone surrogates itself;
duplicate keys keep the last value, as the standard library does, and the stores write the
parsed objects, never the raw text, so what was validated is what is stored.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from datetime import datetime
from importlib import resources
from typing import Any

from edge_agent.contract import CONTRACT_VERSION, valid_segment
from edge_agent.errors import DependencyMissingError

# docs/contract.md: a compressed batch is one zstd frame and starts with these bytes.
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class Invalid(enum.StrEnum):
    """Why a message, or one envelope of a batch, was refused."""

    MALFORMED = "malformed"  # not UTF-8, not JSON, a broken zstd frame, NaN or infinity
    UNKNOWN_VERSION = "unknown_version"  # `v` is not a version this receiver reads
    SCHEMA = "schema"  # JSON, v=1, but not what the contract's schema allows
    OVERSIZED = "oversized"  # above --max-payload-bytes, or inflating beyond the cap
    FOREIGN_TOPIC = "foreign_topic"  # not {prefix}/{district}/{node}/status|data/{stream}
    NODE_MISMATCH = "node_mismatch"  # the payload's node (or district) is not the topic's


@dataclass(frozen=True)
class Refusal:
    reason: Invalid
    detail: str
    events: int = 1  # envelopes it stood for (a whole refused batch: 1, it is one message)


@dataclass(frozen=True)
class DataMessage:
    """The accepted envelopes of one `data/...` message (and what was refused of it)."""

    district: str
    node: str
    stream: str
    envelopes: list[dict[str, Any]]
    refused: list[Refusal] = field(default_factory=list)


@dataclass(frozen=True)
class StatusMessage:
    district: str
    node: str
    payload: dict[str, Any]
    retained: bool


@dataclass(frozen=True)
class Topic:
    district: str
    node: str
    leaf: str  # "status" or "data"
    stream: str | None


class ContractValidator:
    """The contract's JSON Schema definitions, compiled once."""

    def __init__(self) -> None:
        try:
            import jsonschema_rs
        except ImportError:
            raise DependencyMissingError(
                "the receiver validates against the contract with jsonschema-rs:"
                " pip install 'edge-agent[ioc]'"
            ) from None
        root = json.loads(
            resources.files("edge_agent.schema").joinpath("contract.schema.json").read_text()
        )
        self._errors = jsonschema_rs.ValidationError
        self._compiled = {
            name: jsonschema_rs.validator_for({**root, "$ref": f"#/$defs/{name}"})
            for name in ("envelope", "batch", "status")
        }

    def is_valid(self, definition: str, instance: Any) -> bool:
        return bool(self._compiled[definition].is_valid(instance))

    def explain(self, definition: str, instance: Any) -> str:
        """The first violation, in one line with its JSON path (for logs)."""
        try:
            self._compiled[definition].validate(instance)
        except self._errors as exc:
            path = "/".join(str(p) for p in getattr(exc, "instance_path", []) or [])
            message = str(getattr(exc, "message", "") or str(exc).splitlines()[0])
            return f"{message} at /{path}" if path else message
        return "valid"


class Rejected(Exception):
    def __init__(self, reason: Invalid, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _json_loader() -> Any:
    try:
        import orjson
    except ImportError:
        raise DependencyMissingError(
            "the receiver parses JSON with orjson: pip install 'edge-agent[ioc]'"
        ) from None
    return orjson.loads, orjson.JSONDecodeError


def _inflate(payload: bytes, cap: int) -> bytes:
    import zstandard

    try:
        declared = zstandard.frame_content_size(payload)
        if 0 <= declared <= cap:
            return bytes(zstandard.ZstdDecompressor().decompress(payload))
        if declared > cap:
            raise Rejected(Invalid.OVERSIZED, f"batch inflates to {declared} bytes (cap {cap})")
        # No size in the frame header: inflate in steps and stop at the cap, so a small
        # frame cannot make us allocate gigabytes.
        reader = zstandard.ZstdDecompressor().stream_reader(payload)
        chunks: list[bytes] = []
        size = 0
        while chunk := reader.read(min(1 << 20, cap + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
            if size > cap:
                raise Rejected(Invalid.OVERSIZED, f"batch inflates beyond {cap} bytes")
        return b"".join(chunks)
    except zstandard.ZstdError as exc:
        raise Rejected(Invalid.MALFORMED, f"bad zstd frame: {exc}") from None


MAX_SEQ = 2**63 - 1  # a BIGINT in PostgreSQL, an INTEGER in SQLite
TIME_FIELDS = {"count": ("from", "to"), "camera": ("from", "to")}


def bad_time(value: str) -> bool:
    """The schema's pattern admits `2026-13-45T99:99:99Z`; the stores must not meet it."""
    try:
        datetime.fromisoformat(value[:-1])
    except ValueError:
        return True
    return False


class Intake:
    """Turns one received message into accepted events and refusals; never raises for
    anything a sender can put on the wire."""

    def __init__(
        self,
        prefix: str,
        *,
        validator: ContractValidator | None = None,
        max_payload_bytes: int = 16 * 1024 * 1024,
        max_inflated_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self.prefix = prefix.rstrip("/")
        self.validator = validator or ContractValidator()
        self.max_payload_bytes = max_payload_bytes
        self.max_inflated_bytes = max_inflated_bytes
        self._loads_raw, self._decode_error = _json_loader()

    def _loads(self, raw: bytes) -> Any:
        try:
            return self._loads_raw(raw)
        except self._decode_error as exc:
            raise Rejected(Invalid.MALFORMED, f"not UTF-8 JSON: {exc}") from None

    def topic(self, topic: str) -> Topic:
        head = self.prefix + "/"
        if not topic.startswith(head):
            raise Rejected(Invalid.FOREIGN_TOPIC, "outside the topic prefix")
        parts = topic[len(head) :].split("/")
        if len(parts) == 3 and parts[2] == "status":
            district, node, leaf, stream = parts[0], parts[1], "status", None
        elif len(parts) == 4 and parts[2] == "data":
            district, node, leaf, stream = parts[0], parts[1], "data", parts[3]
        else:
            raise Rejected(Invalid.FOREIGN_TOPIC, "not {district}/{node}/status|data/{stream}")
        if not all(valid_segment(p) for p in (district, node, stream or "x")):
            raise Rejected(Invalid.FOREIGN_TOPIC, "a topic level is not [A-Za-z0-9_.-]+")
        return Topic(district, node, leaf, stream)

    def parse(
        self, topic: str, payload: bytes, *, retained: bool = False
    ) -> DataMessage | StatusMessage | Refusal | None:
        """None for an empty retained status (a cleared topic): nothing to store."""
        try:
            where = self.topic(topic)
            if len(payload) > self.max_payload_bytes:
                raise Rejected(
                    Invalid.OVERSIZED, f"{len(payload)} bytes (cap {self.max_payload_bytes})"
                )
            if where.leaf == "status":
                if not payload:
                    return None
                return self._status(where, payload, retained)
            return self._data(where, payload)
        except Rejected as exc:
            return Refusal(exc.reason, exc.detail)

    def _status(self, where: Topic, payload: bytes, retained: bool) -> StatusMessage:
        obj = self._loads(payload)
        if isinstance(obj, dict) and obj.get("v") != CONTRACT_VERSION:
            raise Rejected(Invalid.UNKNOWN_VERSION, f"status v={obj.get('v')!r}")
        if not self.validator.is_valid("status", obj):
            raise Rejected(Invalid.SCHEMA, self.validator.explain("status", obj))
        if bad_time(obj["ts"]):
            raise Rejected(Invalid.SCHEMA, f"ts {obj['ts']!r} is not a time")
        if obj["node"] != where.node or obj["district"] != where.district:
            raise Rejected(
                Invalid.NODE_MISMATCH,
                f"status of {obj['district']}/{obj['node']} on the topic of"
                f" {where.district}/{where.node}",
            )
        return StatusMessage(where.district, where.node, obj, retained)

    def _data(self, where: Topic, payload: bytes) -> DataMessage:
        assert where.stream is not None
        if where.stream == "batch":
            if payload.startswith(ZSTD_MAGIC):
                payload = _inflate(payload, self.max_inflated_bytes)
            obj = self._loads(payload)
            if isinstance(obj, dict) and obj.get("v") != CONTRACT_VERSION:
                raise Rejected(Invalid.UNKNOWN_VERSION, f"batch v={obj.get('v')!r}")
            if not isinstance(obj, dict) or not isinstance(obj.get("batch"), list):
                raise Rejected(Invalid.SCHEMA, 'a batch is {"v": 1, "batch": [...]}')
            items: list[Any] = obj["batch"]
            whole = self.validator.is_valid("batch", obj)
        else:
            items = [self._loads(payload)]
            whole = False
        accepted: list[dict[str, Any]] = []
        refused: list[Refusal] = []
        node = where.node
        for item in items:
            problem = None if whole else self._envelope_problem(item)
            if problem is None:
                problem = self._beyond_schema(item, node)
            if problem is None:
                accepted.append(item)
            else:
                refused.append(problem)
        if not accepted:
            if len(refused) == 1:
                raise Rejected(refused[0].reason, refused[0].detail)
            if not refused:
                raise Rejected(Invalid.SCHEMA, "an empty batch")
        return DataMessage(where.district, node, where.stream, accepted, refused)

    def _envelope_problem(self, item: Any) -> Refusal | None:
        if isinstance(item, dict) and item.get("v") != CONTRACT_VERSION:
            return Refusal(Invalid.UNKNOWN_VERSION, f"envelope v={item.get('v')!r}")
        if self.validator.is_valid("envelope", item):
            return None
        return Refusal(Invalid.SCHEMA, self.validator.explain("envelope", item))

    @staticmethod
    def _beyond_schema(item: dict[str, Any], node: str) -> Refusal | None:
        """What the schema cannot say: the topic's node, a seq a database can hold, real
        times."""
        if item["node"] != node:
            return Refusal(
                Invalid.NODE_MISMATCH, f"event of node {item['node']!r} on the topic of {node!r}"
            )
        seq = item["seq"]
        if type(seq) is not int or seq > MAX_SEQ:
            return Refusal(Invalid.SCHEMA, f"seq {seq!r} is not a 64-bit integer")
        if bad_time(item["ts"]):
            return Refusal(Invalid.SCHEMA, f"ts {item['ts']!r} is not a time")
        for name in TIME_FIELDS.get(item["kind"], ()):
            value = item["data"].get(name)
            if value is not None and bad_time(value):
                return Refusal(Invalid.SCHEMA, f"data.{name} {value!r} is not a time")
        return None
