"""The broker checks: reachable, TLS trusted, the node accepted, commands subscribed."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import ssl
from typing import Any

from cryptography import x509

from edge_agent.config import Settings
from edge_agent.contract import Topics
from edge_agent.doctor.findings import Finding, Status, finding
from edge_agent.doctor.local import utc
from edge_agent.errors import SyncError
from edge_agent.sync.link import Link
from edge_agent.sync.values import LinkOptions, Refused, link_options, tls_context


async def broker_session(options: LinkOptions, command_filter: str) -> bool | None:
    """Connect as the node does, subscribe to its command filter and disconnect: True when
    the broker granted the subscription (its SUBACK), False when it refused it. Raises
    SyncError when the connection itself fails. The doctor's only use of Link."""
    async with Link(options) as link:
        try:
            await link.subscribe(command_filter, qos=1)
        except Refused:
            return False
    return True


def _is_local(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


async def _handshake(host: str, port: int, context: ssl.SSLContext, timeout: float) -> Any:
    """TLS with the broker; returns its certificate (DER parsed), or raises ssl/OS errors."""
    async with asyncio.timeout(timeout):
        _reader, writer = await asyncio.open_connection(
            host, port, ssl=context, server_hostname=host
        )
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    finally:
        writer.close()
        # A broker that drops a session with no CONNECT in it says nothing useful.
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()
    return x509.load_der_x509_certificate(der) if der else None


async def _reachable(host: str, port: int, timeout: float) -> None:
    async with asyncio.timeout(timeout):
        _reader, writer = await asyncio.open_connection(host, port)
    writer.close()
    with contextlib.suppress(OSError):  # closed by the broker first: it was reachable
        await writer.wait_closed()


def _refusal(error: SyncError) -> str:
    text = str(error)
    if "refused the connection" in text:
        return "auth_refused"
    if any(word in text.lower() for word in ("certificate", "tls", "ssl", "alert")):
        return "certificate_refused"
    return "session_failed"


async def check_broker(settings: Settings) -> tuple[list[Finding], Any]:
    """The broker findings, and the broker's certificate (for the clock check) if TLS."""
    mqtt = settings.mqtt
    if not mqtt.enabled:
        return [finding("broker", Status.WARN, "broker_disabled")], None
    host, port, timeout = mqtt.host, mqtt.port, mqtt.connect_timeout_s
    where: dict[str, object] = {"broker": f"{host}:{port}", "host": host, "port": port}
    try:
        await _reachable(host, port, timeout)
    except (OSError, TimeoutError) as exc:
        if isinstance(exc, OSError) and exc.errno:
            error: object = os.strerror(exc.errno)
        else:
            error = exc or f"no answer within {timeout:.0f} s"
        return [finding("broker", Status.FAIL, "broker_unreachable", error=error, **where)], None
    found = [finding("broker", Status.OK, "broker_ok", **where)]
    # A client id of its own and no session left behind: the running agent stays connected.
    options = dataclasses.replace(
        link_options(mqtt, settings.node.id),
        client_id=f"{mqtt.client_id or 'edge-' + settings.node.id}-doctor"[:64],
        session_expiry_s=0,
    )
    certificate = None
    if mqtt.tls.enabled:
        try:
            context = tls_context(options)
            unverified = tls_context(options)
        except SyncError as exc:
            return [
                *found,
                finding("tls", Status.FAIL, "tls_files", error=exc.__cause__ or exc),
            ], None
        unverified.check_hostname = False
        unverified.verify_mode = ssl.CERT_NONE
        try:
            certificate = await _handshake(host, port, unverified, timeout)
            await _handshake(host, port, context, timeout)
        except ssl.SSLCertVerificationError as exc:
            found.append(
                finding("tls", Status.FAIL, "tls_untrusted", error=exc.verify_message, **where)
            )
            return found, certificate
        except (ssl.SSLError, OSError, TimeoutError) as exc:
            found.append(finding("tls", Status.FAIL, "tls_failed", error=exc or "timeout", **where))
            return found, certificate
        until = utc(certificate.not_valid_after_utc.timestamp()) if certificate else "?"
        found.append(finding("tls", Status.OK, "tls_ok", until=until, **where))
    elif _is_local(host):
        found.append(finding("tls", Status.OK, "tls_local"))
    else:
        found.append(finding("tls", Status.WARN, "tls_disabled", **where))
    topics = Topics(mqtt.topic_prefix, settings.node.district, settings.node.id)
    who = {"client": options.client_id, "node": settings.node.id}
    try:
        granted = await broker_session(options, topics.cmd_filter)
    except SyncError as exc:
        found.append(finding("auth", Status.FAIL, _refusal(exc), error=exc, **who))
        return found, certificate
    found.append(finding("auth", Status.OK, "auth_ok", **who))
    if granted is None:
        found.append(
            finding("commands", Status.WARN, "commands_unconfirmed", filter=topics.cmd_filter)
        )
    elif granted:
        found.append(finding("commands", Status.OK, "commands_ok", filter=topics.cmd_filter))
    else:
        found.append(finding("commands", Status.FAIL, "commands_refused", filter=topics.cmd_filter))
    return found, certificate
