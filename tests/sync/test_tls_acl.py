"""Mutual TLS with a CA made here, certificate rotation without restart, and the documented ACL."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import re
import shutil
import ssl
import subprocess
from pathlib import Path

import pytest

from edge_agent.errors import SyncError
from edge_agent.health import State
from edge_agent.sync.link import Link, LinkOptions, Message
from edge_agent.sync.values import certificate_problem
from tests.conftest import REPO, Broker
from tests.sync.conftest import (
    DISTRICT,
    NODE,
    PREFIX,
    eventually,
    mqtt_config,
    open_outbox,
    running_sync,
)
from tests.sync.pki import Authority, mtls_broker_config


def tls_options(port: int, ca: Authority, cert: Path, key: Path, cid: str) -> LinkOptions:
    return LinkOptions(
        host="127.0.0.1",
        port=port,
        client_id=cid,
        tls=True,
        ca_file=ca.ca_file,
        cert_file=cert,
        key_file=key,
        connect_timeout_s=5.0,
    )


def documented_acl() -> str:
    text = (REPO / "docs" / "operations.md").read_text()
    match = re.search(r"<!-- acl:begin -->\s*```conf\n(.*?)```", text, re.S)
    assert match, "docs/operations.md lost its ACL block"
    return match.group(1)


@pytest.fixture
def ca(tmp_path: Path) -> Authority:
    return Authority(tmp_path / "pki")


@pytest.mark.asyncio
async def test_mtls_valid_expired_and_foreign_certificates(
    broker: Broker, ca: Authority, tmp_path: Path
) -> None:
    broker.extra_config = mtls_broker_config(ca)
    broker.restart()
    good = ca.issue(NODE)
    expired = ca.issue(NODE, expired=True)
    foreign = Authority(tmp_path / "other", name="other-ca").issue(NODE)

    async with Link(tls_options(broker.port, ca, *good, "good")) as link:
        await link.publish(f"{PREFIX}/{DISTRICT}/{NODE}/data/x", b"{}")

    for cert, reason in ((expired, "expired"), (foreign, "unknown ca")):
        with pytest.raises(SyncError) as refused:
            async with Link(tls_options(broker.port, ca, *cert, "bad")):
                pass
        assert reason in str(refused.value).lower(), str(refused.value)


@pytest.mark.asyncio
async def test_a_broker_that_only_closes_is_explained_from_the_certificate_files(
    ca: Authority, tmp_path: Path
) -> None:
    # Under TLS 1.3 a broker refuses a client certificate after the client's half of the
    # handshake, and its alert races the client's CONNECT: the client may see only a closed
    # connection. This peer always does that, so the link must read the cause from its files.
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(*map(str, ca.issue("broker", server=True)))
    connects: list[bytes] = []

    async def close_after_connect(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        connects.append(await reader.read(1))  # the CONNECT is in: the TLS session worked
        writer.close()

    peer = await asyncio.start_server(close_after_connect, "127.0.0.1", 0, ssl=server)
    port = peer.sockets[0].getsockname()[1]
    foreign = Authority(tmp_path / "other", name="other-ca").issue(NODE)
    async with peer:
        found = {}
        for name, cert in (
            ("good", ca.issue(NODE)),
            ("expired", ca.issue(NODE, expired=True)),
            ("foreign", foreign),
        ):
            with pytest.raises(SyncError) as closed:
                async with Link(tls_options(port, ca, *cert, name)):
                    pass
            found[name] = str(closed.value)
    assert connects == [b"\x10"] * 3  # three MQTT CONNECTs over TLS
    assert all(f"127.0.0.1:{port} closed" in text for text in found.values()), found
    assert "certificate" not in found["good"], found["good"]
    assert "expired on" in found["expired"], found["expired"]
    assert "unknown ca" in found["foreign"].lower(), found["foreign"]


def test_certificate_problem_names_the_window_and_the_issuer(ca: Authority, tmp_path: Path) -> None:
    good = ca.issue(NODE)
    options = LinkOptions(
        host="127.0.0.1",
        port=1,
        client_id="x",
        tls=True,
        ca_file=ca.ca_file,
        cert_file=good[0],
        key_file=good[1],
    )
    assert certificate_problem(options) is None
    early = certificate_problem(options, dt.datetime.now(dt.UTC) - dt.timedelta(days=2))
    assert early is not None and "valid only from" in early and "clock" in early
    late = certificate_problem(options, dt.datetime.now(dt.UTC) + dt.timedelta(days=8))
    assert late is not None and "expired on" in late
    other = Authority(tmp_path / "other", name="other-ca")
    stranger = dataclasses.replace(options, ca_file=other.ca_file)
    assert "unknown CA" in (certificate_problem(stranger) or "")
    assert certificate_problem(dataclasses.replace(options, cert_file=None)) is None


@pytest.mark.asyncio
async def test_rotated_certificate_files_are_used_without_restart(
    broker: Broker, ca: Authority, tmp_path: Path
) -> None:
    broker.extra_config = mtls_broker_config(ca)
    broker.restart()
    live_cert, live_key = tmp_path / "node.crt", tmp_path / "node.key"
    expired = ca.issue(NODE, expired=True)
    shutil.copy(expired[0], live_cert)
    shutil.copy(expired[1], live_key)
    tls = {"enabled": True, "ca_file": ca.ca_file, "cert_file": live_cert, "key_file": live_key}
    config = mqtt_config(broker, tls=tls)
    async with open_outbox(tmp_path) as outbox, running_sync(config, outbox) as sync:
        await eventually(lambda: sync.health.counters.get("connect_failures", 0) >= 2)
        assert sync.health.state is State.DEGRADED
        assert "expired" in sync.health.last_error
        good = ca.issue(NODE)
        shutil.copy(good[0], live_cert)
        shutil.copy(good[1], live_key)
        await eventually(lambda: sync.health.state is State.OK)


@pytest.mark.asyncio
async def test_documented_acl_keeps_nodes_apart(
    broker: Broker, ca: Authority, tmp_path: Path
) -> None:
    acl = tmp_path / "ioc.acl"
    acl.write_text(documented_acl())
    broker.extra_config = mtls_broker_config(ca, acl)
    broker.restart()
    seen: dict[str, list[Message]] = {"a": [], "b": [], "ioc": []}
    base_a, base_b = f"{PREFIX}/{DISTRICT}/node-a", f"{PREFIX}/{DISTRICT}/node-b"
    async with contextlib.AsyncExitStack() as stack:
        links = {
            who: await stack.enter_async_context(
                Link(
                    tls_options(broker.port, ca, *ca.issue(cn), f"c-{who}"),
                    on_message=seen[who].append,
                )
            )
            for who, cn in (("a", "node-a"), ("b", "node-b"), ("ioc", "ioc"))
        }
        await links["ioc"].subscribe(f"{PREFIX}/#")
        # Not allowed: mosquitto's acl_file grants the subscription but delivers nothing
        # (its dynamic-security plugin would refuse it in the SUBACK: see test_refusals).
        await links["a"].subscribe(f"{base_b}/cmd/#")
        await links["a"].subscribe(f"{base_a}/cmd/#")
        await links["b"].subscribe(f"{base_b}/cmd/#")

        # A's own topics work; B's do not (the broker drops them or refuses the PUBACK).
        await links["a"].publish(f"{base_a}/data/reading", b"mine")
        a_cert = ca.issue("node-a")
        for topic in (f"{base_b}/data/reading", f"{base_b}/status", f"{base_b}/reply/ping"):
            # A second connection of A: mosquitto 2.0 may drop a TLS client whose publish it
            # refused (MQTT 5 PUBACK 0x87), which is fine, but it must not end the first one.
            with contextlib.suppress(SyncError):
                async with Link(tls_options(broker.port, ca, *a_cert, "c-a-forger")) as forger:
                    await forger.publish(topic, b"forged")
        # Commands for B reach B only.
        await links["ioc"].publish(f"{base_b}/cmd/ping", b"for-b")
        await links["ioc"].publish(f"{base_a}/cmd/ping", b"for-a")
        await eventually(lambda: len(seen["b"]) == 1 and len(seen["a"]) == 1)
        await eventually(lambda: any(m.payload == b"mine" for m in seen["ioc"]))
        # A fence: what the forger sent before it would have arrived before this.
        await links["a"].publish(f"{base_a}/data/fence", b"fence")
        await eventually(lambda: any(m.payload == b"fence" for m in seen["ioc"]))
    assert [m.payload for m in seen["a"]] == [b"for-a"]
    assert [m.payload for m in seen["b"]] == [b"for-b"]
    assert not [m for m in seen["ioc"] if m.payload == b"forged"]


@pytest.mark.asyncio
async def test_username_and_password(broker: Broker, tmp_path: Path) -> None:
    passwd = tmp_path / "passwd"
    command = ["mosquitto_passwd", "-b", "-c", str(passwd), NODE, "s3cret-pass"]
    await asyncio.to_thread(subprocess.run, command, check=True)
    # the fixture's own line allows anonymous clients; a later line wins in mosquitto
    broker.extra_config = f"user root\npassword_file {passwd}\nallow_anonymous false"
    broker.restart()
    async with open_outbox(tmp_path) as outbox:
        good = mqtt_config(broker, username=NODE, password="s3cret-pass")
        async with running_sync(good, outbox) as sync:
            await eventually(lambda: sync.health.state is State.OK)
        bad = mqtt_config(broker, username=NODE, password="wrong")
        async with running_sync(bad, outbox) as sync:
            await eventually(lambda: sync.health.counters.get("connect_failures", 0) >= 1)
            assert "refused" in sync.health.last_error


def test_relative_tls_paths_are_systemd_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edge_agent.config import MqttConfig
    from edge_agent.sync.values import link_options

    (tmp_path / "node.key").write_text("key")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    config = MqttConfig(tls={"enabled": True, "cert_file": "node.crt", "key_file": "node.key"})
    options = link_options(config, "n1")
    assert options.key_file == tmp_path / "node.key"
    assert options.cert_file == Path("node.crt")  # not a credential: left as written
