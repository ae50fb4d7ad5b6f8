"""The two agents' configurations for the same job: 20 holding registers every 100 ms, QoS 1.

edge-agent: one `modbus` sensor (one request per read: the 20 registers are contiguous),
defaults everywhere else, no camera, no status page, state in its own directory.

ThingsBoard IoT Gateway: its shipped configuration directory with three files replaced:
`tb_gateway.json` (the broker, QoS 1, SQLite storage, the Modbus connector; remote
configuration and the remote shell off, since no ThingsBoard server is there to drive
them; everything else as shipped, statistics included), `modbus.json` (one TCP slave, the
20 registers as time series, one request each, as the connector reads them) and
`logs.json` (the shipped levels, but to stderr only, like edge-agent, instead of files under
./logs as well: log files would count in its disk figure and edge-agent's journald lines
would not).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from bench.peer.device import REGISTERS

POLL_MS = 100
DEVICE_NAME = "bench-plc"
EDGE_NODE, EDGE_DISTRICT, EDGE_SENSOR = "bench-node", "d1", "plc"
EDGE_PREFIX = "ioc/v1"


def quantity(register: int) -> str:
    return f"reg{register:02d}"


def edge_config(directory: Path, *, broker_port: int, device_port: int) -> Path:
    """Write edge-agent's TOML; its outbox lives in `directory/state`."""
    registers = ",\n".join(
        f'  {{ quantity = "{quantity(i)}", unit = "1", address = {i}, type = "uint16" }}'
        for i in range(REGISTERS)
    )
    text = f"""cameras = []

[node]
id = "{EDGE_NODE}"
district = "{EDGE_DISTRICT}"

[paths]
state_dir = "{directory / "state"}"

[mqtt]
host = "127.0.0.1"
port = {broker_port}
topic_prefix = "{EDGE_PREFIX}"

[web]
enabled = false

[[sensors]]
kind = "modbus"
name = "{EDGE_SENSOR}"
transport = "tcp"
host = "127.0.0.1"
port = {device_port}
unit_id = 1
interval_s = {POLL_MS / 1000}
registers = [
{registers},
]
"""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "edge-agent.toml"
    path.write_text(text)
    return path


def gateway_config(
    directory: Path, *, shipped: Path, broker_port: int, device_port: int, token: str
) -> Path:
    """Write the gateway's configuration directory (TB_GW_CONFIG_DIR) and return it."""
    config_dir = directory / "config"
    if config_dir.exists():
        shutil.rmtree(config_dir)
    shutil.copytree(shipped, config_dir)
    main = json.loads((shipped / "tb_gateway.json").read_text())
    board = main["thingsboard"]
    board.update(
        host="127.0.0.1",
        port=broker_port,
        qos=1,
        remoteShell=False,
        remoteConfiguration=False,
        security={"type": "accessToken", "accessToken": token},
    )
    main["storage"] = {
        "type": "sqlite",
        "data_file_path": f"{directory / 'data'}/",
        "messages_ttl_check_in_hours": 1,
        "messages_ttl_in_days": 7,
        "max_read_records_count": 1000,
    }
    main["grpc"] = {**main.get("grpc", {}), "enabled": False}
    main["connectors"] = [{"type": "modbus", "name": "Modbus", "configuration": "modbus.json"}]
    (config_dir / "tb_gateway.json").write_text(json.dumps(main, indent=2))
    # The shipped example slave, with our device, poll period and register map.
    slave = json.loads((shipped / "modbus.json").read_text())["master"]["slaves"][0]
    slave.update(
        host="127.0.0.1",
        port=device_port,
        unitId=1,
        deviceName=DEVICE_NAME,
        pollPeriod=POLL_MS,
        attributes=[],
        timeseries=[
            {
                "tag": quantity(i),
                "type": "16uint",
                "functionCode": 3,
                "objectsCount": 1,
                "address": i,
            }
            for i in range(REGISTERS)
        ],
        attributeUpdates=[],
        rpc=[],
    )
    (config_dir / "modbus.json").write_text(json.dumps({"master": {"slaves": [slave]}}, indent=2))
    # The shipped logging (levels, loggers) with every handler swapped for one on stderr.
    logs = json.loads((shipped / "logs.json").read_text())
    logs["handlers"] = {
        "stderr": {
            "class": "logging.StreamHandler",
            "formatter": next(iter(logs["formatters"])),
            "stream": "ext://sys.stderr",
        }
    }
    for logger in [*logs.get("loggers", {}).values(), logs.get("root", {})]:
        logger["handlers"] = ["stderr"]
    (config_dir / "logs.json").write_text(json.dumps(logs, indent=2))
    return config_dir
