"""A slow, lossy link and a wall clock that jumps: everything still arrives, in-flight stays
within its window, no reconnect storm, and `ts` says what the wall clock said."""

from __future__ import annotations

import json
import re
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import agent_env, require_binary
from tests.faults.harness import Node, Receiver, report, scale, settle, wait_until
from tests.faults.proxy import FaultProxy

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.timeout(scale(900, 7200))]

FAKETIME_LIB = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
DAY = 86400.0


def inflight(node: Node) -> int:
    """Publishes in flight, as the node's status API says."""
    url = f"http://127.0.0.1:{node.web_port}/api/status"
    with urllib.request.urlopen(url, timeout=30) as answer:
        status = json.loads(answer.read())
    return int(status["sync"].get("inflight") or 0)


def test_a_slow_lossy_link_delivers_everything_within_the_window(
    make_node: Callable[..., Node], receiver: Receiver, proxy: FaultProxy
) -> None:
    """256 kbit/s, 150 ms one way, one chunk in 20 stalling half a second (a lost segment's
    retransmission), and every connection reset every 20 s."""
    node = make_node()
    node.start()
    wait_until(lambda: node.committed() > 50, "traffic")
    resets_every = 20.0
    proxy.set(rate_bps=32_000, delay_s=0.15, loss=0.05, stall_s=0.5, reset_every_s=resets_every)
    up_before, connects_before = proxy.counters.bytes_up, proxy.counters.connections
    stored_before = sum(len(s) for s in receiver.keys(node.name).values())
    largest_inflight = 0
    deadline = time.monotonic() + scale(60, 600)
    while time.monotonic() < deadline:
        largest_inflight = max(largest_inflight, inflight(node))
        time.sleep(0.5)
    resets = proxy.counters.resets
    proxy.heal()
    acc = settle(node, receiver)
    receiver.stop()
    wire = proxy.counters.bytes_up - up_before
    events = acc.stored - stored_before
    connects = proxy.counters.connections - connects_before
    # In flight never above the configured window (20 publishes by default).
    assert largest_inflight <= 20
    # No storm: one new connection per reset, plus the odd one a reset caught mid-handshake.
    assert connects <= 2 * resets + 3, (connects, resets)
    report(
        "slow-lossy-link",
        rate_kbit_s=256,
        delay_ms=150,
        stall_share=0.05,
        resets=resets,
        connects=connects,
        largest_inflight=largest_inflight,
        committed=acc.sent,
        stored=acc.stored,
        missing=0,
        wire_bytes_per_event=round(wire / max(events, 1), 1),
    )


def test_wall_clock_jumps_a_day_each_way_without_a_storm_or_reordering(
    make_node: Callable[..., Node], receiver: Receiver, tmp_path: Path
) -> None:
    """libfaketime moves the agent's wall clock (CLOCK_REALTIME) a day ahead, then a day
    back, while its monotonic clock runs on: timers keep time, seqs keep their order, and
    each event's `ts` is what the node's wall clock said when it was observed."""
    require_binary("faketime", package="faketime")
    assert FAKETIME_LIB.exists(), "libfaketime missing: install the Debian package faketime"
    offset = tmp_path / "faketime"
    offset.write_text("+0\n")
    env = agent_env(
        mqtt=True,
        LD_PRELOAD=str(FAKETIME_LIB),
        FAKETIME_TIMESTAMP_FILE=str(offset),
        FAKETIME_NO_CACHE="1",
        FAKETIME_DONT_FAKE_MONOTONIC="1",
        FAKETIME_DONT_RESET="1",
    )
    env.pop("FAKETIME", None)
    node = make_node()
    agent = node.start(env=env)
    wait_until(lambda: node.committed() > 50, "traffic")
    marks = []
    for shift in ("+1d", "+0", "-1d", "+0"):
        before = node.committed()
        offset.write_text(f"{shift}\n")
        marks.append((shift, before))
        wait_until(lambda b=before: node.committed() > b + 100, f"traffic after {shift}")  # type: ignore[misc]
    acc = settle(node, receiver)
    receiver.stop()
    rows = receiver.times(node.name)
    real = time.time()
    ahead = [seq for seq, ts in rows if ts > real + 0.5 * DAY]
    behind = [seq for seq, ts in rows if ts < real - 0.5 * DAY]
    assert ahead and behind, "the events carry the jumped wall clock as their ts"
    # seq follows commit order whatever the wall clock did: the ahead ones come after the
    # first jump, the behind ones after the third.
    assert min(ahead) > marks[0][1] and min(behind) > marks[2][1]
    connects = len(re.findall(r"connected to broker", agent.output))
    assert connects <= 2, agent.output[-3000:]  # timers on the monotonic clock: no storm
    report(
        "clock-jumps",
        jumps="+1d,-1d,-1d,+1d",
        committed=acc.sent,
        stored=acc.stored,
        missing=0,
        connects=connects,
        events_stamped_ahead=len(ahead),
        events_stamped_behind=len(behind),
    )
