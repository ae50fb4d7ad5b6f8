"""PMS5003 and SDS011 particulate sensors over UART: binary frames, resync, checksums."""

from __future__ import annotations

import struct
import time
from typing import Any

from edge_agent.config.sensors import SerialParticulate
from edge_agent.errors import DependencyMissingError, SensorError
from edge_agent.sensors.base import Sample

BUFFER_LIMIT = 4096


class FrameParser:
    """Finds fixed-size frames in a byte stream; skips garbage, rejects bad checksums."""

    header: bytes = b""
    size: int = 0

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.frames = 0
        self.rejected = 0
        self.skipped_bytes = 0

    def valid(self, frame: bytes) -> bool:
        raise NotImplementedError

    def decode(self, frame: bytes) -> list[Sample]:
        raise NotImplementedError

    def feed(self, data: bytes) -> list[list[Sample]]:
        """Every complete valid frame in the stream so far, oldest first."""
        buf = self._buffer
        buf += data
        out: list[list[Sample]] = []
        while True:
            at = buf.find(self.header)
            if at < 0:
                # keep a trailing partial header: the rest of it may come with the next read
                keep = 1 if buf[-1:] == self.header[:1] else 0
                self.skipped_bytes += len(buf) - keep
                del buf[: len(buf) - keep]
                break
            if at:
                self.skipped_bytes += at
                del buf[:at]
            if len(buf) < self.size:
                break
            frame = bytes(buf[: self.size])
            if not self.valid(frame):
                self.rejected += 1
                del buf[:1]  # resynchronise on the next header after this one
                continue
            del buf[: self.size]
            self.frames += 1
            out.append(self.decode(frame))
        if len(buf) > BUFFER_LIMIT:
            self.skipped_bytes += len(buf) - BUFFER_LIMIT
            del buf[: len(buf) - BUFFER_LIMIT]
        return out


class Pms5003Parser(FrameParser):
    """Plantower PMS5003: 32 bytes, 0x42 0x4D, length 28, 13 data words, 16-bit byte sum."""

    header = b"\x42\x4d"
    size = 32

    def valid(self, frame: bytes) -> bool:
        length, checksum = struct.unpack(">H", frame[2:4])[0], struct.unpack(">H", frame[30:])[0]
        return bool(length == 28 and sum(frame[:30]) & 0xFFFF == checksum)

    def decode(self, frame: bytes) -> list[Sample]:
        words = struct.unpack(">13H", frame[4:30])
        # words 3..5: "atmospheric environment" concentrations, the ones the datasheet
        # recommends for ambient air; 6..11: particle counts per 0.1 L above each size.
        samples = [
            Sample("pm1", float(words[3]), "ug/m3"),
            Sample("pm2_5", float(words[4]), "ug/m3"),
            Sample("pm10", float(words[5]), "ug/m3"),
        ]
        sizes = ("0_3", "0_5", "1_0", "2_5", "5_0", "10")
        samples += [
            Sample(f"particles_{size}um", float(words[6 + i]), "1/dL")
            for i, size in enumerate(sizes)
        ]
        return samples


class Sds011Parser(FrameParser):
    """Nova SDS011: 10 bytes, 0xAA 0xC0, PM2.5 and PM10 in 0.1 ug/m3, byte-sum, tail 0xAB."""

    header = b"\xaa\xc0"
    size = 10

    def valid(self, frame: bytes) -> bool:
        return frame[9] == 0xAB and sum(frame[2:8]) & 0xFF == frame[8]

    def decode(self, frame: bytes) -> list[Sample]:
        pm25, pm10 = struct.unpack("<HH", frame[2:6])
        return [Sample("pm2_5", pm25 / 10.0, "ug/m3"), Sample("pm10", pm10 / 10.0, "ug/m3")]


class SerialFrameDriver:
    """Reads the sensor's active-mode stream and returns the newest valid frame."""

    def __init__(self, config: SerialParticulate, parser: FrameParser) -> None:
        try:
            import serial
        except ImportError as exc:
            raise DependencyMissingError(
                f"sensor {config.name!r} (kind {getattr(config, 'kind', 'serial')}) needs the"
                " Python library pyserial, which is not installed:"
                " pip install 'edge-agent[serial]'"
            ) from exc
        self._serial = serial
        self.config = config
        self.parser = parser
        self._port: Any = None

    def facts(self) -> dict[str, Any]:
        return {
            "frames": self.parser.frames,
            "frames_rejected": self.parser.rejected,
            "bytes_skipped": self.parser.skipped_bytes,
        }

    def _open(self) -> Any:
        if self._port is None:
            try:
                self._port = self._serial.Serial(
                    self.config.device, baudrate=self.config.baudrate, timeout=0.1
                )
            except (self._serial.SerialException, OSError) as exc:
                raise SensorError(f"cannot open {self.config.device}: {exc}") from exc
        return self._port

    def read(self) -> list[Sample]:
        port = self._open()
        # Leave the poller's timeout to the poller: give up a little earlier with a clear reason.
        deadline = time.monotonic() + self.config.timeout_s * 0.8
        latest: list[Sample] | None = None
        try:
            while time.monotonic() < deadline:
                frames = self.parser.feed(port.read(max(1, port.in_waiting)))
                if frames:
                    latest = frames[-1]
                if latest is not None and not port.in_waiting:
                    return latest
        except (self._serial.SerialException, OSError) as exc:
            self.close()
            raise SensorError(f"{self.config.device}: {exc}") from exc
        raise SensorError(
            f"no valid frame from {self.config.device} within"
            f" {self.config.timeout_s * 0.8:.1f} s ({self.parser.rejected} rejected so far)"
        )

    def close(self) -> None:
        port, self._port = self._port, None
        if port is not None:
            port.close()
