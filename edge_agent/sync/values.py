"""The MQTT link's value objects and errors: options, will, messages, why a link ended."""

from __future__ import annotations

import datetime as dt
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from edge_agent.config import MqttConfig
from edge_agent.errors import SyncError

SESSION_TAKEN_OVER = 0x8E
DISCONNECT_WITH_WILL = 0x04


@dataclass(frozen=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


@dataclass(frozen=True)
class LinkOptions:
    """Everything one connection attempt needs; TLS files are read at every attempt."""

    host: str
    port: int
    client_id: str
    protocol: str = "5"
    keepalive_s: int = 30
    session_expiry_s: int = 86400
    connect_timeout_s: float = 10.0
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    max_inflight: int = 20
    # Received QoS 1 messages are acknowledged only by `Link.ack()` (after the receiver has
    # committed them), not by paho when the callback returns.
    manual_ack: bool = False
    # MQTT 5 Receive Maximum: how many unacknowledged QoS 1 messages the broker may send us
    # at once (None: the protocol's 65535); bounds what a manual-ack receiver holds in memory.
    receive_maximum: int | None = None


@dataclass(frozen=True)
class Message:
    """One message as received. The link checks only types (text is text, bytes are bytes);
    what the contract allows is for the receiving component to check."""

    topic: str
    payload: bytes
    retain: bool
    qos: int
    response_topic: str | None = None
    correlation_data: bytes | None = None
    user_properties: tuple[tuple[str, str], ...] = ()
    content_type: str | None = None
    mid: int = 0


@dataclass(frozen=True)
class Closed:
    """Why a link ended: text for the logs, the broker's MQTT 5 reason code when it sent a
    DISCONNECT (0x8E: another client took our session), and how long it was up."""

    reason: str
    code: int | None = None
    uptime_s: float | None = None


class LinkLost(SyncError):
    """The link went down; `closed` says why."""

    def __init__(self, closed: Closed) -> None:
        super().__init__(f"link lost: {closed.reason}")
        self.closed = closed


class Unreachable(SyncError):
    """No TCP connection to the broker (refused, timed out, no route): worth probing for."""


class Refused(SyncError):
    """The broker answered a CONNECT, SUBSCRIBE or PUBLISH with a reason code >= 0x80."""

    def __init__(self, what: str, code: int, name: str) -> None:
        super().__init__(f"broker refused {what}: {name} (0x{code:02X})")
        self.what = what
        self.code = code
        self.name = name


def tls_context(options: LinkOptions) -> ssl.SSLContext:
    """A fresh context: certificate files are read now, so rotated files are picked up."""
    try:
        context = ssl.create_default_context(
            cafile=str(options.ca_file) if options.ca_file else None
        )
        if options.cert_file is not None and options.key_file is not None:
            context.load_cert_chain(str(options.cert_file), str(options.key_file))
    except (OSError, ssl.SSLError) as exc:
        raise SyncError(f"cannot load TLS files for the broker link: {exc}") from exc
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def certificate_problem(options: LinkOptions, now: dt.datetime | None = None) -> str | None:
    """What is wrong with the node's own certificate, read from its files, or None.

    Under TLS 1.3 the broker checks the client certificate after the client has finished
    its half of the handshake, so its alert ("certificate expired", "unknown ca") races the
    client's first write: the client may see only a closed connection. The files tell the
    technician the cause either way."""
    if options.cert_file is None:
        return None
    # Imported here: a node without TLS problems never loads cryptography (its RSS).
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature

    try:
        certificate = x509.load_pem_x509_certificate(options.cert_file.read_bytes())
    except (OSError, ValueError):
        return None  # tls_context() already said why the files cannot be used
    now = now or dt.datetime.now(dt.UTC)
    until, since = certificate.not_valid_after_utc, certificate.not_valid_before_utc
    if now > until:
        return f"the node certificate {options.cert_file} expired on {until:%Y-%m-%d %H:%M} UTC"
    if now < since:
        return (
            f"the node certificate {options.cert_file} is valid only from "
            f"{since:%Y-%m-%d %H:%M} UTC: check the node's clock"
        )
    if options.ca_file is None:
        return None
    try:
        authorities = x509.load_pem_x509_certificates(options.ca_file.read_bytes())
    except (OSError, ValueError):
        return None
    for authority in authorities:
        try:
            certificate.verify_directly_issued_by(authority)
            return None
        except (ValueError, TypeError, InvalidSignature):
            continue
    return (
        f"the node certificate {options.cert_file} was not issued by the CA in "
        f"{options.ca_file}; a broker that trusts only that CA refuses it (unknown CA)"
    )


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
