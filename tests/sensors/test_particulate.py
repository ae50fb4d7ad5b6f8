"""PMS5003 and SDS011 over a pseudo-terminal fed with frames built from the datasheet layout."""

from __future__ import annotations

import struct

import pytest

from edge_agent.config.sensors import Pms5003Sensor, Sds011Sensor
from edge_agent.errors import SensorError
from edge_agent.health import ComponentHealth, State
from edge_agent.sensors.base import Poller
from edge_agent.sensors.particulate import Pms5003Parser, Sds011Parser
from edge_agent.sensors.registry import build_driver

from .conftest import Pty, Recorder, running, wait_state


def pms_frame(
    pm1: int, pm25: int, pm10: int, counts: tuple[int, ...] = (900, 300, 80, 10, 3, 1)
) -> bytes:
    """PMS5003 datasheet: 0x42 0x4D, frame length 2*13+2, 13 data words, sum of bytes."""
    data = (pm1 + 1, pm25 + 2, pm10 + 3, pm1, pm25, pm10, *counts, 0)
    body = b"\x42\x4d" + struct.pack(">H13H", 28, *data)
    return body + struct.pack(">H", sum(body) & 0xFFFF)


def sds_frame(pm25_tenths: int, pm10_tenths: int, device_id: int = 0xA1B2) -> bytes:
    """SDS011 datasheet: AA C0, PM2.5 lo hi, PM10 lo hi, id (2), checksum of data, AB."""
    data = struct.pack("<HHH", pm25_tenths, pm10_tenths, device_id)
    return b"\xaa\xc0" + data + bytes([sum(data) & 0xFF]) + b"\xab"


def values(samples: list[object]) -> dict[str, float]:
    return {s.quantity: s.value for s in samples}  # type: ignore[attr-defined]


def test_pms_parser_resyncs_after_garbage_partial_frames_and_bad_checksums() -> None:
    parser = Pms5003Parser()
    good = pms_frame(7, 35, 52)
    corrupt = bytearray(pms_frame(1, 2, 3))
    corrupt[10] ^= 0xFF
    stream = b"\x00\xff\x42garbage" + good[:13] + bytes(corrupt) + good + b"\x42"
    out = parser.feed(stream[:20]) + parser.feed(stream[20:])
    # the partial frame swallowed the corrupt frame's start: both rejected, the good one kept
    assert len(out) == 1
    assert values(out[0])["pm2_5"] == 35.0
    assert values(out[0])["pm10"] == 52.0
    assert values(out[0])["particles_0_3um"] == 900.0
    assert parser.rejected >= 1
    assert parser.skipped_bytes > 0
    assert parser.feed(good[1:]) and parser.frames == 2  # trailing 0x42 was kept


def test_sds_parser_rejects_bad_checksum_and_tail() -> None:
    parser = Sds011Parser()
    bad_sum = bytearray(sds_frame(123, 456))
    bad_sum[8] ^= 1
    bad_tail = bytearray(sds_frame(1, 2))
    bad_tail[9] = 0x00
    out = parser.feed(bytes(bad_sum) + b"\xaa\xaa" + bytes(bad_tail) + sds_frame(123, 456))
    assert [values(f) for f in out] == [{"pm2_5": 12.3, "pm10": 45.6}]
    assert parser.rejected == 2


def test_pms5003_over_pty(pty_device: Pty) -> None:
    config = Pms5003Sensor(kind="pms5003", name="pm-1", device=pty_device.path, timeout_s=2.0)
    driver = build_driver(config, state_dir=pty_device.path)  # type: ignore[arg-type]
    try:
        # garbage, a frame cut short by the next one, then a whole frame
        pty_device.play(b"\x13\x37" + pms_frame(5, 20, 30)[:7] + b"junk" + pms_frame(6, 21, 31))
        got = values(driver.read())
        assert (got["pm1"], got["pm2_5"], got["pm10"]) == (6.0, 21.0, 31.0)
        corrupt = bytearray(pms_frame(9, 9, 9))
        corrupt[-1] ^= 0x55
        pty_device.play(bytes(corrupt) + pms_frame(8, 40, 60))
        for _ in range(5):  # frames of the previous cycle may still be waiting
            if values(driver.read())["pm2_5"] == 40.0:
                break
        assert values(driver.read())["pm2_5"] == 40.0
        assert driver.facts()["frames_rejected"] >= 1  # type: ignore[attr-defined]
    finally:
        driver.close()


def test_sds011_over_pty_silence_is_a_clear_error(pty_device: Pty) -> None:
    config = Sds011Sensor(kind="sds011", name="pm-2", device=pty_device.path, timeout_s=0.5)
    driver = build_driver(config, state_dir=pty_device.path)  # type: ignore[arg-type]
    try:
        with pytest.raises(SensorError, match="no valid frame"):
            driver.read()
        pty_device.play(sds_frame(355, 521))
        assert values(driver.read()) == {"pm2_5": 35.5, "pm10": 52.1}
    finally:
        driver.close()


@pytest.mark.asyncio
async def test_poller_fails_on_garbage_and_recovers(pty_device: Pty, recorder: Recorder) -> None:
    config = Sds011Sensor(
        kind="sds011",
        name="pm-3",
        device=pty_device.path,
        interval_s=0.05,
        timeout_s=0.3,
        backoff_max_s=0.1,
        failing_after=2,
    )
    driver = build_driver(config, state_dir=pty_device.path)  # type: ignore[arg-type]
    health = ComponentHealth("sensor:pm-3")
    async with running(Poller(config, driver, sink=recorder, health=health)):
        bad = bytearray(sds_frame(100, 200))
        bad[4] ^= 0x10
        pty_device.play(b"\xaa" * 7 + bytes(bad))
        await wait_state(health, State.FAILING)
        assert "no valid frame" in health.last_error
        assert health.facts["frames_rejected"] >= 1
        pty_device.play(sds_frame(250, 400))
        await wait_state(health, State.OK)
    pm25 = recorder.readings("pm2_5")
    assert pm25 and pm25[-1]["value"] == 25.0 and pm25[-1]["unit"] == "ug/m3"
    assert pm25[-1]["quality"] == "ok"
