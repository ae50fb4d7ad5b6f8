"""Modbus TCP and RTU against real pymodbus servers (loopback and a pseudo-terminal pair)."""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from edge_agent.config.sensors import ModbusRegister, ModbusSensor
from edge_agent.errors import ConfigError, SensorError
from edge_agent.health import ComponentHealth, State
from edge_agent.sensors.base import Poller
from edge_agent.sensors.modbus import plan_requests
from edge_agent.sensors.registry import build_driver

from ..conftest import free_port
from .conftest import PtyLink, Recorder, running, wait_state

UNIT = 7


def words(fmt: str, value: float, *, swap_words: bool = False) -> list[int]:
    """Registers as a device stores them: big-endian bytes, high word first unless swapped."""
    data = struct.pack(fmt, value)
    regs = [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
    return regs[::-1] if swap_words else regs


HOLDING = [
    *words(">h", -1234),  # 0
    *words(">H", 54321),  # 1
    *words(">i", -123456),  # 2-3
    *words(">I", 3_000_000_000, swap_words=True),  # 4-5
    *words(">f", 23.5),  # 6-7
    *words(">f", 1013.25, swap_words=True),  # 8-9
    0x3412,  # 10: 0x1234 stored with its bytes swapped
]
FAR_ADDRESS = 60

REGISTERS = [
    ModbusRegister(quantity="a_int16", unit="1", address=0, type="int16"),
    ModbusRegister(quantity="b_uint16", unit="1", address=1, type="uint16"),
    ModbusRegister(quantity="c_int32", unit="1", address=2, type="int32"),
    ModbusRegister(quantity="d_uint32", unit="1", address=4, type="uint32", word_order="little"),
    ModbusRegister(quantity="temperature", unit="Cel", address=6, type="float32"),
    ModbusRegister(quantity="pressure", unit="hPa", address=8, type="float32", word_order="little"),
    ModbusRegister(quantity="e_bytes", unit="1", address=10, byte_order="little"),
    ModbusRegister(quantity="water_level", unit="m", address=FAR_ADDRESS, scale=0.01, offset=-1.0),
    ModbusRegister(quantity="humidity", unit="%", address=0, function="input", scale=0.1),
    ModbusRegister(quantity="pump_on", unit="1", address=3, function="coil", type="bool"),
    ModbusRegister(quantity="door_open", unit="1", address=1, function="discrete", type="bool"),
]

EXPECTED = {
    "a_int16": -1234.0,
    "b_uint16": 54321.0,
    "c_int32": -123456.0,
    "d_uint32": 3_000_000_000.0,
    "temperature": 23.5,
    "pressure": 1013.25,
    "e_bytes": 0x1234,
    "water_level": 1.5,
    "humidity": 65.5,
    "pump_on": 1.0,
    "door_open": 0.0,
}


def device() -> SimDevice:
    holding = HOLDING + [0] * (FAR_ADDRESS - len(HOLDING)) + [250]
    return SimDevice(
        id=UNIT,
        simdata=(
            [SimData(0, values=[False, False, False, True], datatype=DataType.BITS)],
            [SimData(0, values=[True, False], datatype=DataType.BITS)],
            [SimData(0, values=holding, datatype=DataType.REGISTERS)],
            [SimData(0, values=[655], datatype=DataType.REGISTERS)],
        ),
    )


def values(samples: list[Any]) -> dict[str, float]:
    return {s.quantity: s.value for s in samples}


def test_register_map_is_read_in_few_requests() -> None:
    blocks = plan_requests(REGISTERS, max_gap=8)
    spans = [(b.function, b.start, b.count) for b in blocks]
    assert spans == [
        ("holding", 0, 11),
        ("holding", FAR_ADDRESS, 1),
        ("input", 0, 1),
        ("coil", 3, 1),
        ("discrete", 1, 1),
    ]
    wide = plan_requests(REGISTERS, max_gap=FAR_ADDRESS)
    assert (wide[0].function, wide[0].start, wide[0].count) == ("holding", 0, FAR_ADDRESS + 1)


class TcpDevice:
    """A pymodbus TCP server on a fixed loopback port that the test can stop and restart."""

    def __init__(self) -> None:
        self.port = free_port()
        self.server: ModbusTcpServer | None = None

    async def start(self) -> None:
        self.server = ModbusTcpServer(device(), address=("127.0.0.1", self.port))
        await self.server.serve_forever(background=True)

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.shutdown()
            self.server = None


@pytest_asyncio.fixture
async def tcp_device() -> AsyncIterator[TcpDevice]:
    dev = TcpDevice()
    await dev.start()
    yield dev
    await dev.stop()


def tcp_config(port: int, **extra: Any) -> ModbusSensor:
    return ModbusSensor(
        kind="modbus",
        transport="tcp",
        host="127.0.0.1",
        port=port,
        **{"name": "mb-tcp", "unit_id": UNIT, "registers": REGISTERS} | extra,
    )


@pytest.mark.asyncio
async def test_modbus_tcp_every_type_and_order(tcp_device: TcpDevice, tmp_path: Path) -> None:
    driver = build_driver(tcp_config(tcp_device.port), state_dir=tmp_path)
    try:
        got = values(await asyncio.to_thread(driver.read))
        assert got == pytest.approx(EXPECTED)
        assert driver.facts() == {"requests_per_read": 5, "requests": 5}  # type: ignore[attr-defined]
    finally:
        driver.close()


@pytest.mark.asyncio
async def test_modbus_tcp_wrong_unit_is_a_failed_read(
    tcp_device: TcpDevice, tmp_path: Path
) -> None:
    config = tcp_config(tcp_device.port).model_copy(update={"unit_id": UNIT + 1})
    driver = build_driver(config, state_dir=tmp_path)
    try:
        with pytest.raises(SensorError):
            await asyncio.to_thread(driver.read)
    finally:
        driver.close()


@pytest.mark.asyncio
async def test_modbus_tcp_device_gone_then_back(
    tcp_device: TcpDevice, tmp_path: Path, recorder: Recorder
) -> None:
    config = tcp_config(
        tcp_device.port, interval_s=0.05, timeout_s=1.0, backoff_max_s=0.1, failing_after=2
    )
    health = ComponentHealth("sensor:mb-tcp")
    poller = Poller(config, build_driver(config, state_dir=tmp_path), sink=recorder, health=health)
    async with running(poller):
        await wait_state(health, State.OK)
        await tcp_device.stop()
        await wait_state(health, State.FAILING)
        assert "Modbus" in health.last_error
        failing_since = health.since
        await tcp_device.start()
        await wait_state(health, State.OK)
        assert health.since > failing_since
    temps = recorder.readings("temperature")
    assert temps[-1] == {
        "sensor": "mb-tcp",
        "quantity": "temperature",
        "value": 23.5,
        "unit": "Cel",
        "quality": "ok",
    }
    assert len(recorder.readings("pump_on")) == len(temps)


@pytest.mark.asyncio
async def test_modbus_rtu_over_pty_pair(pty_link: PtyLink, tmp_path: Path) -> None:
    server = ModbusSerialServer(device(), port=pty_link.a.path, baudrate=19200)
    await server.serve_forever(background=True)
    config = ModbusSensor(
        kind="modbus",
        name="mb-rtu",
        transport="rtu",
        device=pty_link.b.path,
        baudrate=19200,
        unit_id=UNIT,
        registers=REGISTERS,
        timeout_s=2.0,
    )
    driver = build_driver(config, state_dir=tmp_path)
    try:
        got = values(await asyncio.to_thread(driver.read))
        assert got == pytest.approx(EXPECTED)
    finally:
        driver.close()
        await server.shutdown()


SILENT = 9


def rtu_config(device: str, name: str, unit: int, **extra: Any) -> ModbusSensor:
    return ModbusSensor(
        kind="modbus",
        name=name,
        transport="rtu",
        device=device,
        unit_id=unit,
        registers=[ModbusRegister(quantity="temperature", unit="Cel", address=6, type="float32")],
        **{
            "baudrate": 19200,
            "interval_s": 0.05,
            "timeout_s": 1.0,
            "backoff_max_s": 0.1,
            "failing_after": 2,
        }
        | extra,
    )


@pytest.mark.asyncio
async def test_rtu_bus_survives_a_silent_unit(pty_link: PtyLink, tmp_path: Path) -> None:
    """Two devices on one RS-485 bus, one of them silent (EdgeX device-modbus #147): the one
    that answers is read every time, the silent one fails on its own."""
    server = ModbusSerialServer(
        device(), port=pty_link.a.path, baudrate=19200, ignore_missing_devices=True
    )
    await server.serve_forever(background=True)
    good_health, silent_health = ComponentHealth("sensor:good"), ComponentHealth("sensor:gone")
    good, silent = Recorder(), Recorder()
    good_cfg = rtu_config(pty_link.b.path, "good", UNIT)
    silent_cfg = rtu_config(pty_link.b.path, "gone", SILENT)
    try:
        good_poller = Poller(
            good_cfg, build_driver(good_cfg, state_dir=tmp_path), sink=good, health=good_health
        )
        silent_poller = Poller(
            silent_cfg,
            build_driver(silent_cfg, state_dir=tmp_path),
            sink=silent,
            health=silent_health,
        )
        async with running(good_poller), running(silent_poller):
            await wait_state(silent_health, State.FAILING)
            await good.wait_for(lambda: len(good.readings("temperature")) >= 60, timeout_s=60)
            await wait_state(silent_health, State.FAILING)
        assert good_health.counters.get("errors", 0) == 0, good_health.last_error
        assert all(r["value"] == 23.5 for r in good.readings("temperature"))
        assert silent.readings() == []
    finally:
        await server.shutdown()


class CountingDevice(TcpDevice):
    """The TCP device, counting the requests it receives (pymodbus's trace_pdu hook)."""

    def __init__(self, *, silent_units: bool = False) -> None:
        super().__init__()
        self.requests = 0
        self.silent_units = silent_units

    def _trace(self, sending: bool, pdu: Any) -> Any:
        if not sending:
            self.requests += 1
        return pdu

    async def start(self) -> None:
        self.server = ModbusTcpServer(
            device(),
            address=("127.0.0.1", self.port),
            trace_pdu=self._trace,
            ignore_missing_devices=self.silent_units,
        )
        await self.server.serve_forever(background=True)


@pytest.mark.asyncio
async def test_max_gap_merging_reduces_requests(tmp_path: Path) -> None:
    # Registers 0, 2, 4, 6, 8 and 60: five runs one register apart, and one far away.
    scattered = [ModbusRegister(quantity=f"r{a}", unit="1", address=a) for a in (0, 2, 4, 6, 8)] + [
        ModbusRegister(quantity="far", unit="1", address=FAR_ADDRESS)
    ]
    server = CountingDevice()
    await server.start()
    try:
        counts = {}
        readings = {}
        for gap in (0, 1, FAR_ADDRESS):
            config = tcp_config(server.port, registers=scattered, max_gap=gap)
            driver = build_driver(config, state_dir=tmp_path)
            before = server.requests
            try:
                readings[gap] = values(await asyncio.to_thread(driver.read))
            finally:
                driver.close()
            counts[gap] = server.requests - before
        assert counts == {0: 6, 1: 2, FAR_ADDRESS: 1}
        assert readings[0] == readings[1] == readings[FAR_ADDRESS]
        assert readings[0]["far"] == 250.0
        assert readings[0]["r2"] == float(HOLDING[2])
    finally:
        await server.stop()


@pytest.mark.asyncio
async def test_tcp_gateway_with_a_silent_unit(tmp_path: Path) -> None:
    """Two units behind one TCP endpoint share one connection; the silent one fails alone."""
    server = CountingDevice(silent_units=True)
    await server.start()
    fast = {"interval_s": 0.05, "timeout_s": 1.0, "backoff_max_s": 0.1, "failing_after": 2}
    good_cfg = tcp_config(server.port, **fast)
    silent_cfg = tcp_config(server.port, **fast).model_copy(
        update={"name": "gone", "unit_id": SILENT}
    )
    good_health, silent_health = ComponentHealth("sensor:good"), ComponentHealth("sensor:gone")
    good, silent = Recorder(), Recorder()
    try:
        good_poller = Poller(
            good_cfg, build_driver(good_cfg, state_dir=tmp_path), sink=good, health=good_health
        )
        silent_poller = Poller(
            silent_cfg,
            build_driver(silent_cfg, state_dir=tmp_path),
            sink=silent,
            health=silent_health,
        )
        async with running(good_poller), running(silent_poller):
            await wait_state(silent_health, State.FAILING)
            await good.wait_for(lambda: len(good.readings("temperature")) >= 20)
        assert good_health.counters.get("errors", 0) == 0, good_health.last_error
        assert "unit 9" in silent_health.last_error
        assert silent.readings() == []
    finally:
        await server.stop()


class WrongUnitDevice:
    """A Modbus TCP peer that answers every read with another unit id than asked."""

    def __init__(self) -> None:
        self.port = free_port()
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        try:
            while True:
                header = await reader.readexactly(7)
                tid, _, length, unit = struct.unpack(">HHHB", header)
                pdu = await reader.readexactly(length - 1)
                count = struct.unpack(">H", pdu[3:5])[0]
                body = bytes([pdu[0], 2 * count]) + b"\x00\x01" * count
                writer.write(struct.pack(">HHHB", tid, 0, len(body) + 1, unit + 1) + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def __aenter__(self) -> WrongUnitDevice:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        await self.server.wait_closed()


@pytest.mark.asyncio
async def test_reply_from_the_wrong_unit_is_an_error(tmp_path: Path) -> None:
    async with WrongUnitDevice() as peer:
        config = tcp_config(
            peer.port,
            registers=[ModbusRegister(quantity="x", unit="1", address=0)],
            timeout_s=1.0,
        )
        driver = build_driver(config, state_dir=tmp_path)
        try:
            with pytest.raises(SensorError, match=rf"unit {UNIT}.*reply from unit \[{UNIT + 1}\]"):
                await asyncio.to_thread(driver.read)
        finally:
            driver.close()


STATUS_REGISTERS = [
    ModbusRegister(quantity="cod", unit="mg/L", address=6, type="float32"),
    ModbusRegister(quantity="tss", unit="mg/L", address=1, scale=0.001),
]


def status_device(word: int, coil: bool) -> SimDevice:
    holding = list(HOLDING) + [0] * 10
    holding[12] = word
    return SimDevice(
        id=UNIT,
        simdata=(
            [SimData(0, values=[False, False, False, coil], datatype=DataType.BITS)],
            [SimData(0, values=[False, False], datatype=DataType.BITS)],
            [SimData(0, values=holding, datatype=DataType.REGISTERS)],
            [SimData(0, values=[0], datatype=DataType.REGISTERS)],
        ),
    )


@pytest.mark.parametrize(
    ("word", "coil", "expected"),
    [
        (0, False, {"cod": "normal", "tss": "normal"}),
        (1, False, {"cod": "calibrating", "tss": "normal"}),  # value 1 on the COD analyser
        (0x0100, False, {"cod": "fault", "tss": "fault"}),  # the station's fault bit
        (0, True, {"cod": "normal", "tss": "calibrating"}),  # the TSS probe's cleaning coil
        (0x0101, True, {"cod": "fault", "tss": "fault"}),  # a fault wins over calibration
    ],
)
@pytest.mark.asyncio
async def test_instrument_status_from_register_and_coil(
    tmp_path: Path, word: int, coil: bool, expected: dict[str, str]
) -> None:
    port = free_port()
    server = ModbusTcpServer(status_device(word, coil), address=("127.0.0.1", port))
    await server.serve_forever(background=True)
    config = tcp_config(
        port,
        registers=STATUS_REGISTERS,
        status=[
            {"address": 12, "calibrating": [1], "quantities": ["cod"], "fault_bits": 0x0100},
            {"address": 3, "function": "coil", "calibrating": [1], "quantities": ["tss"]},
            {"address": 12, "fault_bits": 0x0100},
        ],
    )
    driver = build_driver(config, state_dir=tmp_path)
    try:
        samples = await asyncio.to_thread(driver.read)
        assert {s.quantity: s.status for s in samples} == expected
        assert {s.quantity: s.value for s in samples} == pytest.approx({"cod": 23.5, "tss": 54.321})
        assert driver.facts()["requests_per_read"] == 2  # type: ignore[attr-defined]
    finally:
        driver.close()
        await server.shutdown()


@pytest.mark.asyncio
async def test_calibration_is_never_published_as_a_measurement(tmp_path: Path) -> None:
    port = free_port()
    server = ModbusTcpServer(status_device(1, False), address=("127.0.0.1", port))
    await server.serve_forever(background=True)
    config = tcp_config(
        port,
        registers=STATUS_REGISTERS[:1],
        status=[{"address": 12, "calibrating": [1]}],
        interval_s=0.05,
    )
    health = ComponentHealth("sensor:mb-tcp")
    recorder = Recorder()
    poller = Poller(config, build_driver(config, state_dir=tmp_path), sink=recorder, health=health)
    try:
        async with running(poller):
            await recorder.wait_for(lambda: len(recorder.readings("cod")) >= 3)
            # calibration is routine: degraded with its reason, never a failed read
            assert health.state is State.DEGRADED
            assert health.reason is not None
            assert health.reason.code == "instrument_calibrating"
            assert health.counters.get("errors", 0) == 0
        assert recorder.readings("cod")[0] == {
            "sensor": "mb-tcp",
            "quantity": "cod",
            "value": None,
            "unit": "mg/L",
            "quality": "bad",
            "raw": "23.5",
            "status": "calibrating",
        }
    finally:
        await server.shutdown()


def test_one_port_has_one_line_setting(tmp_path: Path) -> None:
    first = rtu_config("/dev/ttyUSB-shared", "a", 1)
    second = rtu_config("/dev/ttyUSB-shared", "b", 2, baudrate=9600)
    driver = build_driver(first, state_dir=tmp_path)
    try:
        with pytest.raises(ConfigError, match=r"sensors\.b: baudrate"):
            build_driver(second, state_dir=tmp_path)
    finally:
        driver.close()
