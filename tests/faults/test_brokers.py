"""The same live, outage and kill scenarios against other brokers, over MQTT 3.1.1: Debian's
rabbitmq-server with its MQTT plugin, and amqtt (a Python broker from PyPI). The agent is
not tuned to mosquitto.

What they promise differs, and the scenarios say so where it matters:
- rabbitmq keeps a 3.1.1 client's persistent session (its queue) across its own restart, so
  an outage loses nothing even while the receiver is away;
- amqtt keeps sessions in memory only: like a mosquitto without persistence, it forgets the
  receiver's subscription when it restarts, so the province brings its receivers up before
  nodes reach it (the test holds the nodes' path closed until the receiver is back).
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import IN_CI, AgentProcess, free_port, stop_process, wait_for_port
from tests.faults.harness import Node, Receiver, report, scale, settle, wait_until
from tests.faults.proxy import FaultProxy

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.timeout(scale(900, 7200))]

RABBIT = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")


def missing(what: str) -> None:
    message = f"{what} not found: scripts/setup --test installs it"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


@dataclass
class OtherBroker:
    """A broker the test owns on its own ports; `stop()`/`start()` make an outage."""

    name: str
    directory: Path
    port: int
    keeps_sessions: bool
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    epmd: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = (self.directory / "out.log").open("ab")
        if self.name == "rabbitmq":
            command = [str(RABBIT)]
        else:
            command = [
                str(Path(sys.executable).with_name("amqtt")),
                "-c",
                str(self.directory / "amqtt.yaml"),
            ]
        server = subprocess.Popen(
            command,
            env=self.env,
            cwd=self.directory,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.processes.append(server)
        wait_for_port(self.port, timeout_s=180, process=server)

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                # The rabbitmq start script and the Erlang VM share the session we started.
                os.killpg(process.pid, 15)
            stop_process(process)
        self.processes.clear()

    def close(self) -> None:
        self.stop()
        if self.epmd is not None:
            stop_process(self.epmd)


def rabbitmq(directory: Path) -> OtherBroker:
    epmd_binary = shutil.which("epmd")
    if not RABBIT.exists() or epmd_binary is None:
        missing("rabbitmq-server")
    assert epmd_binary is not None
    port, amqp_port, dist_port, epmd_port = (free_port() for _ in range(4))
    (directory / "rabbitmq.conf").write_text(
        f"listeners.tcp.default = {amqp_port}\n"
        f"mqtt.listeners.tcp.default = {port}\n"
        "mqtt.allow_anonymous = true\n"
        "loopback_users = none\n"
    )
    (directory / "enabled_plugins").write_text("[rabbitmq_mqtt].\n")
    env = {
        **os.environ,
        "HOME": str(directory),  # the Erlang cookie goes there
        "ERL_EPMD_PORT": str(epmd_port),
        "RABBITMQ_NODENAME": f"faults{epmd_port}@localhost",
        "RABBITMQ_NODE_PORT": str(amqp_port),
        "RABBITMQ_DIST_PORT": str(dist_port),
        "RABBITMQ_MNESIA_BASE": str(directory / "mnesia"),
        "RABBITMQ_LOG_BASE": str(directory / "log"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(directory / "enabled_plugins"),
        "RABBITMQ_CONFIG_FILE": str(directory / "rabbitmq"),
        "RABBITMQ_PID_FILE": str(directory / "rabbit.pid"),
    }
    broker = OtherBroker("rabbitmq", directory, port, keeps_sessions=True, env=env)
    # Our own epmd in the foreground, on its own port: Erlang leaves no daemon behind.
    broker.epmd = subprocess.Popen(
        [epmd_binary, "-port", str(epmd_port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_port(epmd_port, process=broker.epmd)
    return broker


def amqtt(directory: Path) -> OtherBroker:
    if not Path(sys.executable).with_name("amqtt").exists():
        missing("amqtt (PyPI)")
    port = free_port()
    (directory / "amqtt.yaml").write_text(
        "listeners:\n"
        "  default:\n"
        "    type: tcp\n"
        f"    bind: 127.0.0.1:{port}\n"
        "plugins:\n"
        "  amqtt.plugins.authentication.AnonymousAuthPlugin:\n"
        "    allow_anonymous: true\n"
    )
    return OtherBroker("amqtt", directory, port, keeps_sessions=False, env=dict(os.environ))


@pytest.fixture(params=["rabbitmq", "amqtt"])
def other(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OtherBroker]:
    directory = tmp_path / request.param
    directory.mkdir()
    broker = rabbitmq(directory) if request.param == "rabbitmq" else amqtt(directory)
    try:
        broker.start()
        yield broker
    finally:
        broker.close()


@pytest.fixture
def world(
    other: OtherBroker, tmp_path: Path, agent_process: Callable[..., AgentProcess]
) -> Iterator[tuple[OtherBroker, FaultProxy, Receiver, Callable[..., Node]]]:
    with FaultProxy(other.port) as proxy:
        receiver = Receiver(tmp_path / "ioc", other.port, agent_process)
        receiver.protocol = "3.1.1"
        (tmp_path / "ioc").mkdir()
        receiver.start()

        def make(name: str = "node-b1", **config: object) -> Node:
            return Node(
                name,
                tmp_path / name,
                proxy.port,
                agent_process,
                config_extra={"protocol": "3.1.1", **config},
            )

        yield other, proxy, receiver, make


def test_live_outage_and_kills_against_another_broker(
    world: tuple[OtherBroker, FaultProxy, Receiver, Callable[..., Node]],
) -> None:
    other, proxy, receiver, make_node = world
    node = make_node()
    node.start()
    wait_until(lambda: node.committed() > 100, "live traffic")
    # An outage of the broker itself.
    if not other.keeps_sessions:
        proxy.cut()
    other.stop()
    before = node.committed()
    wait_until(lambda: node.committed() > before + 200, "a backlog while the broker is down")
    other.start()
    if not other.keeps_sessions:
        receiver.wait_subscribed()
        proxy.heal()
    else:
        receiver.wait_subscribed()
    # Three kills of the agent, live and while it drains.
    rand = random.Random(14)
    for _ in range(3):
        time.sleep(rand.uniform(0.3, 1.5))
        node.kill()
        node.start()
    acc = settle(node, receiver)
    summary = receiver.stop()
    report(
        f"broker-{other.name}",
        protocol="3.1.1",
        committed=acc.sent,
        stored=acc.stored,
        duplicates=summary.get("duplicates"),
        declared_lost=acc.declared,
        missing=0,
        keeps_sessions=other.keeps_sessions,
    )
