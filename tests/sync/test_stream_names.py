"""No sensor or camera name the configuration accepts can make a payload the receiver
rejects: names that look like the contract's own streams (`batch`, `gap`, `alert`...) are
refused, and every near miss the config lets through is published and stored whole.

Before names were checked, a sensor named `batch` published on `data/batch`: the broker
acknowledged, the outbox deleted, and the receiver refused every reading as a bad batch."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.config.settings import Settings
from edge_agent.contract import RESERVED_STREAMS, Kind, reading_data
from tests.conftest import Broker
from tests.sync.conftest import NODE, eventually, mqtt_config, open_outbox, receiving, running_sync

NEAR_MISSES = [
    "batch-1",
    "batch.2",
    "x.batch",
    "batches",
    "gap_1",
    "gaps",
    "alerts",
    "audit-log",
    "health.1",
    "status2",
    "aqi-station",
    "data",
    "cmd",
    "reply",
    "_",
    "-",
    "..",
    "a" * 64,
]


def sensors(names: list[str]) -> list[dict[str, object]]:
    return [{"kind": "simulated", "name": name} for name in names]


@pytest.mark.parametrize("name", sorted(RESERVED_STREAMS | {"BATCH", "Gap"}))
def test_reserved_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="reserved by the contract"):
        Settings(sensors=sensors([name]), cameras=[])  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_every_name_the_config_accepts_reaches_the_receiver_whole(
    broker: Broker, tmp_path: Path
) -> None:
    accepted = Settings(sensors=sensors(NEAR_MISSES), cameras=[])  # type: ignore[arg-type]
    names = [s.name for s in accepted.sensors]
    assert names == NEAR_MISSES
    async with (
        open_outbox(tmp_path) as outbox,
        receiving(broker) as receiver,
        running_sync(mqtt_config(broker, batch_max_events=1), outbox),  # each on data/{name}
    ):
        seqs = [
            await outbox.put(
                Kind.READING,
                reading_data(sensor=name, quantity="temperature", value=21.5, unit="Cel"),
                stream=name,
            )
            for name in names
        ]
        await eventually(lambda: len(receiver.seqs(NODE, outbox.epoch)) == len(seqs))
        assert receiver.seqs(NODE, outbox.epoch) == sorted(seqs)
