"""The command line: every command has help, check-config names the wrong key and exits 78."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from edge_agent.cli import build_parser, main
from tests.conftest import REPO, agent_command, agent_env

EXAMPLE = REPO / "config" / "edge-agent.example.toml"


def _subcommands() -> dict[str, object]:
    parser = build_parser()
    actions = [a for a in parser._actions if a.dest == "command"]
    return dict(actions[0].choices)  # type: ignore[arg-type]


def test_every_command_has_help_text() -> None:
    commands = _subcommands()
    assert {"run", "check-config", "version"} <= commands.keys()
    for name, sub in commands.items():
        help_text = sub.format_help()  # type: ignore[attr-defined]
        description = sub.description  # type: ignore[attr-defined]
        assert description and len(description) > 20, f"{name} lacks a description"
        for action in sub._actions:  # type: ignore[attr-defined]
            if action.dest != "help":
                assert action.help, f"{name} {action.dest} has no help"
        assert name in help_text


def test_help_runs_for_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    for name in _subcommands():
        with pytest.raises(SystemExit) as exit_info:
            main([name, "--help"])
        assert exit_info.value.code == 0
        assert "usage: edge-agent" in capsys.readouterr().out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["version"]) == 0
    assert capsys.readouterr().out.startswith("edge-agent ")


def check_config(path: Path | None, **env: str) -> subprocess.CompletedProcess[str]:
    args = ["check-config"] + (["--config", str(path)] if path else [])
    return subprocess.run(
        agent_command(*args), env=agent_env(**env), capture_output=True, text=True, timeout=60
    )


def test_example_config_validates() -> None:
    result = check_config(EXAMPLE)
    assert result.returncode == 0, result.stderr
    effective = json.loads(result.stdout)
    assert effective["node"]["id"]
    assert effective["mqtt"]["topic_prefix"] == "ioc/v1"


def test_secrets_are_masked(tmp_path: Path) -> None:
    config = tmp_path / "a.toml"
    config.write_text('[mqtt]\nusername = "node-7"\npassword = "hunter2-very-secret"\n')
    result = check_config(config)
    assert result.returncode == 0, result.stderr
    assert "hunter2-very-secret" not in result.stdout
    assert json.loads(result.stdout)["mqtt"]["password"] == "**********"


def test_credentials_directory_supplies_secrets(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "mqtt.password").write_text("from-systemd\n")
    (creds / "node.crt").write_text("not a secret field, ignored")
    from edge_agent.config import load_settings

    settings = load_settings(None, env={"CREDENTIALS_DIRECTORY": str(creds)})
    assert settings.mqtt.password is not None
    assert settings.mqtt.password.get_secret_value() == "from-systemd"


def test_environment_overrides_file(tmp_path: Path) -> None:
    config = tmp_path / "a.toml"
    config.write_text('[mqtt]\nport = 1884\nhost = "file-host"\n')
    result = check_config(config, EDGE_AGENT_MQTT__PORT="1999")
    assert result.returncode == 0, result.stderr
    effective = json.loads(result.stdout)
    assert effective["mqtt"]["port"] == 1999
    assert effective["mqtt"]["host"] == "file-host"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[mqtt]\nhots = 'x'\n", "mqtt.hots: unknown key"),
        ("[mqtt]\nport = 'many'\n", "mqtt.port: Input should be a valid integer"),
        ("[web]\nport = 70000\n", "web.port: Input should be less than or equal to 65535"),
        (
            "[[sensors]]\nkind = 'simulated'\nname = 'a'\ninterval_s = -1\n",
            "sensors[0].interval_s: Input should be greater than or equal to 0.01",
        ),
        ("[[sensors]]\nkind = 'nope'\nname = 'a'\n", "sensors[0]: kind 'nope' is not known"),
        ("[mqtt\nport = 1\n", "config: invalid TOML"),
        ("[node]\nid = 'has space'\n", "node.id: String should match pattern"),
        (
            "[[sensors]]\nkind = 'simulated'\nname = 'a'\ninterval_s = 1e-9\n",
            "sensors[0].interval_s: Input should be greater than or equal to 0.01",
        ),
        (
            "[[sensors]]\nkind = 'simulated'\nname = 'a'\n[sensors.ranges.pm2_5]\n"
            "min = nan\nmax = 10\n",
            "sensors[0].ranges.pm2_5.min: Input should be a finite number",
        ),
        ("[mqtt]\nhost = 'a b'\n", "mqtt.host: String should match pattern"),
        (
            "[[sensors]]\nkind = 'simulated'\nname = 'batch'\n",
            "sensors[0].name: 'batch' is reserved by the contract",
        ),
        (
            "cameras = [{name = 'gap', source = 'x.avi'}]\nsensors = []\n",
            "cameras[0].name: 'gap' is reserved by the contract",
        ),
        (
            "[[sensors]]\nkind = 'simulated'\nname = 'gate'\n"
            "[[cameras]]\nname = 'gate'\nsource = 'x.avi'\n",
            "cameras[0].name: 'gate' is already the name of sensors[0]",
        ),
    ],
    ids=[
        "unknown-key",
        "wrong-type",
        "out-of-range",
        "nested-range",
        "bad-kind",
        "toml",
        "pattern",
        "tiny-interval",
        "nan-range",
        "broker-host-space",
        "reserved-sensor-name",
        "reserved-camera-name",
        "sensor-and-camera-share-a-name",
    ],
)
def test_bad_config_names_the_key_and_exits_78(tmp_path: Path, text: str, expected: str) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(text)
    result = check_config(config)
    assert result.returncode == 78
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(expected), lines[0]
    assert str(config) in lines[0]


def test_missing_file_exits_78(tmp_path: Path) -> None:
    result = check_config(tmp_path / "absent.toml")
    assert result.returncode == 78
    assert result.stderr.strip() == f"config: file not found ({tmp_path / 'absent.toml'})"


def test_unreadable_file_exits_78(tmp_path: Path) -> None:
    config = tmp_path / "secret.toml"
    config.write_text("[node]\n")
    config.chmod(0)
    command = agent_command("check-config", "--config", str(config))
    if os.geteuid() == 0:
        # Root reads any file; without its capabilities it gets what a technician would.
        command = ["setpriv", "--bounding-set=-all", "--inh-caps=-all", "--", *command]
    result = subprocess.run(command, env=agent_env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 78, result.stderr
    assert result.stderr.strip() == f"config: permission denied, cannot read ({config})"


def test_directory_instead_of_file_exits_78(tmp_path: Path) -> None:
    # A directory in place of the file is unreadable as TOML for root and users alike.
    result = check_config(tmp_path)
    assert result.returncode == 78
    assert result.stderr.strip().startswith("config: is a directory")


def test_not_utf8_exits_78(tmp_path: Path) -> None:
    config = tmp_path / "latin1.toml"
    config.write_bytes(b"[node]\ndistrict = '\xe9'\n")
    result = check_config(config)
    assert result.returncode == 78
    assert "not UTF-8" in result.stderr


def test_bad_environment_value_names_the_variable(tmp_path: Path) -> None:
    result = check_config(None, EDGE_AGENT_MQTT__PORT="0")
    assert result.returncode == 78
    assert "mqtt.port" in result.stderr
    assert "EDGE_AGENT_MQTT__PORT" in result.stderr


def test_several_problems_one_line_each(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[mqtt]\nport = 0\nbogus = 1\n[web]\nlanguage = 'fr'\n")
    result = check_config(config)
    assert result.returncode == 78
    assert sorted(line.split(":")[0] for line in result.stderr.strip().splitlines()) == [
        "mqtt.bogus",
        "mqtt.port",
        "web.language",
    ]


def test_run_with_bad_config_exits_78(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[outbox]\nmax_bytes = 1\n")
    result = subprocess.run(
        agent_command("run", "--config", str(config)),
        env=agent_env(),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 78
    assert result.stderr.startswith("outbox.max_bytes:")


def test_config_hash_covers_secrets_without_revealing_them() -> None:
    from edge_agent.config import config_hash
    from edge_agent.config.mqtt import MqttConfig
    from edge_agent.config.settings import Settings

    one = Settings(mqtt=MqttConfig(password="first-secret"))
    two = Settings(mqtt=MqttConfig(password="second-secret"))
    assert config_hash(one) != config_hash(two)
    assert config_hash(one) == config_hash(Settings(mqtt=MqttConfig(password="first-secret")))
