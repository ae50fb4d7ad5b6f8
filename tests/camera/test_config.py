"""Camera configuration: the documented example, the embedded demo default, bad keys."""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path

import pytest

from edge_agent.config import CameraConfig, Settings, load_settings
from edge_agent.errors import ConfigError
from tests.conftest import REPO, agent_command, agent_env

EXAMPLE = REPO / "config" / "edge-agent.example.toml"


def commented_camera_example() -> str:
    text = EXAMPLE.read_text()
    block = text[text.index("# [[cameras]]") : text.index("[detector]")]
    lines = []
    for line in block.splitlines():
        if line.startswith("# "):
            lines.append(line[2:])
        elif line.strip() in ("", "#"):
            lines.append("")
        else:
            raise AssertionError(f"uncommented line in the camera example: {line!r}")
    return "\n".join(lines)


def test_commented_camera_example_is_valid() -> None:
    data = tomllib.loads(commented_camera_example())
    camera = CameraConfig(**data["cameras"][0])
    assert camera.zones[0].name == "crossing"
    assert camera.lines[0].directions == ("in", "out")
    assert camera.motion.masks


def test_every_camera_field_is_described() -> None:
    from edge_agent.config.cameras import LineConfig, MotionConfig, ZoneConfig

    for model in (CameraConfig, MotionConfig, ZoneConfig, LineConfig):
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"


def test_embedded_default_plays_the_demo_clip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_settings(None, env={}).cameras == []
    (tmp_path / "media").mkdir()
    (tmp_path / "media" / "vtest.avi").write_bytes(b"")
    (demo,) = load_settings(None, env={}).cameras
    assert (demo.name, demo.source, demo.fps, demo.loop) == ("demo", "media/vtest.avi", 2.0, True)
    # Only the embedded default: a file, even one naming no cameras, gets none.
    config = tmp_path / "sensors-only.toml"
    config.write_text('[node]\nid = "node-07"\n')
    assert load_settings(config, env={}).cameras == []
    assert Settings().cameras == []


def test_wrong_camera_keys_are_named(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(
        '[[cameras]]\nname = "gate"\nsource = "rtsp://192.0.2.1/s"\nfps = 0\n'
        '[[cameras.zones]]\nname = "z"\npolygon = [[0, 0], [2, 0], [1, 1]]\n'
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(config, env={})
    problems = caught.value.problems
    assert any(p.startswith("cameras[0].fps:") for p in problems), problems
    assert any(p.startswith("cameras[0].zones[0].polygon:") for p in problems), problems
    result = subprocess.run(
        agent_command("check-config", "--config", str(config)),
        env=agent_env(),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 78
    assert "cameras[0].fps" in result.stderr + result.stdout


def test_wrong_traffic_keys_are_named(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(
        '[[cameras]]\nname = "gate"\nsource = "rtsp://192.0.2.1/s"\ncount_interval_s = 7\n'
        'classes = "roads"\n'
        '[[cameras.rules]]\nkind = "loiter"\nzone = "z"\n'
        '[[cameras.lines]]\nname = "l"\npoints = [[0, 0.5], [1, 0.5]]\n'
        'allowed_direction = "north"\n'
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(config, env={})
    problems = caught.value.problems
    for key in ("count_interval_s", "classes", "rules[0]", "lines[0]"):
        assert any(p.startswith(f"cameras[0].{key}") for p in problems), (key, problems)
    config.write_text(
        '[[cameras]]\nname = "gate"\nsource = "rtsp://192.0.2.1/s"\n'
        '[[cameras.movements]]\nname = "m"\nentry = "north"\nexit = "east"\n'
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(config, env={})
    assert any(
        p.startswith("cameras[0]") and "no zone or line named 'north'" in p
        for p in caught.value.problems
    ), caught.value.problems
