"""The fault proxy itself: it forwards, cuts with RST, holds a black hole, throttles."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import pytest

from tests.faults.proxy import FaultProxy

pytestmark = pytest.mark.faults


@pytest.fixture
def echo() -> Iterator[int]:
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            threading.Thread(target=pump, args=(conn,), daemon=True).start()

    def pump(conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):  # the proxy resets on purpose
            while data := conn.recv(65536):
                conn.sendall(data)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    server.close()


def roundtrip(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(payload)
        got = b""
        while len(got) < len(payload):
            chunk = sock.recv(65536)
            if not chunk:
                break
            got += chunk
        return got


def test_forwards_and_counts(echo: int) -> None:
    with FaultProxy(echo) as proxy:
        assert roundtrip(proxy.port, b"hello" * 1000) == b"hello" * 1000
        assert proxy.counters.bytes_up == proxy.counters.bytes_down == 5000


def test_cut_resets_live_connections_and_refuses_new_ones(echo: int) -> None:
    with FaultProxy(echo) as proxy:
        live = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
        live.sendall(b"x")
        assert live.recv(1) == b"x"
        proxy.cut()
        with pytest.raises(ConnectionResetError):
            live.sendall(b"y")
            live.recv(1)
        live.close()
        with pytest.raises((ConnectionResetError, ConnectionRefusedError, OSError)):
            roundtrip(proxy.port, b"z")
        proxy.heal()
        assert roundtrip(proxy.port, b"back") == b"back"
        assert proxy.counters.refused >= 1


def test_a_black_hole_holds_bytes_without_a_reset_and_releases_them(echo: int) -> None:
    with FaultProxy(echo) as proxy:
        sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
        with sock:
            proxy.set(blackhole=True)
            sock.sendall(b"held")
            sock.settimeout(0.3)
            with pytest.raises(TimeoutError):  # nothing comes back, and no RST either
                sock.recv(4)
            proxy.heal()
            sock.settimeout(10)
            assert sock.recv(4) == b"held"
        assert proxy.counters.resets == 0


def test_throttle_and_delay_still_deliver_everything(echo: int) -> None:
    with FaultProxy(echo) as proxy, proxy.condition(rate_bps=200_000, delay_s=0.01, loss=0.2):
        payload = bytes(range(256)) * 200
        assert roundtrip(proxy.port, payload) == payload
