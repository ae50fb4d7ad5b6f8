"""`edge-agent run` with a broken sensor beside a healthy one: the agent keeps running."""

from __future__ import annotations

import re
import signal
import subprocess
import threading
from pathlib import Path

from tests.conftest import agent_command, agent_env, free_port


def read_until_all(process: subprocess.Popen[str], *patterns: str) -> list[str]:
    """Lines up to the one where every pattern has matched, in any order."""
    assert process.stdout is not None
    pending = list(patterns)
    lines: list[str] = []
    while pending:
        line = process.stdout.readline()
        if not line:
            raise AssertionError(f"no line matching {pending}; got:\n{''.join(lines)}")
        lines.append(line)
        pending = [p for p in pending if not re.search(p, line)]
    return lines


GOOD = "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t=23125\n"


def test_unplugged_sensor_fails_alone_and_recovers_when_plugged_in(tmp_path: Path) -> None:
    w1_slave = tmp_path / "28-0316a2790aff" / "w1_slave"
    fast = "interval_s = 0.1\ntimeout_s = 1.0\nbackoff_max_s = 0.2\nfailing_after = 2\n"
    config = tmp_path / "edge-agent.toml"
    config.write_text(
        f'[paths]\nstate_dir = "{tmp_path / "state"}"\n[web]\nenabled = false\n'
        f'[[sensors]]\nkind = "simulated"\nname = "sim"\n{fast}'
        f'[[sensors]]\nkind = "w1_therm"\nname = "water-temp"\npath = "{w1_slave}"\n{fast}'
        f'[[sensors]]\nkind = "http_json"\nname = "gone"\n{fast}'
        f'url = "http://127.0.0.1:{free_port()}/x"\n'
        'values = [{pointer = "/t", quantity = "temperature", unit = "Cel"}]\n'
    )
    agent = subprocess.Popen(
        agent_command("run", "--config", str(config)),
        env=agent_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    # a blocked readline cannot time out: end the agent if the test stalls
    stall_guard = threading.Timer(60, agent.kill)
    stall_guard.start()
    try:
        read_until_all(
            agent,
            r"sensor sim: ok",
            r"sensor water-temp: failing .*does not exist",
            r"sensor gone: failing .*(refused|connect)",
        )
        w1_slave.parent.mkdir()
        w1_slave.write_text(GOOD)
        read_until_all(agent, r"sensor water-temp: ok")
        agent.send_signal(signal.SIGTERM)
        output, _ = agent.communicate(timeout=15)
    finally:
        stall_guard.cancel()
        agent.kill()
    assert agent.returncode == 0, output
    assert "closed sensor:water-temp" in output
