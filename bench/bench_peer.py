"""edge-agent beside ThingsBoard IoT Gateway 3.8.5, the nearest peer, on the same job at once.

One Modbus TCP device (20 holding registers that change with every serve), one private
mosquitto, both agents polling the 20 registers every 100 ms and publishing at QoS 1, the
gateway with its SQLite storage. The run goes through four windows, each for both agents at
the same moments: live; SIGKILL (restarted at once, several times); SIGTERM (restarted
after it exits); a broker outage. Then it prints, per figure, edge-agent, the gateway and
the ratio edge-agent/gateway. How the comparison is set up and what counts as produced and
lost: docs/peer.md. Nothing here asserts a time.

The peer is installed on first use into .cache/bench-peer/venv (pinned by sha256 in
bench/peer/requirements.txt, from the package registry only); if it cannot be, or there is
no mosquitto, the benchmark says why and exits 0.

Usage: python bench/bench_peer.py [--quick] [--keep]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.peer import configs
from bench.peer.collector import EDGE, GATEWAY, Collector
from bench.peer.device import WRAP, Device
from bench.peer.figures import (
    AGENTS,
    Loss,
    Window,
    delivered,
    loss,
    loss_row,
    number_row,
    percentile,
    table,
)
from bench.peer.install import PEER_DIR, REPO, Peer, ensure_peer
from bench.peer.procs import Agent
from edge_agent import __version__ as edge_version
from tests.conftest import Broker, agent_command, agent_env, free_port

FULL = {"live_s": 300, "kills": 5, "kill_s": 300, "term_s": 45, "outage_s": 60, "wait_s": 180}
QUICK = {"live_s": 60, "kills": 2, "kill_s": 36, "term_s": 20, "outage_s": 15, "wait_s": 60}
RSS_AFTER_S = 60


class Run:
    def __init__(self, root: Path, peer: Peer, mosquitto: str, settings: dict[str, int]) -> None:
        self.settings = settings
        self.windows: list[Window] = []
        self.stack = contextlib.ExitStack()
        try:
            self._build(root, peer, mosquitto)
        except BaseException:
            self.stack.close()
            raise

    def _build(self, root: Path, peer: Peer, mosquitto: str) -> None:
        (root / "broker").mkdir(parents=True)
        self.broker = Broker(binary=mosquitto, directory=root / "broker", port=free_port())
        self.broker.start()
        self.stack.callback(self.broker.stop)
        self.device = Device({EDGE: free_port(), GATEWAY: free_port()})
        self.stack.callback(self.device.close)
        self.collector = self.stack.enter_context(Collector(self.broker.port))
        edge_toml = configs.edge_config(
            root / "edge", broker_port=self.broker.port, device_port=self.device.ports[EDGE]
        )
        gateway_dir = configs.gateway_config(
            root / "gateway",
            shipped=peer.shipped_config,
            broker_port=self.broker.port,
            device_port=self.device.ports[GATEWAY],
            token="bench-gateway",
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("TB_GW_")}
        # Its update check would call the vendor's server: send it to a closed loopback port.
        nowhere = f"http://127.0.0.1:{free_port()}"
        env.update(TB_GW_CONFIG_DIR=f"{gateway_dir}/", HTTP_PROXY=nowhere, HTTPS_PROXY=nowhere)
        env.pop("NO_PROXY", None)
        self.agents = {
            EDGE: Agent(
                EDGE,
                agent_command("run", "--config", str(edge_toml)),
                env=agent_env(mqtt=True),
                cwd=root / "edge",
            ),
            GATEWAY: Agent(GATEWAY, [str(peer.gateway)], env=env, cwd=root / "gateway"),
        }
        for agent in self.agents.values():
            self.stack.callback(agent.stop, signal.SIGKILL)

    def close(self) -> None:
        self.stack.close()

    def wait(self, seconds: float, until: Callable[[], bool] | None = None) -> bool:
        """Let the run go on, decoding arrivals as they come; True if `until` came true."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.collector.decode()
            for agent in self.agents.values():
                if agent.process is not None and not agent.alive():
                    raise RuntimeError(f"{agent.name} exited by itself:\n{agent.tail()}")
            if until is not None and until():
                return True
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
        return until is not None and until()

    @contextlib.contextmanager
    def window(self, name: str) -> Iterator[Window]:
        window = Window(name, self.device.counts())
        window.cost_start = {a: self.agents[a].cost() for a in AGENTS}
        yield window
        window.end = self.device.counts()
        window.cost_end = {a: self.agents[a].cost() for a in AGENTS}
        self.windows.append(window)

    def restart_all(self, sig: signal.Signals) -> None:
        for agent in self.agents.values():
            agent.restart(sig)

    def arrived_from(self, agent: str) -> bool:
        return any(r.agent == agent for r in self.collector.readings)

    def backlog_after(self, agent: str, up: float) -> float | None:
        arrivals = [
            r.arrived for r in self.collector.readings if r.agent == agent and r.observed < up
        ]
        later = [a for a in arrivals if a >= up]
        return min(later) - up if later else None


def execute(run: Run) -> dict[str, object]:
    s = run.settings
    t0 = time.monotonic()

    def say(text: str) -> None:
        print(f"[{time.monotonic() - t0:4.0f} s] {text}", flush=True)

    say("starting both agents")
    for agent in run.agents.values():
        agent.start()
    if not run.wait(90, lambda: all(run.arrived_from(a) for a in AGENTS)):
        silent = [a for a in AGENTS if not run.arrived_from(a)]
        tails = "\n".join(f"--- {a}:\n{run.agents[a].tail()}" for a in silent)
        raise RuntimeError(f"no reading from {', '.join(silent)} within 90 s\n{tails}")
    facts: dict[str, object] = {}
    say(f"live window, {s['live_s']} s")
    with run.window("live"):
        began = time.time()
        started = max(a.started_at for a in run.agents.values())
        run.wait(started + RSS_AFTER_S - time.time())
        facts["rss"] = {name: agent.rss() for name, agent in run.agents.items()}
        run.wait(began + s["live_s"] - time.time())
    say(f"SIGKILL window: {s['kills']} kills in {s['kill_s']} s")
    with run.window("sigkill"):
        step = s["kill_s"] / (s["kills"] + 1)
        for _ in range(s["kills"]):
            run.wait(step)
            run.restart_all(signal.SIGKILL)
        run.wait(step)
    say("SIGTERM window")
    with run.window("sigterm"):
        run.wait(s["term_s"] / 3)
        run.restart_all(signal.SIGTERM)
        run.wait(s["term_s"] * 2 / 3)
    say(f"outage window: broker down for {s['outage_s']} s")
    with run.window("outage"):
        run.wait(2)
        run.broker.stop()
        run.wait(s["outage_s"])
        run.broker.start()
        up = time.time()
        run.wait(s["wait_s"], lambda: all(run.backlog_after(a, up) is not None for a in AGENTS))
        facts["recovery"] = {a: run.backlog_after(a, up) for a in AGENTS}
        run.wait(10)
    say("draining")
    # Let both deliver what they still hold of the windows' serves (they go on polling, so
    # new readings keep coming): done when none of those arrived for 10 s.
    end = run.windows[-1].end
    seen = 0
    drain_until = time.monotonic() + s["wait_s"]
    quiet_since = time.monotonic()
    while time.monotonic() < drain_until and time.monotonic() - quiet_since < 10:
        run.wait(1)
        fresh = run.collector.readings[seen:]
        seen += len(fresh)
        arrived = sum(1 for r in fresh if r.serve < end[r.agent][r.register])
        if arrived:
            quiet_since = time.monotonic()
    for agent in run.agents.values():
        agent.stop(signal.SIGTERM)
    run.collector.decode()
    say("done")
    return facts


def report(run: Run, facts: dict[str, object], peer: Peer) -> None:
    windows = {w.name: w for w in run.windows}
    readings = run.collector.readings
    live = windows["live"]
    rows = []
    got = {a: delivered(live, readings, a) for a in AGENTS}
    count = {a: len(got[a]) for a in AGENTS}
    cost = {a: live.cost_end[a] - live.cost_start[a] for a in AGENTS}
    rows.append(
        number_row("readings delivered, live window", {a: count[a] for a in AGENTS}, ",.0f")
    )
    rows.append(
        number_row(
            "CPU seconds per 1,000 readings",
            {a: 1000 * cost[a].cpu_s / max(1, count[a]) for a in AGENTS},
            ".3f",
        )
    )
    rss = facts["rss"]
    assert isinstance(rss, dict)
    rows.append(
        number_row(
            f"RSS after {RSS_AFTER_S} s, MB (no camera)", {a: rss[a] / 1e6 for a in AGENTS}, ".1f"
        )
    )
    rows.append(
        number_row(
            "disk bytes written per reading",
            {a: cost[a].write_bytes / max(1, count[a]) for a in AGENTS},
            ",.0f",
        )
    )
    for q, label in ((0.5, "p50"), (0.99, "p99")):
        rows.append(
            number_row(
                f"poll-to-broker latency {label}, ms",
                {
                    a: 1000 * percentile(sorted(r.arrived - r.observed for r in got[a]), q)
                    for a in AGENTS
                },
                ".1f",
            )
        )
    kills = run.settings["kills"]
    for name, label in (
        ("live", "silent loss, live window"),
        ("sigkill", f"lost on SIGKILL x{kills}"),
        ("sigterm", "lost on SIGTERM x1"),
        ("outage", f"lost in a {run.settings['outage_s']} s broker outage"),
    ):
        rows.append(loss_row(label, {a: loss(windows[name], readings, a) for a in AGENTS}))
    rows.append(
        loss_row(
            "lost over the whole run",
            {a: sum((loss(w, readings, a) for w in run.windows), Loss(0, 0)) for a in AGENTS},
        )
    )
    recovery = facts["recovery"]
    assert isinstance(recovery, dict)
    rows.append(
        number_row(
            "broker back -> first backlog reading, s",
            {a: float("nan") if recovery[a] is None else recovery[a] for a in AGENTS},
            ".1f",
        )
    )
    rows.append(
        number_row("duplicates received (dropped by key)", run.collector.duplicates, ",.0f")
    )
    rows.append(
        number_row("same key, other value (overwritten)", run.collector.overwritten, ",.0f")
    )
    print()
    print(table(rows))
    print()
    served = max(max(c) for c in run.device.counts().values())
    notes = [
        f"edge-agent {edge_version} (this checkout); thingsboard-gateway"
        f" {peer.version('thingsboard-gateway')} with pymodbus {peer.version('pymodbus')},"
        " SQLite storage; both poll 20 registers every 100 ms, QoS 1",
        f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at the end"
        " (shared machines give noisy absolute figures: compare the ratios)",
        "loss = readings the device served to the agent in that window that never reached the"
        " broker (deduplicated by key); CPU and disk over the live window, whole process trees",
        f"getSessionLimits answered {run.collector.session_limit_requests} time(s);"
        f" edge-agent gap events {run.collector.gap_events};"
        f" forced kills after SIGTERM: { {a: run.agents[a].forced_kills for a in AGENTS} }",
    ]
    if served >= WRAP:
        notes.append("WARNING: a register was served 65,536 times or more: serves wrapped")
    undecodable = sum(run.collector.undecodable.values())
    if undecodable:
        notes.append(f"undecodable readings: {run.collector.undecodable}")
    for note in notes:
        print(f"  {note}")


def dump(run: Run, root: Path) -> None:
    """With --keep: every reading and window, to see which serves were lost and when."""
    with (root / "readings.csv").open("w") as out:
        out.write("agent,register,serve,observed,arrived\n")
        for r in run.collector.readings:
            out.write(f"{r.agent},{r.register},{r.serve},{r.observed:.3f},{r.arrived:.3f}\n")
    windows = [{"name": w.name, "start": w.start, "end": w.end} for w in run.windows]
    (root / "windows.json").write_text(json.dumps(windows))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short windows, two kills")
    parser.add_argument("--keep", action="store_true", help="keep the run directory")
    args = parser.parse_args()
    mosquitto = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )
    if mosquitto is None:
        print("bench_peer: skipped: mosquitto not found (scripts/setup installs it)")
        return 0
    peer = ensure_peer()
    if isinstance(peer, str):
        print(f"bench_peer: skipped: {peer}")
        return 0
    settings = QUICK if args.quick else FULL
    # On the repository's disk, never a tmpfs: /proc/<pid>/io counts no writes to a tmpfs.
    root = PEER_DIR / "runs" / time.strftime("%Y%m%d-%H%M%S")
    try:
        run = Run(root, peer, mosquitto, settings)
        try:
            report(run, execute(run), peer)
            if args.keep:
                dump(run, root)
        finally:
            run.close()
    except RuntimeError as exc:
        print(f"bench_peer: failed: {exc}", file=sys.stderr)
        return 1
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(f"  run directory: {root.relative_to(REPO)}" if args.keep else "", end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
