"""Mutual TLS with a CA made here, certificate rotation without restart, and the documented ACL."""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from edge_agent.errors import SyncError
from edge_agent.health import State
from edge_agent.sync.link import Link, LinkOptions, Message
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


def tls_options(broker: Broker, ca: Authority, cert: Path, key: Path, cid: str) -> LinkOptions:
    return LinkOptions(
        host="127.0.0.1",
        port=broker.port,
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

    async with Link(tls_options(broker, ca, *good, "good")) as link:
        await link.publish(f"{PREFIX}/{DISTRICT}/{NODE}/data/x", b"{}")

    for cert, reason in ((expired, "expired"), (foreign, "unknown ca")):
        with pytest.raises(SyncError) as refused:
            async with Link(tls_options(broker, ca, *cert, "bad")):
                pass
        assert reason in str(refused.value).lower(), str(refused.value)


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
                    tls_options(broker, ca, *ca.issue(cn), f"c-{who}"), on_message=seen[who].append
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
                async with Link(tls_options(broker, ca, *a_cert, "c-a-forger")) as forger:
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
    from edge_agent.sync.component import link_options

    (tmp_path / "node.key").write_text("key")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    config = MqttConfig(tls={"enabled": True, "cert_file": "node.crt", "key_file": "node.key"})
    options = link_options(config, "n1")
    assert options.key_file == tmp_path / "node.key"
    assert options.cert_file == Path("node.crt")  # not a credential: left as written
