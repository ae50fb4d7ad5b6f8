"""Modbus TCP and RTU via pymodbus: a register map read in as few requests as possible, on a
bus shared by every device behind one serial port or TCP endpoint.

Several sensors may name the same RS-485 port (or the same TCP gateway) with different unit
ids. They share one client and take turns, so a reply is only ever read by the device that
asked: with a client each, a silent unit's late read swallowed its neighbours' answers
(EdgeX device-modbus #147). A reply from another unit id than the one asked is an error.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from edge_agent.config.sensors import ModbusRegister, ModbusSensor, ModbusStatus
from edge_agent.errors import ConfigError, DependencyMissingError, SensorError
from edge_agent.sensors.base import Sample

WIDTH = {"int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "float32": 2, "bool": 1}
FORMAT = {"int16": ">h", "uint16": ">H", "int32": ">i", "uint32": ">I", "float32": ">f"}
# Protocol limits per request (Modbus application protocol spec, 6.1-6.4).
MAX_REGISTERS = 125
MAX_BITS = 2000
NORMAL, CALIBRATING, FAULT = "normal", "calibrating", "fault"


class Addressed(Protocol):
    """What the request plan needs of a register-map entry or a status entry."""

    @property
    def function(self) -> Literal["holding", "input", "coil", "discrete"]: ...

    @property
    def address(self) -> int: ...

    @property
    def type(self) -> str: ...


@dataclass(frozen=True)
class Block:
    """One request: `count` registers (or bits) of one table from `start`."""

    function: str
    start: int
    count: int
    registers: tuple[Addressed, ...]


def plan_requests(registers: Sequence[Addressed], *, max_gap: int) -> list[Block]:
    """Group the entries into as few requests as the protocol limits allow: one per
    contiguous run, and runs at most `max_gap` unused registers (or bits) apart merged."""
    blocks: list[Block] = []
    for function in ("holding", "input", "coil", "discrete"):
        limit = MAX_BITS if function in ("coil", "discrete") else MAX_REGISTERS
        wanted = sorted((r for r in registers if r.function == function), key=lambda r: r.address)
        current: list[Addressed] = []
        start = end = 0
        for reg in wanted:
            reg_end = reg.address + WIDTH[reg.type]
            if current and reg.address <= end + max_gap and max(end, reg_end) - start <= limit:
                current.append(reg)
                end = max(end, reg_end)
                continue
            if current:
                blocks.append(Block(function, start, end - start, tuple(current)))
            current, start, end = [reg], reg.address, reg_end
        if current:
            blocks.append(Block(function, start, end - start, tuple(current)))
    return blocks


def decode(reg: ModbusRegister, words: Sequence[int]) -> float:
    """The scaled value of one register-map entry from its raw 16-bit words."""
    if reg.type == "bool":
        raw: float = 1.0 if words[0] else 0.0
    else:
        ordered = list(words[: WIDTH[reg.type]])
        if reg.word_order == "little":
            ordered.reverse()
        data = b"".join(
            w.to_bytes(2, "big" if reg.byte_order == "big" else "little") for w in ordered
        )
        raw = float(struct.unpack(FORMAT[reg.type], data)[0])
    return raw * reg.scale + reg.offset


def instrument_status(status: ModbusStatus, raw: int) -> str:
    """normal, calibrating or fault from a status word or bit (a fault wins)."""
    if raw in status.fault or raw & status.fault_bits:
        return FAULT
    if raw in status.calibrating or raw & status.calibrating_bits:
        return CALIBRATING
    return NORMAL


_RANK = {NORMAL: 0, CALIBRATING: 1, FAULT: 2}


class _Bus:
    """One serial port or TCP endpoint: one client for every device on it, one request at a
    time. The client is made at the first read, with the shortest timeout of its devices."""

    def __init__(self, key: tuple[Any, ...], config: ModbusSensor) -> None:
        self.key = key
        self.config = config
        self.lock = threading.Lock()
        self.timeouts: list[float] = []
        self.users = 0
        self._client: Any = None
        self._reply_units: list[int] = []

    def client(self) -> Any:
        if self._client is not None:
            return self._client
        from pymodbus.client import ModbusSerialClient, ModbusTcpClient

        timeout = min(self.timeouts)
        cfg = self.config
        if cfg.transport == "tcp":
            assert cfg.host is not None
            self._client = ModbusTcpClient(
                cfg.host, port=cfg.port, timeout=timeout, retries=0, trace_packet=self._trace
            )
        else:
            assert cfg.device is not None
            self._client = ModbusSerialClient(
                cfg.device,
                baudrate=cfg.baudrate,
                parity=cfg.parity,
                stopbits=cfg.stopbits,
                timeout=timeout,
                retries=0,
                trace_packet=self._trace,
            )
        return self._client

    def _trace(self, sending: bool, data: bytes) -> bytes:
        # Remember which unit answered, to name it when a reply is dropped as another
        # unit's: pymodbus skips such a frame and the request then times out.
        if sending:
            self._reply_units = []
        elif data:
            offset = 6 if self.config.transport == "tcp" else 0
            if len(data) > offset:
                self._reply_units.append(data[offset])
        return data

    def other_units(self, unit: int) -> list[int]:
        return sorted({u for u in self._reply_units if u != unit})

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


_BUSES: dict[tuple[Any, ...], _Bus] = {}
_BUSES_LOCK = threading.Lock()


def _bus_key(config: ModbusSensor) -> tuple[Any, ...]:
    if config.transport == "tcp":
        return ("tcp", config.host, config.port)
    return ("rtu", config.device)


def _acquire_bus(config: ModbusSensor) -> _Bus:
    key = _bus_key(config)
    with _BUSES_LOCK:
        bus = _BUSES.get(key)
        if bus is None:
            bus = _BUSES[key] = _Bus(key, config)
        elif config.transport == "rtu":
            mine = (config.baudrate, config.parity, config.stopbits)
            theirs = (bus.config.baudrate, bus.config.parity, bus.config.stopbits)
            if mine != theirs:
                raise ConfigError(
                    [
                        f"sensors.{config.name}: baudrate, parity and stopbits {mine} differ"
                        f" from sensor {bus.config.name!r} on the same port {config.device}"
                        f" {theirs}; one bus has one line setting"
                    ]
                )
        bus.users += 1
        bus.timeouts.append(_client_timeout(config))
        return bus


def _client_timeout(config: ModbusSensor) -> float:
    # Below the poller's, so that a dead device is reported as such, not as a hung read.
    return max(0.05, config.timeout_s / 2)


def _release_bus(bus: _Bus, config: ModbusSensor) -> None:
    with _BUSES_LOCK:
        bus.users -= 1
        bus.timeouts.remove(_client_timeout(config))
        if bus.users > 0:
            return
        _BUSES.pop(bus.key, None)
    with bus.lock:
        bus.close()


class ModbusDriver:
    def __init__(self, config: ModbusSensor) -> None:
        try:
            import pymodbus.client  # noqa: F401
            from pymodbus.exceptions import ConnectionException, ModbusException

            if config.transport == "rtu":
                import serial  # noqa: F401  (pymodbus needs it for RTU)
        except ImportError as exc:
            raise DependencyMissingError(
                f"sensor {config.name!r} (kind modbus) needs the Python library"
                f" {exc.name or 'pymodbus'}, which is not installed:"
                " pip install 'edge-agent[modbus]'"
            ) from exc
        self.config = config
        self.blocks = plan_requests([*config.registers, *config.status], max_gap=config.max_gap)
        self._exception: type[Exception] = ModbusException
        self._connection_lost: type[Exception] = ConnectionException
        self._requests = 0
        self._bus = _acquire_bus(config)
        self._closed = False

    def facts(self) -> dict[str, Any]:
        return {"requests_per_read": len(self.blocks), "requests": self._requests}

    @property
    def _where(self) -> str:
        cfg = self.config
        return f"{cfg.host}:{cfg.port}" if cfg.transport == "tcp" else str(cfg.device)

    def read(self) -> list[Sample]:
        unit = self.config.unit_id
        # Wait for the bus no longer than a read may take: a neighbour's timeout is short.
        if not self._bus.lock.acquire(timeout=self.config.timeout_s):
            raise SensorError(f"Modbus bus {self._where} busy for {self.config.timeout_s:g} s")
        try:
            client = self._bus.client()
            if not client.connected and not client.connect():
                raise SensorError(f"cannot connect to Modbus device at {self._where}")
            values: dict[int, float] = {}
            statuses: list[tuple[ModbusStatus, int]] = []
            try:
                for block in self.blocks:
                    self._read_block(client, block, values, statuses)
            except self._exception as exc:
                if isinstance(exc, self._connection_lost):
                    # The link itself broke: reconnect on the next read. A silent unit on a
                    # working bus keeps the connection for its neighbours.
                    self._bus.close()
                others = self._bus.other_units(unit)
                hint = f"; a reply from unit {others} was not ours" if others else ""
                raise SensorError(f"Modbus {self._where} unit {unit}: {exc}{hint}") from exc
        finally:
            self._bus.lock.release()
        return self._samples(values, statuses)

    def _read_block(
        self,
        client: Any,
        block: Block,
        values: dict[int, float],
        statuses: list[tuple[ModbusStatus, int]],
    ) -> None:
        call = {
            "holding": client.read_holding_registers,
            "input": client.read_input_registers,
            "coil": client.read_coils,
            "discrete": client.read_discrete_inputs,
        }[block.function]
        unit = self.config.unit_id
        self._requests += 1
        response = call(block.start, count=block.count, device_id=unit)
        if response.isError():
            raise SensorError(
                f"Modbus unit {unit} refused {block.function}"
                f" {block.start}+{block.count}: {response}"
            )
        answered = getattr(response, "dev_id", unit)
        if answered != unit:
            raise SensorError(
                f"Modbus {self._where}: reply from unit {answered} to a request for unit {unit}"
            )
        words = response.bits if block.function in ("coil", "discrete") else response.registers
        if len(words) < block.count:
            raise SensorError(f"Modbus answer too short: {len(words)} < {block.count}")
        for reg in block.registers:
            at = words[reg.address - block.start :]
            if isinstance(reg, ModbusStatus):
                statuses.append((reg, int(bool(at[0])) if reg.type == "bool" else int(at[0])))
            else:
                assert isinstance(reg, ModbusRegister)
                values[id(reg)] = decode(reg, at)

    def _samples(
        self, values: dict[int, float], statuses: list[tuple[ModbusStatus, int]]
    ) -> list[Sample]:
        registers = self.config.registers
        status_of: dict[str, str] = {}
        for status, raw in statuses:
            state = instrument_status(status, raw)
            for quantity in status.quantities or [r.quantity for r in registers]:
                if _RANK[state] > _RANK[status_of.get(quantity, NORMAL)]:
                    status_of[quantity] = state
        return [
            Sample(reg.quantity, values[id(reg)], reg.unit, status_of.get(reg.quantity, NORMAL))
            for reg in registers
        ]

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            _release_bus(self._bus, self.config)
