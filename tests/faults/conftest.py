"""Fixtures of the fault harness: a broker behind a fault proxy, the receiver, nodes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import AgentProcess, Broker
from tests.faults.harness import Node, Receiver
from tests.faults.proxy import FaultProxy


@pytest.fixture
def proxy(broker: Broker) -> Iterator[FaultProxy]:
    """The agents' only way to the broker; the receiver connects to the broker directly."""
    with FaultProxy(broker.port) as instance:
        yield instance


@pytest.fixture
def receiver(
    tmp_path: Path, broker: Broker, agent_process: Callable[..., AgentProcess]
) -> Iterator[Receiver]:
    instance = Receiver(tmp_path / "ioc", broker.port, agent_process)
    (tmp_path / "ioc").mkdir()
    instance.start()
    yield instance


@pytest.fixture
def make_node(
    tmp_path: Path, proxy: FaultProxy, agent_process: Callable[..., AgentProcess]
) -> Callable[..., Node]:
    def make(name: str = "node-f1", **config: Any) -> Node:
        return Node(name, tmp_path / name, proxy.port, agent_process, config_extra=config)

    return make
