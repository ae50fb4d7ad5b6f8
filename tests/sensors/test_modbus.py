"""Modbus TCP and RTU against real pymodbus servers (loopback and a pseudo-terminal pair)."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from edge_agent.config.sensors import ModbusRegister, ModbusSensor
from edge_agent.errors import SensorError
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
        name="mb-tcp",
        transport="tcp",
        host="127.0.0.1",
        port=port,
        unit_id=UNIT,
        registers=REGISTERS,
        **extra,
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
