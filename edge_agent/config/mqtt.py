"""The link to the provincial broker."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr

from edge_agent.config.base import Section


class TlsConfig(Section):
    enabled: bool = Field(default=False, description="Connect over TLS.")
    ca_file: Path | None = Field(
        default=None, description="CA bundle that signs the broker certificate (PEM)."
    )
    cert_file: Path | None = Field(
        default=None, description="Client certificate for mutual TLS (PEM); re-read on reconnect."
    )
    key_file: Path | None = Field(
        default=None, description="Private key of the client certificate (PEM)."
    )


class MqttConfig(Section):
    host: str = Field(default="localhost", description="Provincial broker host name or address.")
    port: int = Field(default=1883, ge=1, le=65535, description="Broker TCP port.")
    topic_prefix: str = Field(
        default="ioc/v1",
        pattern=r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$",
        description="First topic levels of every topic this node uses.",
    )
    protocol: Literal["5", "3.1.1"] = Field(default="5", description="MQTT protocol version.")
    keepalive_s: int = Field(default=30, ge=5, le=3600, description="MQTT keepalive interval.")
    username: str | None = Field(default=None, description="Username, when not using mTLS.")
    password: SecretStr | None = Field(
        default=None, description="Password (better as the credential file mqtt.password)."
    )
    tls: TlsConfig = Field(default_factory=TlsConfig, description="TLS settings.")
