"""The link to the provincial broker."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator

from edge_agent.config.base import Section


class TlsConfig(Section):
    enabled: bool = Field(default=False, description="Connect over TLS.")
    ca_file: Path | None = Field(
        default=None,
        description="CA bundle that signs the broker certificate (PEM); system CAs when unset.",
    )
    cert_file: Path | None = Field(
        default=None,
        description="Client certificate for mutual TLS (PEM); re-read on reconnect. A relative"
        " name is looked up in $CREDENTIALS_DIRECTORY first (systemd LoadCredential).",
    )
    key_file: Path | None = Field(
        default=None, description="Private key of the client certificate (PEM); re-read too."
    )

    @model_validator(mode="after")
    def _cert_and_key_together(self) -> TlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together (mutual TLS needs both)")
        return self


class CommandAuthConfig(Section):
    public_keys: list[Path] = Field(
        default_factory=list,
        description="Ed25519 public keys (PEM) of the IOC that may sign commands; any one may"
        " verify a command.",
    )
    hmac_key: SecretStr | None = Field(
        default=None,
        description="Per-node HMAC-SHA256 key (better as the credential"
        " mqtt.commands.hmac_key); an alternative to Ed25519 keys.",
    )
    max_payload_bytes: int = Field(
        default=65536, ge=256, le=16 * 1024 * 1024, description="Larger commands are rejected."
    )
    clock_skew_s: float = Field(
        default=60.0,
        ge=0,
        le=3600,
        description="Allowed difference between the IOC's clock and ours for issued/expiry times.",
    )
    max_ttl_s: float = Field(
        default=3600.0,
        gt=0,
        description="Commands valid for longer than this (expires - issued) are rejected.",
    )
    confirm_s: float = Field(
        default=60.0,
        ge=1.0,
        le=3600.0,
        description="After a config.set, the node must reach the broker and publish its birth"
        " within this many seconds, or it puts the previous file and settings back.",
    )


class MqttConfig(Section):
    enabled: bool = Field(default=True, description="Sync to the provincial broker at all.")
    host: str = Field(
        default="localhost",
        min_length=1,
        pattern=r"^\S+$",
        description="Provincial broker host name or address.",
    )
    port: int = Field(default=1883, ge=1, le=65535, description="Broker TCP port.")
    topic_prefix: str = Field(
        default="ioc/v1",
        pattern=r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$",
        description="First topic levels of every topic this node uses.",
    )
    protocol: Literal["5", "3.1.1"] = Field(default="5", description="MQTT protocol version.")
    client_id: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="MQTT client id; defaults to 'edge-{node id}'.",
    )
    keepalive_s: int = Field(default=30, ge=5, le=3600, description="MQTT keepalive interval.")
    session_expiry_s: int = Field(
        default=86400,
        ge=0,
        description="How long the broker keeps our session (subscriptions, queued commands)"
        " after a disconnect (MQTT 5; with 3.1.1 the session is kept until the node returns).",
    )
    connect_timeout_s: float = Field(
        default=10.0, gt=0, le=120, description="Give up one connection attempt after this."
    )
    backoff_min_s: float = Field(
        default=1.0, gt=0, description="First retry delay after a failed connection."
    )
    backoff_max_s: float = Field(
        default=60.0, gt=0, description="Cap of the jittered exponential retry delay."
    )
    probe_interval_s: float = Field(
        default=1.5,
        ge=0,
        le=60,
        description="While the broker cannot be reached, a TCP connect probes it about this"
        " often (jittered), so the link is back within seconds of its return; 0 = only the"
        " backoff.",
    )
    username: str | None = Field(default=None, description="Username, when not using mTLS.")
    password: SecretStr | None = Field(
        default=None, description="Password (better as the credential file mqtt.password)."
    )
    tls: TlsConfig = Field(default_factory=TlsConfig, description="TLS settings.")
    inflight_window: int = Field(
        default=20,
        ge=1,
        le=1000,
        description="QoS 1 publishes awaiting PUBACK at once (a sliding window).",
    )
    batch_max_events: int = Field(
        default=500,
        ge=1,
        le=10000,
        description="Envelopes per batch message when draining a backlog; 1 disables batching.",
    )
    batch_min_events: int = Field(
        default=20,
        ge=2,
        description="A claim returning at least this many rows is sent as one batch message.",
    )
    batch_inflight_window: int = Field(
        default=4,
        ge=1,
        le=100,
        description="Batch messages awaiting PUBACK at once (each carries many events).",
    )
    compression: Literal["none", "zstd"] = Field(
        default="zstd", description="Compression of batch messages."
    )
    rate_messages_per_s: float = Field(
        default=200.0, ge=0, description="Token-bucket cap on messages/s (0 = no cap)."
    )
    rate_bytes_per_s: float = Field(
        default=2_000_000.0, ge=0, description="Token-bucket cap on payload bytes/s (0 = no cap)."
    )
    commands: CommandAuthConfig = Field(
        default_factory=CommandAuthConfig, description="Remote commands from the IOC."
    )

    @field_validator("batch_min_events")
    @classmethod
    def _batch_bounds(cls, value: int, info: ValidationInfo) -> int:
        batch_max = info.data.get("batch_max_events")
        if isinstance(batch_max, int) and batch_max > 1 and batch_max < value:
            raise ValueError(
                f"must be at most batch_max_events ({batch_max}), or a backlog could never"
                " go out as batches (batch_max_events = 1 turns batching off)"
            )
        return value

    @model_validator(mode="after")
    def _backoff_order(self) -> MqttConfig:
        if self.backoff_max_s < self.backoff_min_s:
            raise ValueError("backoff_max_s must be at least backoff_min_s")
        return self


# Host names that images and installers ship with: two nodes left on one of them share a
# client id and knock each other off the broker.
_GENERIC_HOST = re.compile(
    r"^(localhost|debian|ubuntu|raspberrypi|raspberry|orangepi|armbian|dietpi|vm|node|host"
    r"|server|edge|device|default|test|pi)[-_.]?\d*$",
    re.IGNORECASE,
)


def generic_node_id(node_id: str, *, explicit: bool) -> bool:
    """True when the node id came from the host name and looks like an image's default."""
    return not explicit and bool(_GENERIC_HOST.match(node_id))
