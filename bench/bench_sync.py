"""Sync benchmarks against one private mosquitto, each figure beside a baseline from this run.

1. Live drain, one event per message: events/s of our publisher (outbox → broker, rows
   deleted on PUBACK) against raw paho QoS 1 publishing the same payloads with the same
   in-flight window.
2. Backlog drain with batching: events/s against the raw per-message rate, and bytes on the
   wire per event against single-event JSON.
3. Commit-to-PUBACK latency while live (median, p99) against raw paho publish-to-PUBACK.
4. Recovery: seconds from the broker's return after an outage to the first backlog event
   acked, with the default reconnect settings, against a raw paho client riding out the same
   outage with its own reconnect (loop_start, default delays 1..120 s).

Usage: python bench/bench_sync.py [--events 1000000] [--live-events 20000] [--window 20]
       [--outage 30] [--rounds 3] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge_agent.config import MqttConfig, OutboxConfig
from edge_agent.contract import Kind, reading_data
from edge_agent.health import ComponentHealth
from edge_agent.outbox import Outbox
from edge_agent.sync import Applied, NodeInfo, Sync

NODE, DISTRICT = "bench-node", "d1"
DATA = reading_data(
    sensor="aq-1",
    quantity="pm2_5",
    value=35.2,
    unit="ug/m3",
    stats={"min": 30.1, "max": 40.2, "mean": 35.2, "n": 12, "stddev": 2.25, "p95": 39.87},
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Mosquitto:
    """A private mosquitto on one port that can be stopped and started again (an outage)."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.port = free_port()
        self.conf = directory / "outage-mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\n"
            "persistence false\nmax_queued_messages 0\nmax_inflight_messages 0\n"
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> float:
        """Start it; returns the perf_counter time its port first accepted a connection."""
        self.process = subprocess.Popen(
            [self.binary, "-c", str(self.conf)], stderr=subprocess.DEVNULL
        )
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), 0.2):
                    return time.perf_counter()
            except OSError:
                time.sleep(0.005)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait()
        self.process = None


@contextlib.contextmanager
def mosquitto(directory: Path) -> Any:
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    port = free_port()
    conf = directory / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\n"
        "persistence false\nmax_queued_messages 0\nmax_inflight_messages 0\n"
        "message_size_limit 0\n"
    )
    process = subprocess.Popen([binary, "-c", str(conf)], stderr=subprocess.DEVNULL)
    for _ in range(200):
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            break
        time.sleep(0.05)
    try:
        yield port
    finally:
        process.terminate()
        process.wait()


class NoCommands:
    def status(self) -> dict[str, Any]:
        return {}

    def config_get(self) -> dict[str, Any]:
        return {}

    async def config_set(self, changes: dict[str, Any]) -> Applied:
        raise ValueError("not in a benchmark")

    async def snapshot(self, camera: str) -> bytes:
        raise LookupError(camera)

    async def outbox_stats(self) -> dict[str, Any]:
        return {}


class TimedOutbox:
    """The real outbox, noting when each seq was committed and when its PUBACK came."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        self.committed: dict[int, float] = {}
        self.acked: dict[int, float] = {}

    @property
    def epoch(self) -> str:
        return self.outbox.epoch

    async def put(self) -> None:
        seq = await self.outbox.put(Kind.READING, DATA, stream="aq-1")
        self.committed[seq] = time.perf_counter()

    async def claim(self, limit: int) -> Sequence[Any]:
        return await self.outbox.claim(limit)

    async def ack(self, seqs: Sequence[int]) -> None:
        now = time.perf_counter()
        for seq in seqs:
            self.acked[seq] = now
        await self.outbox.ack(seqs)

    def release(self, seqs: Sequence[int] | None = None) -> None:
        self.outbox.release(seqs)

    async def wait_for_rows(self, timeout: float | None = None) -> None:
        await self.outbox.wait_for_rows(timeout)

    def stats(self) -> dict[str, Any]:
        return self.outbox.stats()


@contextlib.asynccontextmanager
async def open_outbox(directory: Path) -> AsyncIterator[Outbox]:
    outbox = Outbox(
        directory / "outbox.sqlite3",
        node=NODE,
        config=OutboxConfig(synchronous="NORMAL"),
        health=ComponentHealth("outbox"),
    )
    async with outbox:
        yield outbox


def varied(i: int) -> dict[str, Any]:
    """Readings that change like real ones do (compression must not feed on copies)."""
    rng = random.Random(i)
    mean = round(rng.uniform(5, 120), 1)
    return reading_data(
        sensor=f"aq-{i % 4 + 1}",
        quantity=("pm2_5", "pm10", "temperature", "humidity")[i % 4],
        value=round(mean + rng.gauss(0, 3), 2),
        unit=("ug/m3", "ug/m3", "Cel", "%")[i % 4],
        stats={
            "min": round(mean - rng.uniform(0, 8), 2),
            "max": round(mean + rng.uniform(0, 8), 2),
            "mean": mean,
            "n": rng.randint(6, 12),
            "stddev": round(rng.uniform(0.1, 4), 3),
        },
    )


async def fill(outbox: Outbox, count: int, *, chunk: int = 500) -> None:
    """Write `count` varied readings: put_many in chunks, as a burst of readings arrives."""
    for start in range(0, count, chunk):
        await outbox.put_many(
            (Kind.READING, varied(i), f"aq-{i % 4 + 1}", None, None)
            for i in range(start, min(count, start + chunk))
        )


@contextlib.asynccontextmanager
async def running(outbox: Any, port: int, **config: Any) -> AsyncIterator[Sync]:
    values: dict[str, Any] = {
        "rate_messages_per_s": 0,
        "rate_bytes_per_s": 0,
        "backoff_min_s": 0.05,
    }
    values.update(config)
    settings = MqttConfig(host="127.0.0.1", port=port, **values)
    sync = Sync(
        settings,
        node=NodeInfo(NODE, DISTRICT, "bench", "bench"),
        outbox=outbox,
        handlers=NoCommands(),
        health=ComponentHealth("sync"),
    )
    async with sync:
        task = asyncio.create_task(sync.run())
        try:
            yield sync
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def until(check: Any, period_s: float = 0.002) -> None:
    """Poll a condition; the benchmark must not add callbacks to the path it measures."""
    while not check():  # noqa: ASYNC110
        await asyncio.sleep(period_s)


async def drain(
    outbox: Outbox, port: int, total: int, **config: Any
) -> tuple[float, dict[str, int]]:
    """Seconds from connect to an empty outbox, and the publisher's counters."""
    async with running(outbox, port, **config) as sync:
        await until(lambda: sync.link is not None)
        start = time.perf_counter()
        # The health counter, not outbox.stats(): a COUNT(*) scan on the loop would be
        # the benchmark measuring itself.
        await until(lambda: sync.publisher_health.counters.get("acked", 0) >= total)
        elapsed = time.perf_counter() - start
        assert outbox.stats()["pending_rows"] == 0
        assert sync.publisher is not None
        return elapsed, dict(sync.publisher.stats)


def raw_paho(port: int, payloads: list[bytes], window: int, pace_s: float = 0.0) -> Any:
    """Raw paho QoS 1 with a sliding window: (events/s, publish-to-PUBACK latencies)."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id="raw", protocol=MQTTProtocolVersion.MQTTv5
    )
    client.max_inflight_messages_set(window + 16)
    slots = threading.Semaphore(window)
    done = threading.Event()
    sent_at: dict[int, float] = {}
    latencies: list[float] = []
    acked = [0]

    def on_publish(c: Any, u: Any, mid: int, rc: Any, props: Any) -> None:
        latencies.append(time.perf_counter() - sent_at.pop(mid))
        acked[0] += 1
        slots.release()
        if acked[0] == len(payloads):
            done.set()

    client.on_publish = on_publish
    client.connect("127.0.0.1", port)
    client.loop_start()
    time.sleep(0.2)
    topic = f"ioc/v1/{DISTRICT}/{NODE}/data/aq-1"
    start = time.perf_counter()
    for payload in payloads:
        slots.acquire()
        stamp = time.perf_counter()
        info = client.publish(topic, payload, qos=1)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise RuntimeError(f"publish failed: {info.rc}")
        sent_at[info.mid] = stamp
        if pace_s:
            time.sleep(pace_s)
    done.wait()
    elapsed = time.perf_counter() - start
    client.disconnect()
    client.loop_stop()
    return len(payloads) / elapsed, latencies


def raw_recovery_client(port: int) -> tuple[Any, dict[int, float]]:
    """A raw paho client with its own reconnect (loop_start), noting when PUBACKs come."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id="raw-outage", protocol=MQTTProtocolVersion.MQTTv5
    )
    acked: dict[int, float] = {}

    def on_publish(c: Any, u: Any, mid: int, rc: Any, props: Any) -> None:
        acked[mid] = time.perf_counter()

    client.on_publish = on_publish
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client, acked


async def recovery_round(directory: Path, outage_s: float) -> tuple[float, float]:
    """One outage: (ours, raw paho) seconds from broker-up to the first event acked."""
    broker = Mosquitto(directory)
    broker.start()
    try:
        async with open_outbox(directory) as outbox:
            timed = TimedOutbox(outbox)
            # The node's defaults (backoff, token bucket, keepalive), as deployed.
            async with running(
                timed,
                broker.port,
                rate_messages_per_s=200.0,
                rate_bytes_per_s=2_000_000.0,
                backoff_min_s=1.0,
            ) as sync:
                await until(lambda: sync.link is not None)
                raw, raw_acked = raw_recovery_client(broker.port)
                await asyncio.sleep(0.5)
                await asyncio.to_thread(broker.stop)
                await until(lambda: sync.link is None, 0.01)
                first = None
                for _ in range(200):
                    await timed.put()
                    first = first or min(timed.committed)
                raw_mid = raw.publish(f"ioc/v1/{DISTRICT}/raw/data/x", b"queued", qos=1).mid
                await asyncio.sleep(outage_s)
                up = await asyncio.to_thread(broker.start)
                await until(lambda: bool(timed.acked) and raw_mid in raw_acked, 0.005)
                ours = min(timed.acked.values()) - up
                theirs = raw_acked[raw_mid] - up
                raw.disconnect()
                raw.loop_stop()
        return ours, theirs
    finally:
        broker.stop()


def wire_bytes(topic: str, payload_len: int, props_len: int = 0) -> int:
    """Bytes of one QoS 1 PUBLISH on the wire (MQTT 5) plus its 4-byte PUBACK."""
    remaining = 2 + len(topic) + 2 + 1 + props_len + payload_len
    length_bytes = 1 if remaining < 128 else 2 if remaining < 16384 else 3
    return 1 + length_bytes + remaining + 4


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def line(label: str, ours: float, base: float, unit: str, aim: str) -> None:
    print(
        f"  {label:<44} {ours:>12,.1f} {unit:<9} baseline {base:>12,.1f}  ratio {ours / base:6.2f}"
        f"  ({aim})"
    )


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        with mosquitto(tmp_path) as port:
            print(f"mosquitto on 127.0.0.1:{port}, window {args.window}")

            # 1. live drain, one event per message
            async with open_outbox(tmp_path / "live") as outbox:
                await fill(outbox, args.live_events)
                rows = await outbox.claim(args.live_events)
                payloads = [r.payload for r in rows]
                outbox.release()
                raw_rate, _ = await asyncio.to_thread(raw_paho, port, payloads, args.window)
                seconds, _ = await drain(
                    outbox, port, args.live_events, inflight_window=args.window, batch_max_events=1
                )
            ours_rate = args.live_events / seconds
            print("live drain, one event per message:")
            line("events/s (ours vs raw paho QoS 1)", ours_rate, raw_rate, "events/s", "aim >= 0.8")

            # 2. backlog drain with batches
            async with open_outbox(tmp_path / "backlog") as outbox:
                started = time.perf_counter()
                await fill(outbox, args.events)
                print(
                    f"backlog of {args.events:,} events written in "
                    f"{time.perf_counter() - started:.0f} s"
                )
                seconds, stats = await drain(
                    outbox,
                    port,
                    args.events,
                    inflight_window=args.window,
                    compression="zstd",
                    batch_max_events=args.batch,
                    batch_inflight_window=args.batch_window,
                )
            backlog_rate = args.events / seconds
            topic = f"ioc/v1/{DISTRICT}/{NODE}/data/aq-1"
            single = wire_bytes(topic, len(payloads[0]))
            batch_topic = f"ioc/v1/{DISTRICT}/{NODE}/data/batch"
            per_event = (
                sum((wire_bytes(batch_topic, 0, 40),)) * stats["messages"] / stats["events"]
                + stats["bytes"] / stats["events"]
            )
            print(
                f"backlog drain, batches of up to {args.batch}, zstd "
                f"({stats['messages']:,} messages):"
            )
            line(
                "events/s (batched vs raw per-message)",
                backlog_rate,
                raw_rate,
                "events/s",
                "aim >= 10",
            )
            line(
                "wire bytes/event (batched vs single JSON)",
                per_event,
                single,
                "bytes",
                "aim <= 0.25",
            )

            # 3. commit-to-PUBACK latency while live
            async with open_outbox(tmp_path / "latency") as outbox:
                timed = TimedOutbox(outbox)
                async with running(timed, port, inflight_window=args.window) as sync:
                    await until(lambda: sync.link is not None)
                    for _ in range(args.latency_events):
                        await timed.put()
                        await asyncio.sleep(1 / args.latency_rate)
                    await until(lambda: len(timed.acked) >= args.latency_events)
                ours_lat = [(timed.acked[s] - timed.committed[s]) * 1000 for s in timed.committed]
            _, raw_lat = await asyncio.to_thread(
                raw_paho,
                port,
                payloads[: args.latency_events],
                args.window,
                1 / args.latency_rate,
            )
            raw_ms = [v * 1000 for v in raw_lat]
            print(
                f"commit-to-PUBACK latency at {args.latency_rate:.0f} events/s, "
                f"{args.latency_events} events (raw: publish-to-PUBACK):"
            )
            line(
                "median ms",
                statistics.median(ours_lat),
                statistics.median(raw_ms),
                "ms",
                "target well under 100 ms",
            )
            line("p99 ms", pct(ours_lat, 0.99), pct(raw_ms, 0.99), "ms", "")

        # 4. recovery after an outage
        # Outages of varied length (the same ones every run): a backoff without jitter would
        # otherwise look as good or as bad as the outage happens to fit its doubling steps.
        outages = [
            args.outage * (0.6 + 0.8 * random.Random(i).random()) for i in range(args.rounds)
        ]
        ours_s, raw_s = [], []
        for i, outage in enumerate(outages):
            ours, theirs = await recovery_round(tmp_path / f"outage-{i}", outage)
            ours_s.append(ours)
            raw_s.append(theirs)
        print(
            f"broker back -> first backlog event acked, after outages of"
            f" {', '.join(f'{v:.0f}' for v in outages)} s"
            f" (ours: {', '.join(f'{v:.1f}' for v in ours_s)} s;"
            f" raw: {', '.join(f'{v:.1f}' for v in raw_s)} s):"
        )
        line(
            "median s (ours vs raw paho reconnect)",
            statistics.median(ours_s),
            statistics.median(raw_s),
            "s",
            "aim: a few seconds",
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="backlog size")
    parser.add_argument("--live-events", type=int, default=20_000, help="live drain size")
    parser.add_argument("--window", type=int, default=20, help="in-flight window")
    parser.add_argument("--batch", type=int, default=500, help="events per batch message")
    parser.add_argument("--batch-window", type=int, default=4, help="batches in flight")
    parser.add_argument("--latency-events", type=int, default=1000, help="latency samples")
    parser.add_argument("--latency-rate", type=float, default=200.0, help="events/s while live")
    parser.add_argument("--outage", type=float, default=30.0, help="seconds the broker is down")
    parser.add_argument("--rounds", type=int, default=5, help="outages measured")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    args = parser.parse_args()
    if args.quick:
        # Flags given explicitly still win over the quick sizes.
        parser.set_defaults(
            events=20_000, live_events=2_000, latency_events=200, outage=10.0, rounds=3
        )
        args = parser.parse_args()
    asyncio.run(main(args))
