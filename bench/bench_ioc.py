"""Provincial receiver benchmark: 300 simulated nodes on one loopback mosquitto.

Light publishers (a few processes, one connection each, each speaking for a third of the
nodes) build their events with our contract code: a birth per node, a live phase of one
reading per node per second and a camera count every ten seconds, then a backlog burst (every
node drains its backlog as zstd batches, as after an outage). Measured in the same run:

- a raw paho subscriber that only counts messages: the baseline event rate;
- 1 and 2 receivers (`edge-agent ioc receive` processes, a shared subscription for 2) into
  SQLite and into PostgreSQL: events/s stored during the burst, as a ratio to the baseline;
- the CPU each process used per 1,000 events (receivers, mosquitto, publishers, PostgreSQL);
- a cProfile of the receiver's own path (intake and store) replaying the burst in one thread,
  to name where its time goes.

Usage: python bench/bench_ioc.py [--nodes 300] [--backlog 2000] [--batch 500] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import gc
import multiprocessing as mp
import os
import pstats
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psutil
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from edge_agent.contract import Envelope, encode_batch, reading_data, utc_iso  # noqa: E402

PREFIX = "ioc/v1"
PUBLISHERS = 3


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing on port {port}")


@contextlib.contextmanager
def mosquitto(directory: Path) -> Iterator[tuple[int, psutil.Process]]:
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    port = free_port()
    conf = directory / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\n"
        "persistence false\nmax_queued_messages 0\nmax_inflight_messages 0\n"
        "message_size_limit 0\n"
    )
    process = subprocess.Popen([binary, "-c", str(conf)], stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        yield port, psutil.Process(process.pid)
    finally:
        process.terminate()
        process.wait()


@contextlib.contextmanager
def postgres() -> Iterator[tuple[str, psutil.Process]]:
    """A private cluster as the unprivileged postgres user, default durability settings."""
    bindir = sorted(Path("/usr/lib/postgresql").glob("*/bin"))[-1]
    directory = Path(tempfile.mkdtemp(prefix="bench-ioc-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        account = pwd.getpwnam("postgres")
        os.chown(directory, account.pw_uid, account.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data = directory / "data"
    subprocess.run(
        [
            *as_user,
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "--auth=trust",
            "--no-locale",
            "-E",
            "UTF8",
        ],
        check=True,
        capture_output=True,
    )
    port = free_port()
    process = subprocess.Popen(
        [
            *as_user,
            str(bindir / "postgres"),
            "-D",
            str(data),
            "-p",
            str(port),
            "-k",
            str(directory),
            "-c",
            "listen_addresses=127.0.0.1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port)
        time.sleep(1.0)
        yield f"host=127.0.0.1 port={port} user=postgres", psutil.Process(process.pid)
    finally:
        process.terminate()
        process.wait()
        shutil.rmtree(directory, ignore_errors=True)


def create_database(base_dsn: str, name: str) -> str:
    import psycopg

    for _ in range(50):
        try:
            with psycopg.connect(base_dsn + " dbname=postgres", autocommit=True) as conn:
                conn.execute(f"CREATE DATABASE {name}")
            return f"{base_dsn} dbname={name}"
        except psycopg.OperationalError:
            time.sleep(0.2)
    raise RuntimeError("PostgreSQL did not start")


# -- the light nodes ------------------------------------------------------------------


def node_names(count: int) -> list[str]:
    return [f"node-{i:03d}" for i in range(count)]


def reading(node: str, epoch: str, seq: int, ts: float) -> bytes:
    data = reading_data(
        sensor="aq-1",
        quantity="pm2_5",
        value=float(seq % 80) + 0.5,
        unit="ug/m3",
        stats={"min": 1.0, "mean": 2.0, "max": 3.0, "count": 12, "bad": 0, "window_s": 60},
    )
    return Envelope(node, epoch, seq, ts, "reading", data).encode()


def count_event(node: str, epoch: str, seq: int, ts: float) -> bytes:
    data = {
        "camera": "gate",
        "zone": "road",
        "from": utc_iso(ts - 10),
        "to": utc_iso(ts),
        "interval_s": 10,
        "objects": {"car": seq % 7, "person": seq % 3},
        "entries": {"car": seq % 5, "person": seq % 2},
    }
    return Envelope(node, epoch, seq, ts, "count", data).encode()


def publisher(
    index: int,
    port: int,
    nodes: list[str],
    live_s: int,
    backlog: int,
    batch: int,
    ready: Any,
    go_live: Any,
    go_burst: Any,
    results: Any,
) -> None:
    """One process speaking for `nodes` over one connection (paho, QoS 1)."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"bench-pub-{index}",
        protocol=MQTTProtocolVersion.MQTTv5,
    )
    client.max_inflight_messages_set(100)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    epoch = f"e{index:015d}"
    seq = dict.fromkeys(nodes, 0)
    for node in nodes:
        birth = {
            "v": 1,
            "node": node,
            "district": f"d{index}",
            "state": "online",
            "ts": utc_iso(time.time()),
            "version": "bench",
            "epoch": epoch,
            "pending_rows": backlog,
        }
        import json

        client.publish(f"{PREFIX}/d{index}/{node}/status", json.dumps(birth), qos=1, retain=True)
    start = time.time() - 86400
    backlogs = {
        node: [reading(node, epoch, s, start + s) for s in range(1, backlog + 1)] for node in nodes
    }
    ready.set()
    go_live.wait()
    infos = []
    live_events = 0
    for second in range(live_s):
        tick = time.monotonic()
        for node in nodes:
            seq[node] += 1
            topic = f"{PREFIX}/d{index}/{node}/data"
            if second % 10 == 9:
                payload, stream = count_event(node, epoch, seq[node] + backlog, time.time()), "gate"
            else:
                payload, stream = reading(node, epoch, seq[node] + backlog, time.time()), "aq-1"
            infos.append(client.publish(f"{topic}/{stream}", payload, qos=1))
            live_events += 1
        time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
    for info in infos:
        info.wait_for_publish()
    go_burst.wait()
    burst_cpu = time.process_time()
    infos = []
    messages = 0
    for offset in range(0, backlog, batch):
        for node in nodes:
            payload = encode_batch(backlogs[node][offset : offset + batch], compress=True)
            infos.append(client.publish(f"{PREFIX}/d{index}/{node}/data/batch", payload, qos=1))
            messages += 1
    for info in infos:
        info.wait_for_publish()
    results.put((index, live_events, messages, time.process_time() - burst_cpu))
    client.loop_stop()
    client.disconnect()


# -- subscribers ----------------------------------------------------------------------


def raw_subscriber(port: int, expected: int, ready: Any, results: Any) -> None:
    """The baseline: paho, QoS 1, counting messages and nothing else."""
    received = 0
    done = threading.Event()

    def on_message(client: Any, userdata: Any, message: Any) -> None:
        nonlocal received
        if message.topic.endswith("/data/batch"):
            received += 1
            if received == expected:
                results.put(("raw", time.monotonic(), time.process_time()))
                done.set()

    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id="bench-raw", protocol=MQTTProtocolVersion.MQTTv5
    )
    client.on_message = on_message
    client.connect("127.0.0.1", port)
    client.subscribe(f"{PREFIX}/+/+/data/#", qos=1)
    client.loop_start()
    time.sleep(0.5)
    ready.set()
    done.wait()
    client.loop_stop()
    client.disconnect()


def scrape(port: int) -> dict[str, float]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def start_receiver(
    port: int, name: str, store: list[str], share: bool, log: Path
) -> tuple[subprocess.Popen[bytes], int]:
    metrics = free_port()
    args = [
        sys.executable,
        "-m",
        "edge_agent",
        "ioc",
        "receive",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--client-id",
        name,
        "--metrics-port",
        str(metrics),
        "--session-expiry",
        "0",
        "--hole-timeout",
        "600",
        "--log-level",
        "WARNING",
        *store,
    ]
    if share:
        args += ["--share-group", "bench"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with log.open("wb") as out:
        process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=out)
    deadline = time.monotonic() + 60
    while scrape(metrics).get("ioc_broker_connected") != 1.0:
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"receiver {name} did not start: {log.read_text()[-2000:]}")
        time.sleep(0.1)
    return process, metrics


def cpu(process: psutil.Process) -> float:
    try:
        times = process.cpu_times()
        total = times.user + times.system
        for child in process.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                t = child.cpu_times()
                total += t.user + t.system
        return float(total)
    except psutil.Error:
        return 0.0


# -- one run --------------------------------------------------------------------------


def run(
    label: str,
    args: argparse.Namespace,
    workdir: Path,
    *,
    receivers: int,
    engine: str | None,
    pg: tuple[str, psutil.Process] | None,
) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    nodes = node_names(args.nodes)
    shares = [nodes[i::PUBLISHERS] for i in range(PUBLISHERS)]
    burst_messages = sum(len(s) for s in shares) * -(-args.backlog // args.batch)
    burst_events = len(nodes) * args.backlog
    directory = Path(tempfile.mkdtemp(dir=workdir, prefix=label.replace(" ", "-")))
    with mosquitto(directory) as (port, broker):
        results = ctx.Queue()  # from the publishers
        raw_results = ctx.Queue()
        procs: list[tuple[subprocess.Popen[bytes], int]] = []
        raw = None
        if engine is None:
            raw_ready = ctx.Event()
            raw = ctx.Process(
                target=raw_subscriber, args=(port, burst_messages, raw_ready, raw_results)
            )
            raw.start()
            raw_ready.wait()
        else:
            store = (
                ["--db", str(directory / "ioc.sqlite3"), "--sqlite-synchronous", "NORMAL"]
                if engine == "sqlite"
                else ["--dsn", create_database(pg[0], f"bench_{time.time_ns()}")]  # type: ignore[index]
            )
            for i in range(receivers):
                procs.append(
                    start_receiver(port, f"r{i}", store, receivers > 1, directory / f"r{i}.log")
                )
        readies = [ctx.Event() for _ in shares]
        go_live, go_burst = ctx.Event(), ctx.Event()
        pubs = [
            ctx.Process(
                target=publisher,
                args=(
                    i,
                    port,
                    share,
                    args.live,
                    args.backlog,
                    args.batch,
                    readies[i],
                    go_live,
                    go_burst,
                    results,
                ),
            )
            for i, share in enumerate(shares)
        ]
        for p in pubs:
            p.start()
        for ready in readies:  # every publisher connected and encoded its backlog
            ready.wait()
        watched = [broker] + [psutil.Process(p.pid) for p, _ in procs]
        if pg is not None and engine == "postgres":
            watched.append(pg[1])
        go_live.set()
        time.sleep(args.live + 0.5)
        live_stored = sum(scrape(m).get("ioc_events_stored_total", 0) for _, m in procs)
        before = [cpu(w) for w in watched]
        t0 = time.monotonic()
        go_burst.set()
        expected = len(nodes) * args.live + burst_events
        end = None
        raw_cpu = 0.0
        if raw is not None:
            _, end, raw_cpu = raw_results.get(timeout=3600)
        else:
            deadline = time.monotonic() + args.timeout
            while True:
                stored = sum(scrape(m).get("ioc_events_stored_total", 0) for _, m in procs)
                if stored >= expected:
                    end = time.monotonic()
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{label}: {stored:.0f} of {expected} events stored")
                time.sleep(0.05)
        elapsed = end - t0
        after = [cpu(w) for w in watched]
        pub_cpu = 0.0
        for _ in pubs:
            pub_cpu += results.get(timeout=600)[3]
        for p in pubs:
            p.join()
        if raw is not None:
            raw.join()
        split = [scrape(m).get("ioc_events_stored_total", 0) for _, m in procs]
        commits = [scrape(m).get("ioc_commit_seconds_count", 0) for _, m in procs]
        for process, _ in procs:
            process.terminate()
            process.wait()
    spent = [b - a for a, b in zip(before, after, strict=True)]
    figures = {
        "label": label,
        "events": burst_events,
        "messages": burst_messages,
        "seconds": elapsed,
        "rate": burst_events / elapsed,
        "broker_ms": 1000 * spent[0] / burst_events * 1000,
        "publishers_ms": 1000 * pub_cpu / burst_events * 1000,
        "receivers_ms": 1000 * sum(spent[1 : 1 + len(procs)]) / burst_events * 1000,
        "postgres_ms": 1000 * spent[-1] / burst_events * 1000 if engine == "postgres" else None,
        "raw_ms": 1000 * raw_cpu / burst_events * 1000 if raw is not None else None,
        "live_stored": live_stored,
        "live_offered": len(nodes) * args.live,
        "split": split,
        "commits": sum(commits),
    }
    shutil.rmtree(directory, ignore_errors=True)
    return figures


def profile(args: argparse.Namespace, workdir: Path) -> None:
    """The receiver's own path (intake, then one store write per group of 100 messages) in
    one thread under cProfile, over the same burst as the broker runs."""
    from edge_agent.ioc.intake import DataMessage, Intake
    from edge_agent.ioc.sqlite_store import SqliteStore

    intake = Intake(PREFIX)
    store = SqliteStore(workdir / "profile.sqlite3", synchronous="NORMAL")
    gc.set_threshold(100_000, 50, 100)  # as `ioc receive` sets it
    nodes = node_names(min(args.nodes, 60))
    payloads = []
    start = time.time() - 86400
    for node in nodes:
        events = [reading(node, "e1", s, start + s) for s in range(1, args.backlog + 1)]
        for offset in range(0, args.backlog, args.batch):
            payloads.append(
                (
                    f"{PREFIX}/d1/{node}/data/batch",
                    encode_batch(events[offset : offset + args.batch], compress=True),
                )
            )
    profiler = cProfile.Profile()
    t0 = time.process_time()
    profiler.enable()
    for i in range(0, len(payloads), 100):
        group = [intake.parse(topic, payload) for topic, payload in payloads[i : i + 100]]
        store.write([g for g in group if isinstance(g, DataMessage)], [], time.time())
    profiler.disable()
    spent = time.process_time() - t0
    store.close()
    events = len(nodes) * args.backlog
    print(
        f"\nprofile: the receiver's path alone, {events} events, one thread:"
        f" {1e6 * spent / events:.1f} µs CPU per event (cProfile adds its own cost)"
    )
    stats = pstats.Stats(profiler)
    rows = []
    for (filename, _line, name), (_cc, _nc, tottime, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        where = Path(filename).name if filename != "~" else ""
        rows.append((tottime, f"{where}:{name}" if where else name))
    rows.sort(reverse=True)
    total = sum(t for t, _ in rows)
    for tottime, name in rows[:10]:
        print(f"  {100 * tottime / total:5.1f} %  {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=300, help="simulated nodes")
    parser.add_argument("--backlog", type=int, default=2000, help="backlog events per node")
    parser.add_argument("--batch", type=int, default=500, help="events per batch message")
    parser.add_argument("--live", type=int, default=10, help="seconds of live events first")
    parser.add_argument(
        "--timeout", type=float, default=600, help="give a run up after this many seconds"
    )
    parser.add_argument("--no-postgres", action="store_true", help="skip the PostgreSQL runs")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.backlog, args.batch, args.live = min(args.backlog, 200), min(args.batch, 100), 2
        args.timeout = min(args.timeout, 120)
    workdir = Path(tempfile.mkdtemp(prefix="bench-ioc-"))
    print(
        f"{args.nodes} nodes in {PUBLISHERS} publisher processes; live {args.live} s"
        f" (1 reading/s per node, a count every 10 s), then a burst of {args.backlog} events"
        f" per node in zstd batches of {args.batch}; {os.cpu_count()} CPUs (shared machine)"
    )
    try:
        runs = [("raw paho subscriber", 0, None)]
        runs += [("1 receiver, SQLite", 1, "sqlite"), ("2 receivers, SQLite", 2, "sqlite")]
        if not args.no_postgres:
            runs += [
                ("1 receiver, PostgreSQL", 1, "postgres"),
                ("2 receivers, PostgreSQL", 2, "postgres"),
            ]
        with contextlib.ExitStack() as stack:
            pg = None if args.no_postgres else stack.enter_context(postgres())
            results = []
            for label, n, engine in runs:
                print(f"  running: {label}", file=sys.stderr, flush=True)
                results.append(run(label, args, workdir, receivers=n, engine=engine, pg=pg))
        base = results[0]["rate"]
        print(f"\nburst: {results[0]['events']} events in {results[0]['messages']} messages")
        print(
            f"{'':26} {'events/s':>10} {'ratio':>6}   CPU ms per 1,000 events:"
            " receivers (or the raw subscriber) / mosquitto / publishers / postgres"
        )
        for r in results:
            pg_ms = "-" if r["postgres_ms"] is None else f"{r['postgres_ms']:.1f}"
            mine = r["raw_ms"] if r["raw_ms"] is not None else r["receivers_ms"]
            split = (
                ""
                if len(r["split"]) < 2
                else f"   split {'/'.join(f'{s:.0f}' for s in r['split'])}"
            )
            if r["commits"]:
                split += f"   {r['events'] / r['commits']:.0f} events/commit"
            print(
                f"{r['label']:26} {r['rate']:10.0f} {r['rate'] / base:6.2f}"
                f"   {mine:.1f} / {r['broker_ms']:.1f} / {r['publishers_ms']:.1f} / {pg_ms}{split}"
            )
        for r in results[1:]:
            print(
                f"live, {r['label']}: {r['live_stored']:.0f} of {r['live_offered']} events"
                " stored by the end of the live phase"
            )
        profile(args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
