"""Sync configuration and CLI: documented keys, embedded default without a broker, ioc tools."""

from __future__ import annotations

import json
import logging
import subprocess
import tomllib
from pathlib import Path

import pytest
from pydantic import BaseModel

from edge_agent.cli import build_parser
from edge_agent.config import MqttConfig
from edge_agent.health import State
from edge_agent.sync.signing import Verifier, load_public_key
from tests.conftest import REPO, agent_command, agent_env, free_port
from tests.sync.conftest import eventually, open_outbox, put_readings, running_sync


def _fields(model: type[BaseModel], prefix: str = "") -> dict[str, type[BaseModel] | None]:
    out: dict[str, type[BaseModel] | None] = {}
    for name, field in model.model_fields.items():
        assert field.description, f"{prefix}{name} has no description"
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            out.update(_fields(annotation, f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = None
    return out


def test_every_mqtt_key_is_described_and_in_the_example() -> None:
    example = (REPO / "config" / "edge-agent.example.toml").read_text()
    parsed = tomllib.loads(example)["mqtt"]
    for dotted in _fields(MqttConfig):
        *tables, key = dotted.split(".")
        section = "[mqtt" + "".join(f".{t}" for t in tables) + "]"
        assert section in example, section
        body = example.split(section, 1)[1].split("\n[", 1)[0]
        assert f"{key} =" in body, f"mqtt.{dotted} missing from the example"
    MqttConfig(**parsed)


@pytest.mark.asyncio
async def test_no_broker_means_degraded_buffering_and_one_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = MqttConfig(port=free_port(), backoff_min_s=0.05, backoff_max_s=0.1)
    caplog.set_level(logging.INFO, logger="edge_agent.sync")
    async with open_outbox(tmp_path) as outbox, running_sync(config, outbox) as sync:
        await put_readings(outbox, 5)
        await eventually(lambda: sync.health.counters.get("connect_failures", 0) >= 5)
        assert sync.health.state is State.DEGRADED
        assert sync.health.detail == "broker unreachable"
        assert outbox.stats()["pending_rows"] == 5
    warnings = [r for r in caplog.records if r.name.startswith("edge_agent.sync")]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]


def test_ioc_subcommands_have_help() -> None:
    parser = build_parser()
    ioc = next(a for a in parser._actions if a.dest == "command").choices["ioc"]  # type: ignore[index]
    subs = next(a for a in ioc._actions if a.dest == "ioc_command").choices
    assert {"keygen", "sign", "receive"} <= set(subs)
    for name, sub in subs.items():
        assert sub.description and len(sub.description) > 20, name
        for action in sub._actions:
            if action.dest != "help":
                assert action.help, f"ioc {name} {action.dest} has no help"


def test_ioc_keygen_and_sign_make_a_verifiable_command(tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            agent_command("ioc", *args),
            env=agent_env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    assert run("keygen", "--out", str(tmp_path)).returncode == 0
    signed = run(
        "sign",
        "snapshot",
        "--node",
        "n1",
        "--district",
        "d1",
        "--args",
        '{"camera": "gate"}',
        "--key",
        str(tmp_path / "ioc-command.key"),
    )
    assert signed.returncode == 0, signed.stderr
    out = json.loads(signed.stdout)
    assert out["topic"] == "ioc/v1/d1/n1/cmd/snapshot"
    command = out["payload"]
    verifier = Verifier(public_keys=(load_public_key(tmp_path / "ioc-command.pub"),))
    assert verifier.verify(command)
    command["args"]["camera"] = "other"
    assert not verifier.verify(command)
    bad = run("sign", "ping", "--node", "n1", "--district", "d1", "--args", "{nope")
    assert bad.returncode == 78 and "--args" in bad.stderr


@pytest.mark.parametrize(
    ("mqtt", "key"),
    [
        ("batch_max_events = 10\nbatch_min_events = 20", "mqtt.batch_min_events"),
        ('host = ""', "mqtt.host"),
        ("commands = { confirm_s = 0.1 }", "mqtt.commands.confirm_s"),
    ],
)
def test_impossible_mqtt_settings_exit_78_naming_the_key(
    tmp_path: Path, mqtt: str, key: str
) -> None:
    path = tmp_path / "edge-agent.toml"
    path.write_text(f"[mqtt]\n{mqtt}\n")
    done = subprocess.run(
        agent_command("check-config", "--config", str(path)),
        env=agent_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 78, done.stderr
    assert key in done.stderr, done.stderr


def test_edit_config_keeps_comments_and_raises_config_errors(tmp_path: Path) -> None:
    from edge_agent.config.editing import backup_path, edit_config
    from edge_agent.errors import ConfigError

    path = tmp_path / "edge-agent.toml"
    original = "# installed 2026-11-02 by Minh\n[mqtt]\nport = 1884  # provincial broker\n"
    path.write_text(original)
    settings = edit_config(path, {"mqtt.port": 8883, "web.port": 0})
    assert settings.mqtt.port == 8883 and settings.web.port == 0
    text = path.read_text()
    assert "# installed 2026-11-02 by Minh" in text and "port = 8883  # provincial broker" in text
    assert backup_path(path).read_text() == original
    for changes, named in (
        ({"mqtt.port.deeper": 1}, "mqtt.port"),
        ({"mqtt.port": "not a port"}, "mqtt.port"),
        ({"a..b": 1}, "a..b"),
    ):
        with pytest.raises(ConfigError) as refused:
            edit_config(path, changes)
        assert named in str(refused.value), refused.value
    path.write_text("[mqtt\n")
    with pytest.raises(ConfigError) as broken:
        edit_config(path, {"mqtt.port": 1})
    assert "invalid TOML" in str(broken.value)
