"""Camera fixtures: clips cut from the real sample video with Debian's ffmpeg, and a real
RTSP server (GStreamer's, through Debian's python3-gi) serving one of them on loopback."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import IN_CI, free_port, require_binary, stop_process
from tests.inference.conftest import media_dir, model_dir  # noqa: F401  (fixtures)

HERE = Path(__file__).resolve().parent
SYSTEM_PYTHON = "/usr/bin/python3"
RTSP_PACKAGES = "python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good/-bad"


def transcode(source: Path, target: Path, *args: str) -> Path:
    """Encode `source` to H.264 with ffmpeg (extra `args` go before the output)."""
    ffmpeg = require_binary("ffmpeg", package="ffmpeg")
    command = [ffmpeg, "-loglevel", "error", "-y", "-i", str(source), "-an"]
    command += [*args, "-c:v", "libx264", "-preset", "veryfast", "-g", "10"]
    command += ["-pix_fmt", "yuv420p", str(target)]
    subprocess.run(command, check=True, capture_output=True)
    return target


@pytest.fixture(scope="session")
def vtest(media_dir: Path) -> Path:  # noqa: F811
    path = media_dir / "vtest.avi"
    if not path.is_file():
        message = f"{path} missing: run scripts/fetch-media"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def vtest_h264(vtest: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 60 s of vtest.avi as H.264 in MP4, as an IP camera would send it."""
    return transcode(vtest, tmp_path_factory.mktemp("clips") / "vtest.mp4", "-t", "60")


@pytest.fixture(scope="session")
def short_clip(vtest: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three seconds (30 frames) of vtest.avi."""
    return transcode(vtest, tmp_path_factory.mktemp("clips") / "short.mp4", "-frames:v", "30")


def _require_rtsp_server() -> None:
    require_binary("python3", package="python3")
    probe = subprocess.run(
        [
            SYSTEM_PYTHON,
            "-c",
            "import gi; gi.require_version('GstRtspServer', '1.0');"
            "from gi.repository import GstRtspServer",
        ],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        message = f"GStreamer RTSP server unavailable (install {RTSP_PACKAGES}): {probe.stderr}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


@dataclass
class RtspServer:
    """GStreamer's RTSP server serving `clip`; `stop()`/`start()` keep the port."""

    clip: Path
    port: int
    process: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}/stream"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [SYSTEM_PYTHON, str(HERE / "rtsp_server.py"), str(self.clip), str(self.port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if line.strip() != "ready":
            self.process.kill()
            _, err = self.process.communicate()
            raise RuntimeError(f"RTSP server did not start: {line}{err}")

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
        self.process = None


@pytest.fixture
def rtsp_server(vtest_h264: Path) -> Iterator[RtspServer]:
    _require_rtsp_server()
    server = RtspServer(clip=vtest_h264, port=free_port())
    server.start()
    yield server
    server.stop()
