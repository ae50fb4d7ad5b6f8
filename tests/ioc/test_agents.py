"""Two real agents on their embedded defaults and one receiver, all as processes."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent import __version__
from edge_agent.ioc.fleet import Reader
from edge_agent.outbox import OutboxReader
from tests.conftest import Broker
from tests.ioc.processes import AgentProcess, ReceiverProcess, ioc, wait

KEEPALIVE_S = 5


def pending_seqs(outbox: Path) -> tuple[str, int, set[int]]:
    with OutboxReader(outbox) as reader:
        stats = reader.stats()
        pending = {row.seq for row in reader.export(0)}
    return stats["epoch"], stats["last_seq"], pending


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_two_agents_and_a_receiver(broker: Broker, tmp_path: Path) -> None:
    db = tmp_path / "ioc.sqlite3"
    receiver = ReceiverProcess(broker.port, tmp_path, db=db, extra=("--hole-timeout", "5"))
    # Embedded defaults (a simulated sensor and the host), pointed at the test broker with a
    # 5 s keepalive so that the broker's will comes within seconds.
    a = AgentProcess("node-a", tmp_path / "a", broker.port)
    b = AgentProcess(
        "node-b",
        tmp_path / "b",
        broker.port,
        env={
            "EDGE_AGENT_NODE__AREA__CODE": "26734",
            "EDGE_AGENT_NODE__AREA__NAME": "Phường Ba Đình",
        },
    )
    try:
        receiver.start()
        wait(receiver.subscribed, what="receiver subscribed")
        a.start()
        b.start()

        def fleet() -> dict[str, dict[str, object]]:
            return {n["node"]: n for n in ioc("nodes", "--db", str(db))} if db.exists() else {}

        wait(
            lambda: {n["state"] for n in fleet().values()} == {"online"} and len(fleet()) == 2,
            what="both nodes online",
        )
        nodes = fleet()
        assert nodes["node-a"]["version"] == __version__
        assert (nodes["node-a"]["group_code"], nodes["node-a"]["district"]) == ("d1", "d1")
        assert (nodes["node-b"]["group_code"], nodes["node-b"]["group_name"]) == (
            "26734",
            "Phường Ba Đình",
        )
        with Reader.open(path=db) as reader:
            wait(
                lambda: reader.count("node-a") >= 10 and reader.count("node-b") >= 10,
                what="events from both",
            )

        # Frozen first (its TCP connection stays open, nothing answers): the broker publishes
        # B's will once 1.5 keepalives pass without a packet. Then killed, as it stands.
        b.freeze()
        wait(
            lambda: fleet()["node-b"]["state"] == "offline",
            timeout_s=1.5 * KEEPALIVE_S + 10,
            what="node-b offline",
        )
        b.kill()
        a.stop()
        wait(lambda: fleet()["node-a"]["state"] == "offline", what="node-a offline")

        with Reader.open(path=db) as reader:
            for agent in (a, b):
                epoch, last, pending = pending_seqs(agent.outbox)
                expected = set(range(1, last + 1))
                wait(
                    lambda agent=agent, epoch=epoch, pending=pending, expected=expected: (
                        set(reader.seqs(agent.node, epoch)) | pending == expected
                    ),
                    what=f"every event of {agent.node}",
                )
                stored = reader.seqs(agent.node, epoch)
                assert len(stored) == len(set(stored)), "an event stored twice"
            # Node A stopped cleanly: nothing the broker acknowledged is left in its outbox
            # (a read committed while it stopped may wait there for the next start, unsent),
            # nothing is missing, and there is no hole.
            epoch, _, pending = pending_seqs(a.outbox)
            assert not pending & set(reader.seqs(a.node, epoch)), "acknowledged, not deleted"
            assert reader.holes() == []
            history = reader.db.query("SELECT node, state, reason FROM node_status ORDER BY id")
        assert {"node": "node-b", "state": "offline", "reason": "will"} in history
        assert {"node": "node-a", "state": "offline", "reason": ""} in history
        assert receiver.metrics()['ioc_invalid_total{reason="schema"}'] == 0
    finally:
        for process in (a, b, receiver):
            process.stop()
