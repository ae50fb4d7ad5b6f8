"""The wire contract between a node and the provincial IOC (shared with the receiver).

Version 1. Topics are `{prefix}/{district}/{node}/{status|data/{stream}|cmd/{verb}|reply/{verb}}`;
every event travels in an `Envelope`. `docs/contract.md` documents the same thing for people.
"""

from __future__ import annotations

import enum
import json
import math
import re
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

CONTRACT_VERSION = 1

_SEGMENT = re.compile(r"^[A-Za-z0-9_.-]+$")
# A reply topic names at most this many characters: enough for any request/response scheme,
# short enough that a sender cannot make us publish to an absurd topic.
REPLY_TOPIC_MAX = 256


class Kind(enum.StrEnum):
    READING = "reading"
    DETECTION = "detection"
    COUNT = "count"
    CAMERA = "camera"
    HEALTH = "health"
    GAP = "gap"
    ALERT = "alert"
    AUDIT = "audit"
    SENSOR = "sensor"
    DWELL = "dwell"
    STOPPED = "stopped"
    WRONG_WAY = "wrong_way"
    CROWD = "crowd"
    PLATE = "plate"


class Priority(enum.IntEnum):
    """Lower value = more important; eviction drops the highest value first."""

    ALERT = 0
    EVENT = 1
    READING = 2
    HEALTH = 3


PRIORITY_OF_KIND: dict[Kind, Priority] = {
    Kind.ALERT: Priority.ALERT,
    Kind.GAP: Priority.ALERT,
    Kind.AUDIT: Priority.ALERT,
    Kind.SENSOR: Priority.EVENT,
    Kind.DWELL: Priority.EVENT,
    Kind.STOPPED: Priority.EVENT,
    Kind.WRONG_WAY: Priority.EVENT,
    Kind.CROWD: Priority.EVENT,
    Kind.PLATE: Priority.EVENT,
    Kind.CAMERA: Priority.EVENT,
    Kind.DETECTION: Priority.EVENT,
    Kind.COUNT: Priority.EVENT,
    Kind.READING: Priority.READING,
    Kind.HEALTH: Priority.HEALTH,
}


# Streams the node itself publishes on (`data/{stream}`), or that mean something else on the
# wire (`data/batch` carries batches): no sensor or camera may take one of these names.
RESERVED_STREAMS = frozenset({"batch", "gap", "alert", "audit", "health", "status", "aqi"})


def stream_problem(name: str) -> str | None:
    """Why `name` cannot be a sensor's or camera's stream, or None when it can."""
    if not valid_segment(name):
        return "must be one topic level: letters, digits, '_', '.', '-'"
    if name.lower() in RESERVED_STREAMS:
        reserved = ", ".join(sorted(RESERVED_STREAMS))
        return f"{name!r} is reserved by the contract ({reserved}); choose another name"
    return None


class ContractError(ValueError):
    """A payload does not follow the contract."""


def valid_segment(value: str) -> bool:
    """True when `value` may be one MQTT topic level (no wildcards, separators or spaces)."""
    return bool(_SEGMENT.match(value))


@dataclass(frozen=True)
class Topics:
    """The topics of one node."""

    prefix: str
    district: str
    node: str

    def __post_init__(self) -> None:
        for name in ("district", "node"):
            if not valid_segment(getattr(self, name)):
                raise ContractError(f"{name} {getattr(self, name)!r} is not a valid topic level")

    @property
    def base(self) -> str:
        return f"{self.prefix}/{self.district}/{self.node}"

    @property
    def status(self) -> str:
        return f"{self.base}/status"

    def data(self, stream: str) -> str:
        return f"{self.base}/data/{stream}"

    @property
    def batch(self) -> str:
        return f"{self.base}/data/batch"

    def cmd(self, verb: str) -> str:
        return f"{self.base}/cmd/{verb}"

    @property
    def cmd_filter(self) -> str:
        return f"{self.base}/cmd/+"

    def reply(self, verb: str) -> str:
        return f"{self.base}/reply/{verb}"

    def owns_reply_topic(self, topic: str) -> bool:
        """True when `topic` may carry a reply: under this node's `reply/` subtree, every
        level a valid one (no wildcards, no empty levels), at most `REPLY_TOPIC_MAX` long."""
        head = f"{self.base}/reply/"
        if len(topic) > REPLY_TOPIC_MAX or not topic.startswith(head):
            return False
        return all(valid_segment(level) for level in topic[len(head) :].split("/"))


def utc_iso(ts: float) -> str:
    """Observation time as RFC 3339 UTC with milliseconds, e.g. `2026-11-27T18:26:06.123Z`."""
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_iso(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _reject_nan(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        raise ContractError("payloads carry no NaN or infinity; mark the reading quality 'bad'")
    if isinstance(obj, dict):
        for value in obj.values():
            _reject_nan(value)
    elif isinstance(obj, list | tuple):
        for value in obj:
            _reject_nan(value)
    return obj


def dumps(obj: Any) -> bytes:
    """Compact UTF-8 JSON, refusing NaN and infinity."""
    try:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    except ValueError as exc:
        raise ContractError(str(exc)) from exc


@dataclass(frozen=True)
class Envelope:
    """One event as it travels: `(node, epoch, seq)` is its idempotency key."""

    node: str
    epoch: str
    seq: int
    ts: float
    kind: str
    data: dict[str, Any]
    v: int = CONTRACT_VERSION

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.node, self.epoch, self.seq)

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": self.v,
            "node": self.node,
            "epoch": self.epoch,
            "seq": self.seq,
            "ts": utc_iso(self.ts),
            "kind": self.kind,
            "data": self.data,
        }

    def encode(self) -> bytes:
        return dumps(self.to_dict())

    @classmethod
    def from_dict(cls, obj: Any) -> Envelope:
        if not isinstance(obj, dict):
            raise ContractError("an envelope is a JSON object")
        missing = {"v", "node", "epoch", "seq", "ts", "kind", "data"} - obj.keys()
        if missing:
            raise ContractError(f"envelope lacks {', '.join(sorted(missing))}")
        if obj["v"] != CONTRACT_VERSION:
            raise ContractError(f"unsupported contract version {obj['v']!r}")
        if not isinstance(obj["seq"], int) or obj["seq"] < 1:
            raise ContractError("seq must be a positive integer")
        if not isinstance(obj["data"], dict):
            raise ContractError("data must be an object")
        try:
            ts = parse_iso(str(obj["ts"]))
        except ValueError as exc:
            raise ContractError(f"ts {obj['ts']!r} is not an RFC 3339 time") from exc
        return cls(
            node=str(obj["node"]),
            epoch=str(obj["epoch"]),
            seq=obj["seq"],
            ts=ts,
            kind=str(obj["kind"]),
            data=_reject_nan(obj["data"]),
        )

    @classmethod
    def decode(cls, payload: bytes) -> Envelope:
        try:
            obj = json.loads(payload.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ContractError(f"not UTF-8 JSON: {exc}") from exc
        return cls.from_dict(obj)


def reading_data(
    *,
    sensor: str,
    quantity: str,
    value: float | None,
    unit: str,
    quality: str = "ok",
    raw: float | str | None = None,
    stats: dict[str, float | int] | None = None,
) -> dict[str, Any]:
    """The `data` of a `reading` event; `raw` keeps a rejected value aside as text."""
    data: dict[str, Any] = {
        "sensor": sensor,
        "quantity": quantity,
        "value": value,
        "unit": unit,
        "quality": quality,
    }
    if raw is not None:
        data["raw"] = raw if isinstance(raw, str) else repr(raw)
    if stats is not None:
        data["stats"] = stats
    return data


AUDIT_EVENTS = frozenset(
    {"command_rejected", "login_failed", "login_rate_limited", "config_set", "config_rollback"}
)


def audit_data(
    *,
    event: str,
    code: str,
    source: str | None,
    detail: str,
    count: int,
    first: float,
    last: float,
) -> dict[str, Any]:
    """The `data` of an `audit` event: `count` occurrences of one (event, code, source)
    between `first` and `last` (epoch seconds, sent as RFC 3339)."""
    if event not in AUDIT_EVENTS:
        raise ContractError(f"audit event {event!r} is not one of {sorted(AUDIT_EVENTS)}")
    return {
        "event": event,
        "code": code,
        "source": source,
        "detail": detail,
        "count": count,
        "first": utc_iso(first),
        "last": utc_iso(last),
    }


# --- Batches: a backlog travels as many envelopes in one message on `data/batch`. ---

BATCH_CONTENT_TYPE = "application/vnd.ioc.batch+json"
BATCH_ZSTD_CONTENT_TYPE = "application/vnd.ioc.batch+json+zstd"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def encode_batch(envelopes: list[bytes], *, compress: bool = False, level: int = 3) -> bytes:
    """`{"v":1,"batch":[...]}` built from already encoded envelopes; zstd-framed if asked.

    A compressed batch announces itself by the zstd frame magic, so MQTT 3.1.1 receivers
    (no content-type property) can tell the two apart."""
    body = b'{"v":%d,"batch":[' % CONTRACT_VERSION + b",".join(envelopes) + b"]}"
    if not compress:
        return body
    return bytes(_compressor(level).compress(body))


# A compressor per thread and level, kept: building one per batch costs a sixth of the
# compression itself, and a ZstdCompressor must not be shared between threads.
_COMPRESSORS = threading.local()


def _compressor(level: int) -> Any:
    import zstandard

    cache: dict[int, Any] | None = getattr(_COMPRESSORS, "by_level", None)
    if cache is None:
        cache = _COMPRESSORS.by_level = {}
    compressor = cache.get(level)
    if compressor is None:
        compressor = cache[level] = zstandard.ZstdCompressor(level=level)
    return compressor


def decode_batch(payload: bytes, *, max_size: int = 256 * 1024 * 1024) -> list[Envelope]:
    """The envelopes of a batch message, plain or zstd-compressed."""
    if payload.startswith(_ZSTD_MAGIC):
        import zstandard

        try:
            payload = zstandard.ZstdDecompressor().decompress(payload, max_output_size=max_size)
        except zstandard.ZstdError as exc:
            raise ContractError(f"bad zstd batch: {exc}") from exc
    try:
        obj = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ContractError(f"not UTF-8 JSON: {exc}") from exc
    if not isinstance(obj, dict) or obj.get("v") != CONTRACT_VERSION:
        raise ContractError("a batch is an object with v=1")
    items = obj.get("batch")
    if not isinstance(items, list):
        raise ContractError("a batch carries a 'batch' list")
    return [Envelope.from_dict(item) for item in items]


def decode_data(topic: str, payload: bytes) -> list[Envelope]:
    """The envelopes of any `data/...` message: a batch on `data/batch`, else one envelope."""
    if topic.endswith("/data/batch"):
        return decode_batch(payload)
    return [Envelope.decode(payload)]
