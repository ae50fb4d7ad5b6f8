"""A node without cameras never loads OpenCV, numpy or onnxruntime (about 100 MB of RSS),
and one without Ed25519 command keys never loads cryptography (about 7 MB)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.conftest import agent_env

# Runs the real agent in a fresh interpreter until its first reading is committed, then
# reports which heavy modules that interpreter holds.
PROBE = textwrap.dedent(
    """
    import asyncio, json, signal, sys
    from pathlib import Path
    from edge_agent.app import run_agent
    from edge_agent.config import load_settings

    async def main():
        settings = load_settings(Path(sys.argv[1]))
        task = asyncio.create_task(run_agent(settings, config_path=Path(sys.argv[1])))
        db = settings.paths.state_dir / "outbox.sqlite3"
        import sqlite3
        while True:
            await asyncio.sleep(0.05)
            if task.done():
                raise SystemExit(f"agent stopped: {task.result()}")
            if not db.exists():
                continue
            try:
                conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
                with conn:
                    query = "SELECT count(*) FROM events WHERE kind='reading'"
                    n = conn.execute(query).fetchone()[0]
                conn.close()
            except sqlite3.OperationalError:
                conn.close()
                continue
            if n:
                break
        heavy = sorted(
            m for m in ("cv2", "numpy", "onnxruntime", "cryptography") if m in sys.modules
        )
        signal.raise_signal(signal.SIGTERM)
        code = await task
        print(json.dumps({"heavy": heavy, "exit": code}))

    asyncio.run(main())
    """
)


def test_a_sensors_only_agent_never_imports_opencv_numpy_or_onnxruntime(tmp_path: Path) -> None:
    config = tmp_path / "edge-agent.toml"
    config.write_text(
        f"""
cameras = []
[paths]
state_dir = "{tmp_path / "state"}"
[web]
port = 0
[[sensors]]
kind = "simulated"
name = "sim-1"
interval_s = 0.2
[[sensors]]
kind = "system"
name = "host"
interval_s = 1.0
"""
    )
    result = subprocess.run(
        [sys.executable, "-c", PROBE, str(config)],
        env=agent_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"heavy": [], "exit": 0}, result.stderr
