"""`edge-agent doctor` as the technician runs it, against real peers: a mosquitto with mutual
TLS and the documented ACL, the real model, a real clip, the simulated sensors. Each fault
is made for real (a port nobody listens on, a certificate from another CA, an ACL that
refuses the commands, a damaged model file, a clock set back with libfaketime) and must give
a FAIL line with its fix and a non-zero exit."""

from __future__ import annotations

import ctypes
import json
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import (
    Broker,
    agent_command,
    agent_env,
    free_port,
    refusing_broker,
    require_binary,
)
from tests.inference.conftest import media_dir, model_dir  # noqa: F401  (fixtures)
from tests.sync.pki import Authority, mtls_broker_config
from tests.sync.test_tls_acl import documented_acl

NODE = "hk-07"
DISTRICT = "d1"


class Node:
    """A node's configuration file, written fresh for each doctor run."""

    def __init__(self, tmp_path: Path, models: Path) -> None:
        self.dir = tmp_path
        self.state = tmp_path / "state"
        self.state.mkdir()
        self.values: dict[str, str] = {
            "node": f'id = "{NODE}"\ndistrict = "{DISTRICT}"',
            "paths": f'state_dir = "{self.state}"\nmodel_dir = "{models}"',
            "web": f"port = {free_port()}",
            "mqtt": "enabled = false",
            "sensors": '[[sensors]]\nkind = "simulated"\nname = "sim-1"',
        }

    def broker(self, broker: Broker, ca: Authority | None = None, cn: str = NODE) -> None:
        self.values["mqtt"] = f'host = "127.0.0.1"\nport = {broker.port}\nconnect_timeout_s = 5'
        if ca is not None:
            cert, key = ca.issue(cn)
            self.values["mqtt.tls"] = (
                f'enabled = true\nca_file = "{ca.ca_file}"\n'
                f'cert_file = "{cert}"\nkey_file = "{key}"'
            )

    def write(self) -> Path:
        sections = []
        for name, body in self.values.items():
            sections.append(body if name in ("sensors", "cameras") else f"[{name}]\n{body}")
        path = self.dir / "edge-agent.toml"
        path.write_text("\n".join(sections) + "\n")
        return path


def doctor(node: Node, *args: str, prefix: tuple[str, ...] = ()) -> tuple[int, dict[str, Any]]:
    result = subprocess.run(
        [*prefix, *agent_command("doctor", "--config", str(node.write()), "--json", *args)],
        env=agent_env(mqtt=True),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.stdout, result.stderr
    report = json.loads(result.stdout)
    by_check: dict[str, Any] = {}
    for line in report["findings"]:
        by_check.setdefault(line["check"], []).append(line)
    return result.returncode, by_check


def only(found: dict[str, Any], check: str) -> dict[str, Any]:
    (line,) = found[check]
    assert isinstance(line, dict)
    return line


def assert_fails(rc: int, found: dict[str, Any], check: str, code: str) -> dict[str, Any]:
    line = only(found, check)
    assert (line["status"], line["code"]) == ("FAIL", code), line
    assert line["fix"], line
    assert rc == 1
    return line


def expected_clock_code() -> str:
    # The doctor reads the kernel's NTP state; so does this test, to know what is true here.
    state = ctypes.CDLL(None).adjtimex(ctypes.create_string_buffer(512))
    return "clock_unsynchronised" if state == 5 else "clock_ok"


@pytest.fixture
def ca(tmp_path: Path) -> Authority:
    return Authority(tmp_path / "pki")


@pytest.fixture
def node(tmp_path: Path, model_dir: Path) -> Node:  # noqa: F811
    return Node(tmp_path, model_dir)


@pytest.fixture
def tls_broker(broker: Broker, ca: Authority, tmp_path: Path) -> Broker:
    acl = tmp_path / "ioc.acl"
    acl.write_text(documented_acl())
    broker.extra_config = mtls_broker_config(ca, acl)
    broker.restart()
    return broker


def test_all_ok_against_a_tls_broker_with_the_documented_acl(
    node: Node,
    tls_broker: Broker,
    ca: Authority,
    media_dir: Path,  # noqa: F811
) -> None:
    node.broker(tls_broker, ca)
    node.values["sensors"] += '\n[[sensors]]\nkind = "system"\nname = "host"'
    node.values["cameras"] = f'[[cameras]]\nname = "gate"\nsource = "{media_dir / "vtest.avi"}"'
    rc, found = doctor(node)
    statuses = {check: [(f["status"], f["code"]) for f in lines] for check, lines in found.items()}
    assert statuses.pop("clock") == [
        ("WARN" if expected_clock_code() != "clock_ok" else "OK", expected_clock_code())
    ]
    assert statuses.pop("commands") == [("OK", "commands_ok")]
    assert statuses == {
        "config": [("OK", "config_ok")],
        "node": [("OK", "node_ok")],
        "state": [("OK", "state_ok")],
        "disk": [("OK", "disk_ok")]
        if shutil.disk_usage(node.state).free > 2**29
        else statuses["disk"],
        "model": [("OK", "model_ok")],
        "camera:gate": [("OK", "camera_ok")],
        "sensor:sim-1": [("OK", "sensor_simulated")],
        "sensor:host": [("OK", "sensor_ok")],
        "broker": [("OK", "broker_ok")],
        "tls": [("OK", "tls_ok")],
        "auth": [("OK", "auth_ok")],
        "web": [("OK", "web_ok")],
    }
    assert rc == 0
    assert only(found, "camera:gate")["params"]["width"] == "768"


def test_command_subscription_granted(node: Node, tls_broker: Broker, ca: Authority) -> None:
    node.broker(tls_broker, ca)
    rc, found = doctor(node)
    assert (only(found, "commands")["status"], rc) == ("OK", 0)


def test_refused_command_subscription_fails(node: Node, broker: Broker) -> None:
    # mosquitto's acl_file grants every SUBACK and only filters deliveries; its
    # dynamic-security plugin refuses in the SUBACK, which is what the doctor reads.
    refusing_broker(broker, ("subscribePattern", "ioc/v1/+/+/cmd/+"))
    node.broker(broker)
    rc, found = doctor(node)
    assert only(found, "auth")["status"] == "OK"
    assert_fails(rc, found, "commands", "commands_refused")


def test_unreachable_broker_fails(node: Node) -> None:
    node.values["mqtt"] = f'host = "127.0.0.1"\nport = {free_port()}\nconnect_timeout_s = 3'
    rc, found = doctor(node)
    line = assert_fails(rc, found, "broker", "broker_unreachable")
    assert "Connection refused" in line["message"]
    assert "auth" not in found and "commands" not in found


def test_broker_certificate_from_another_ca_fails(
    node: Node, tls_broker: Broker, tmp_path: Path
) -> None:
    other = Authority(tmp_path / "other", name="other-ca")
    node.broker(tls_broker, other)
    rc, found = doctor(node)
    line = assert_fails(rc, found, "tls", "tls_untrusted")
    assert "certificate" in line["message"]


def test_expired_node_certificate_fails(node: Node, tls_broker: Broker, ca: Authority) -> None:
    node.broker(tls_broker, ca)
    cert, key = ca.issue(NODE, expired=True)
    node.values["mqtt.tls"] = (
        f'enabled = true\nca_file = "{ca.ca_file}"\ncert_file = "{cert}"\nkey_file = "{key}"'
    )
    rc, found = doctor(node)
    assert only(found, "tls")["status"] == "OK"  # the broker's certificate is fine
    line = assert_fails(rc, found, "auth", "certificate_refused")
    assert "expired" in line["message"]


def test_missing_and_altered_model_fail(
    node: Node,
    model_dir: Path,  # noqa: F811
    media_dir: Path,  # noqa: F811
) -> None:
    models = node.dir / "models"
    shutil.copytree(model_dir, models)
    node.values["paths"] = f'state_dir = "{node.state}"\nmodel_dir = "{models}"'
    node.values["cameras"] = f'[[cameras]]\nname = "gate"\nsource = "{media_dir / "vtest.avi"}"'
    with open(models / "nanodet.onnx", "r+b") as model:
        model.seek(4096)
        model.write(b"\xff" * 8)
    rc, found = doctor(node)
    assert_fails(rc, found, "model", "model_altered")
    (models / "nanodet.onnx").unlink()
    rc, found = doctor(node)
    assert_fails(rc, found, "model", "model_missing")


def test_unwritable_state_dir_fails(node: Node) -> None:
    occupied = node.dir / "occupied"
    occupied.write_text("a file where the state directory should be")
    node.values["paths"] = f'state_dir = "{occupied}"'
    rc, found = doctor(node)
    assert_fails(rc, found, "state", "state_unwritable")


def test_camera_that_does_not_open_fails(node: Node) -> None:
    node.values["cameras"] = f'[[cameras]]\nname = "gone"\nsource = "{node.dir / "gone.mp4"}"'
    rc, found = doctor(node)
    line = assert_fails(rc, found, "camera:gone", "camera_failed")
    assert "gone.mp4" in line["message"]


def test_sensor_that_does_not_answer_fails(node: Node) -> None:
    node.values["sensors"] = (
        '[[sensors]]\nkind = "modbus"\nname = "weather"\ntransport = "tcp"\n'
        f'host = "127.0.0.1"\nport = {free_port()}\ntimeout_s = 2\n'
        'registers = [{ quantity = "temperature", unit = "Cel", address = 0 }]'
    )
    rc, found = doctor(node)
    assert_fails(rc, found, "sensor:weather", "sensor_failed")


def test_clock_far_behind_fails(node: Node) -> None:
    faketime = require_binary("faketime", package="faketime")
    rc, found = doctor(node, prefix=(faketime, "2001-01-01 00:00:00"))
    line = assert_fails(rc, found, "clock", "clock_behind")
    assert line["params"]["now"].startswith("2001-01-01")


def test_clock_outside_the_broker_certificate_fails(
    node: Node, tls_broker: Broker, ca: Authority
) -> None:
    faketime = require_binary("faketime", package="faketime")
    node.broker(tls_broker, ca)
    # The broker's certificate is valid for 7 days: 60 days on, the clock must be wrong.
    rc, found = doctor(node, prefix=(faketime, "-f", "+60d"))
    assert_fails(rc, found, "clock", "clock_outside_certificate")
    assert_fails(rc, found, "tls", "tls_untrusted")


def test_generic_node_id_fails(node: Node) -> None:
    node.values["node"] = 'id = "raspberrypi"\ndistrict = "district"'
    rc, found = doctor(node)
    lines = {line["code"]: line for line in found["node"]}
    assert lines["node_generic"]["status"] == "FAIL" and lines["node_generic"]["fix"]
    assert lines["district_default"]["status"] == "WARN"
    assert rc == 1


def test_status_page_port_taken_by_another_program_or_by_us(node: Node) -> None:
    with socket.create_server(("127.0.0.1", 0)) as other:
        node.values["web"] = f"port = {other.getsockname()[1]}"
        rc, found = doctor(node)
        assert_fails(rc, found, "web", "web_taken")

    port = free_port()
    node.values["web"] = f"port = {port}"
    agent = subprocess.Popen(
        agent_command("run", "--config", str(node.write())),
        env=agent_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:  # the agent's own page answering is the round trip to wait for
            assert agent.poll() is None and time.monotonic() < deadline
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        rc, found = doctor(node)
        assert (only(found, "web")["status"], only(found, "web")["code"]) == ("OK", "web_ours")
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=30)


def test_text_report_in_vietnamese_and_english(node: Node) -> None:
    node.values["mqtt"] = f'host = "127.0.0.1"\nport = {free_port()}\nconnect_timeout_s = 3'
    for lang, fix, words in (("vi", "sửa:", "không tới được"), ("en", "fix:", "cannot reach")):
        result = subprocess.run(
            agent_command("doctor", "--config", str(node.write()), "--lang", lang),
            env=agent_env(mqtt=True),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 1
        lines = result.stdout.splitlines()
        (failed,) = [i for i, line in enumerate(lines) if line.startswith("FAIL")]
        assert words in lines[failed] and lines[failed + 1].strip().startswith(fix)
        assert lines[-1].startswith("1 FAIL")


def test_every_finding_is_documented_in_both_languages() -> None:
    import re
    import string

    from edge_agent.doctor.messages import EN, VI
    from tests.conftest import REPO

    def fields(text: str) -> set[str]:
        return {name for _, name, _, _ in string.Formatter().parse(text) if name}

    documented = set(
        re.findall(r"^\| \S+ \| `([a-z_]+)` \|", (REPO / "docs" / "install.md").read_text(), re.M)
    )
    assert documented == set(EN) == set(VI)
    for code, (message, fix) in EN.items():
        assert fields(VI[code][0]) | fields(VI[code][1]) == fields(message) | fields(fix), code
