"""`edge-agent outbox stats|peek|export` read a live outbox from another process."""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

import pytest

from edge_agent.cli import build_parser
from edge_agent.contract import Envelope, Kind
from tests.conftest import agent_command, agent_env
from tests.outbox.helpers import make_outbox


def _outbox_cli(config: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        agent_command("outbox", *args, "--config", str(config)),
        env=agent_env(),
        capture_output=True,
        timeout=60,
        check=False,
    )


def test_outbox_actions_have_help() -> None:
    parser = build_parser()
    (commands,) = [a for a in parser._actions if a.dest == "command"]
    outbox = commands.choices["outbox"]  # type: ignore[index]
    (actions,) = [a for a in outbox._actions if a.dest == "outbox_command"]
    assert set(actions.choices) == {"stats", "peek", "export"}  # type: ignore[arg-type]
    for name, sub in actions.choices.items():  # type: ignore[union-attr]
        assert isinstance(sub, argparse.ArgumentParser)
        assert sub.description and len(sub.description) > 20, name
        for action in sub._actions:
            if action.dest != "help":
                assert action.help, f"outbox {name} {action.dest} has no help"


@pytest.mark.asyncio
async def test_stats_peek_export_while_the_outbox_is_open(tmp_path: Path) -> None:
    state = tmp_path / "state"
    config = tmp_path / "agent.toml"
    config.write_text(f'[paths]\nstate_dir = "{state}"\n')
    async with make_outbox(state / "outbox.sqlite3") as outbox:
        readings = [
            await outbox.put(Kind.READING, {"i": i, "name": "Hà Nội"}, stream="aq")
            for i in range(5)
        ]
        alert = await outbox.put(Kind.ALERT, {"a": 1}, stream="alerts")
        await outbox.ack([readings[0]])

        stats = _outbox_cli(config, "stats")
        assert stats.returncode == 0, stats.stderr
        facts = json.loads(stats.stdout)
        assert facts["epoch"] == outbox.epoch
        assert facts["pending_rows"] == 5
        assert facts["acked"] == 1
        assert facts["last_seq"] == alert

        peek = _outbox_cli(config, "peek", "-n", "2")
        assert peek.returncode == 0, peek.stderr
        lines = [json.loads(line) for line in peek.stdout.splitlines()]
        assert [line["seq"] for line in lines] == [alert, readings[1]]
        assert lines[0]["envelope"]["kind"] == "alert"

        export = _outbox_cli(config, "export", "--since", str(readings[2]))
        assert export.returncode == 0, export.stderr
        envelopes = [Envelope.decode(line) for line in export.stdout.splitlines()]
        assert [e.seq for e in envelopes] == [*readings[3:], alert]
        assert envelopes[0].data == {"i": 3, "name": "Hà Nội"}
        assert b"exported 3 events" in export.stderr

        # The agent side is untouched by the readers.
        assert len(await outbox.claim(10)) == 5

        # The readings of one read share a stored row: the readers still see one envelope
        # each, and --since may fall inside such a row.
        read = await outbox.put_many(
            [(Kind.READING, {"q": q}, "plc", 1_700_000_000.0, None) for q in range(6)]
        )
        export = _outbox_cli(config, "export", "--since", str(read[2]))
        envelopes = [Envelope.decode(line) for line in export.stdout.splitlines()]
        assert [e.seq for e in envelopes] == read[3:]
        assert [e.data for e in envelopes] == [{"q": q} for q in range(3, 6)]
        peek = _outbox_cli(config, "peek", "-n", "20")
        assert [json.loads(line)["seq"] for line in peek.stdout.splitlines()][-6:] == read


def test_missing_outbox_is_a_clear_error(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(f'[paths]\nstate_dir = "{tmp_path / "nowhere"}"\n')
    result = _outbox_cli(config, "stats")
    assert result.returncode == 1
    assert b"no outbox at" in result.stderr
