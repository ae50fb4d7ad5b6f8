"""Broker neutrality: an agent and the receiver over Debian's rabbitmq-server (MQTT 3.1.1)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from edge_agent.ioc.fleet import Reader
from edge_agent.outbox import OutboxReader
from tests.conftest import IN_CI, free_port, stop_process, wait_for_port
from tests.ioc.processes import AgentProcess, ReceiverProcess, ioc, wait

RABBIT = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")


@dataclass
class Rabbit:
    mqtt_port: int
    processes: list[subprocess.Popen[bytes]]


@pytest.fixture
def rabbit(tmp_path: Path) -> Iterator[Rabbit]:
    """A private RabbitMQ node with the MQTT plugin: its own ports, epmd and data dir."""
    epmd_binary = shutil.which("epmd")
    if not RABBIT.exists() or epmd_binary is None:
        message = "rabbitmq-server not found: install the Debian package (scripts/setup)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    base = tmp_path / "rabbit"
    base.mkdir()
    mqtt_port, amqp_port, dist_port, epmd_port = (free_port() for _ in range(4))
    (base / "rabbitmq.conf").write_text(
        f"listeners.tcp.default = {amqp_port}\n"
        f"mqtt.listeners.tcp.default = {mqtt_port}\n"
        "mqtt.allow_anonymous = true\n"
        "loopback_users = none\n"
    )
    (base / "enabled_plugins").write_text("[rabbitmq_mqtt].\n")
    env = {
        **os.environ,
        "HOME": str(base),  # the Erlang cookie goes there
        "ERL_EPMD_PORT": str(epmd_port),
        "RABBITMQ_NODENAME": f"ioctest{epmd_port}@localhost",
        "RABBITMQ_NODE_PORT": str(amqp_port),
        "RABBITMQ_DIST_PORT": str(dist_port),
        "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
        "RABBITMQ_LOG_BASE": str(base / "log"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
        "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq"),
        "RABBITMQ_PID_FILE": str(base / "rabbit.pid"),
    }
    # Our own epmd in the foreground, so that Erlang does not leave a daemon behind.
    epmd = subprocess.Popen(
        [epmd_binary, "-port", str(epmd_port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    processes = [epmd]
    try:
        wait_for_port(epmd_port, process=epmd)
        with (base / "out.log").open("wb") as log:
            server = subprocess.Popen(
                [str(RABBIT)],
                env=env,
                cwd=base,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        processes.insert(0, server)
        wait_for_port(mqtt_port, timeout_s=120, process=server)
        yield Rabbit(mqtt_port, processes)
    finally:
        for process in processes:
            if process is not epmd and process.poll() is None:
                # The start script and the Erlang VM it runs share the session we started.
                os.killpg(process.pid, 15)
            stop_process(process)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_an_agent_and_the_receiver_over_rabbitmq(rabbit: Rabbit, tmp_path: Path) -> None:
    db = tmp_path / "ioc.sqlite3"
    receiver = ReceiverProcess(
        rabbit.mqtt_port, tmp_path, db=db, extra=("--protocol", "3.1.1", "--hole-timeout", "5")
    )
    agent = AgentProcess(
        "node-r",
        tmp_path / "agent",
        rabbit.mqtt_port,
        env={"EDGE_AGENT_MQTT__PROTOCOL": "3.1.1"},
    )
    try:
        receiver.start()
        wait(receiver.subscribed, what="receiver subscribed")
        agent.start()

        def state() -> str | None:
            nodes = ioc("nodes", "--db", str(db)) if db.exists() else []
            return next((n["state"] for n in nodes if n["node"] == "node-r"), None)

        wait(lambda: state() == "online", what="node online")
        with Reader.open(path=db) as reader:
            wait(lambda: reader.count("node-r") >= 20, what="events stored")
            agent.stop()
            wait(lambda: state() == "offline", what="node offline")
            with OutboxReader(agent.outbox) as outbox:
                stats = outbox.stats()
                pending = {row.seq for row in outbox.export(0)}
            assert pending == set()
            wait(
                lambda: (
                    reader.seqs("node-r", stats["epoch"]) == list(range(1, stats["last_seq"] + 1))
                ),
                what="every event once",
            )
            assert reader.holes() == []
        metrics = receiver.metrics()
        assert sum(v for k, v in metrics.items() if k.startswith("ioc_invalid_total")) == 0
    finally:
        agent.stop()
        receiver.stop()
