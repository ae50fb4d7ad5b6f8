"""Resident memory of the agent: sensors only, one camera, four cameras.

Each figure is printed beside a bare Python interpreter measured in the same run (the floor
any Python agent pays) as a ratio, and sensors-only beside the ThingsBoard gateway's 64.6 MB
from the issue's side-by-side run (bench_peer.py measures that one live).

    .venv/bin/python bench/bench_rss.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
CLIP = REPO / "media" / "vtest.avi"
MIB = 1024 * 1024


def agent_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_AGENT_")}
    env["PYTHONPATH"] = str(REPO)
    env["EDGE_AGENT_MQTT__ENABLED"] = "false"
    return env


def config(state: Path, cameras: int) -> str:
    text = f"""
[paths]
state_dir = "{state}"
model_dir = "{REPO / "models"}"
[web]
port = 0
[[sensors]]
kind = "simulated"
name = "sim-1"
interval_s = 1.0
[[sensors]]
kind = "system"
name = "host"
interval_s = 10.0
"""
    if cameras == 0:
        return "cameras = []\n" + text
    for i in range(cameras):
        text += f"""
[[cameras]]
name = "cam-{i}"
source = "{CLIP}"
fps = 5.0
loop = true
"""
    return text


def rss_of(pid: int) -> int:
    return int(psutil.Process(pid).memory_info().rss)


def readings_committed(db: Path) -> bool:
    if not db.exists():
        return False
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return bool(conn.execute("SELECT 1 FROM events LIMIT 1").fetchone())
    except sqlite3.OperationalError:
        return False
    finally:
        conn.close()


def measure(cameras: int, seconds: float) -> tuple[float, float]:
    """(RSS after `seconds` of running, peak RSS) in MiB."""
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "state"
        path = Path(tmp) / "edge-agent.toml"
        path.write_text(config(state, cameras))
        agent = subprocess.Popen(
            [sys.executable, "-m", "edge_agent", "run", "--config", str(path)],
            env=agent_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 60
            while not readings_committed(state / "outbox.sqlite3"):
                if agent.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"agent with {cameras} cameras did not start")
                time.sleep(0.2)
            peak = 0
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                peak = max(peak, rss_of(agent.pid))
                time.sleep(0.5)
            last = rss_of(agent.pid)
            return last / MIB, max(peak, last) / MIB
        finally:
            agent.terminate()
            agent.wait(timeout=30)


def bare_python() -> float:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        time.sleep(1.0)
        return rss_of(child.pid) / MIB
    finally:
        child.kill()
        child.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="10 s per case instead of 60 s")
    args = parser.parse_args()
    seconds = 10.0 if args.quick else 60.0
    floor = bare_python()
    print(f"bare python interpreter: {floor:.1f} MiB (baseline)")
    cases = [0, 1, 4] if CLIP.exists() else [0]
    if not CLIP.exists():
        print(f"(no {CLIP.relative_to(REPO)}: scripts/fetch-media; camera cases skipped)")
    for cameras in cases:
        last, peak = measure(cameras, seconds)
        what = "sensors only" if cameras == 0 else f"{cameras} camera(s) at 5 fps"
        print(
            f"{what:24s} RSS after {seconds:.0f} s {last:6.1f} MiB (peak {peak:6.1f})"
            f"  {last / floor:5.2f}x bare python"
        )
        if cameras == 0:
            peer = 64.6 * 1e6 / MIB
            print(f"{'':24s} vs ThingsBoard gateway 64.6 MB (issue 10): {last / peer:.2f}x")


if __name__ == "__main__":
    main()
