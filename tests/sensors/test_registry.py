"""The registry covers every configured kind; a missing optional library stops start-up (78)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import typing
from pathlib import Path

import pytest
from pydantic import TypeAdapter

from edge_agent.config.sensors import SensorConfig
from edge_agent.sensors.registry import DRIVERS
from tests.conftest import REPO, agent_env

EXAMPLE = REPO / "config" / "edge-agent.example.toml"


def test_every_config_kind_has_a_driver_and_an_example() -> None:
    kinds = {
        typing.get_args(model.model_fields["kind"].annotation)[0]
        for model in typing.get_args(typing.get_args(SensorConfig)[0])
    }
    assert kinds == set(DRIVERS)
    example = EXAMPLE.read_text()
    for kind in kinds:
        assert f'kind = "{kind}"' in example, f"no example of kind {kind} in {EXAMPLE.name}"


# Runs the real CLI in a child whose import of one library fails, as on a node without it.
BLOCKED_RUN = """
import sys
sys.modules[sys.argv[1]] = None  # makes `import <name>` raise ImportError
from edge_agent.cli import main
sys.exit(main(["run", "--config", sys.argv[2]]))
"""


@pytest.mark.parametrize(
    ("blocked", "sensor", "extra"),
    [
        (
            "pymodbus",
            'kind = "modbus"\nname = "river-gauge"\ntransport = "tcp"\nhost = "192.0.2.7"\n'
            'registers = [{quantity = "water_level", unit = "m", address = 0}]\n',
            "modbus",
        ),
        ("serial", 'kind = "pms5003"\nname = "aq-pm"\ndevice = "/dev/ttyS0"\n', "serial"),
    ],
)
def test_missing_library_exits_78_naming_sensor_library_and_extra(
    tmp_path: Path, blocked: str, sensor: str, extra: str
) -> None:
    config = tmp_path / "edge-agent.toml"
    config.write_text(
        f'[paths]\nstate_dir = "{tmp_path / "state"}"\n[web]\nenabled = false\n'
        f"[[sensors]]\n{sensor}"
    )
    result = subprocess.run(
        [sys.executable, "-c", BLOCKED_RUN, blocked, str(config)],
        env=agent_env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 78, result.stderr
    name = sensor.split('name = "')[1].split('"')[0]
    library = "pymodbus" if blocked == "pymodbus" else "pyserial"
    assert f"'{name}'" in result.stderr
    assert library in result.stderr
    assert f"pip install 'edge-agent[{extra}]'" in result.stderr


def test_commented_sensor_examples_validate() -> None:
    """Each commented `# [[sensors]]` example, uncommented, is a valid sensor entry."""
    blocks: list[list[str]] = []
    inside = False
    for line in EXAMPLE.read_text().splitlines():
        if line == "# [[sensors]]":
            blocks.append([])
            inside = True
        elif inside and line.startswith("# "):
            blocks[-1].append(line[2:])
        else:
            inside = False
    adapter = TypeAdapter(SensorConfig)
    kinds = set()
    for block in blocks:
        body = "\n".join(x for x in block if x)
        entry = tomllib.loads(body)
        kinds.add(adapter.validate_python(entry).kind)
    assert kinds == set(DRIVERS) - {"simulated", "system"}
