"""A real FTP server (pyftpdlib) on a loopback port the test chose, that the test can stop,
start again on the same port, and make cut uploads off; FTPS with a throwaway CA."""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

with warnings.catch_warnings():
    # pyftpdlib still imports the standard library's asyncore and asynchat (deprecated
    # since 3.6, warning in 3.11); only this test server uses them, not the agent.
    warnings.filterwarnings("ignore", "The async(ore|hat) module", DeprecationWarning)
    from pyftpdlib.authorizers import DummyAuthorizer
    from pyftpdlib.handlers import DTPHandler, FTPHandler, TLS_FTPHandler
    from pyftpdlib.ioloop import IOLoop
    from pyftpdlib.servers import FTPServer

from tests.conftest import free_port, wait_for_port
from tests.sync.pki import Authority

USER, PASSWORD = "station", "s3cret"


class CutOff:
    """How many of the next uploads the server cuts off after half their bytes."""

    def __init__(self) -> None:
        self.remaining = 0
        self.lock = threading.Lock()

    def take(self) -> bool:
        with self.lock:
            if self.remaining <= 0:
                return False
            self.remaining -= 1
            return True


def _dtp_handler(cutoff: CutOff) -> type[DTPHandler]:
    class CuttingDTP(DTPHandler):  # type: ignore[misc]
        def handle_read(self) -> None:
            if self.receive and cutoff.take():
                chunk = self.recv(self.ac_in_buffer_size)
                # half the bytes reach the disk, then the link drops: data and control
                self.file_obj.write(chunk[: len(chunk) // 2])
                self.file_obj.flush()
                channel = self.cmd_channel
                self.close()
                channel.close()
                return
            super().handle_read()

        handle_read_event = handle_read  # the base class aliases it the same way

    return CuttingDTP


@dataclass
class FtpServer:
    root: Path
    port: int = field(default_factory=free_port)
    tls: tuple[Path, Path] | None = None
    cutoff: CutOff = field(default_factory=CutOff)
    _thread: threading.Thread | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        # pyftpdlib logs every command at INFO (and a start line per loop turn); keep the
        # test output to what matters.
        logging.getLogger("pyftpdlib").setLevel(logging.WARNING)
        authorizer = DummyAuthorizer()
        authorizer.add_user(USER, PASSWORD, str(self.root), perm="elradfmwMT")
        base: Any = TLS_FTPHandler if self.tls else FTPHandler
        attrs: dict[str, Any] = {"authorizer": authorizer, "banner": "test station server"}
        if not self.tls:
            attrs["dtp_handler"] = _dtp_handler(self.cutoff)
        else:
            attrs |= {
                "certfile": str(self.tls[0]),
                "keyfile": str(self.tls[1]),
                "tls_control_required": True,
                "tls_data_required": True,
            }
        handler = type("Handler", (base,), attrs)
        ioloop = IOLoop()
        server = FTPServer(("127.0.0.1", self.port), handler, ioloop=ioloop)
        self._stop.clear()

        def serve() -> None:
            try:
                while not self._stop.is_set():
                    server.serve_forever(timeout=0.05, blocking=False, handle_exit=False)
            finally:
                server.close_all()

        self._thread = threading.Thread(target=serve, name="ftp-server", daemon=True)
        self._thread.start()
        wait_for_port(self.port)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def files(self) -> dict[str, bytes]:
        """Every file on the server, by path relative to its root."""
        return {
            p.relative_to(self.root).as_posix(): p.read_bytes()
            for p in sorted(self.root.rglob("*"))
            if p.is_file()
        }


@pytest.fixture
def ftp_server(tmp_path: Path) -> Iterator[FtpServer]:
    root = tmp_path / "ftp-root"
    root.mkdir()
    server = FtpServer(root)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def ftps_server(tmp_path: Path) -> Iterator[tuple[FtpServer, Path]]:
    root = tmp_path / "ftps-root"
    root.mkdir()
    ca = Authority(tmp_path / "pki")
    server = FtpServer(root, tls=ca.issue("localhost", server=True))
    server.start()
    yield server, ca.ca_file
    server.stop()
