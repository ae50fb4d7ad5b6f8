"""Modbus TCP and RTU via pymodbus: a register map read in as few requests as possible."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from edge_agent.config.sensors import ModbusRegister, ModbusSensor
from edge_agent.errors import DependencyMissingError, SensorError
from edge_agent.sensors.base import Sample

WIDTH = {"int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "float32": 2, "bool": 1}
FORMAT = {"int16": ">h", "uint16": ">H", "int32": ">i", "uint32": ">I", "float32": ">f"}
# Protocol limits per request (Modbus application protocol spec, 6.1-6.4).
MAX_REGISTERS = 125
MAX_BITS = 2000


@dataclass(frozen=True)
class Block:
    """One request: `count` registers (or bits) of one table from `start`."""

    function: str
    start: int
    count: int
    registers: tuple[ModbusRegister, ...]


def plan_requests(registers: Sequence[ModbusRegister], *, max_gap: int) -> list[Block]:
    """Group the register map into as few requests as the protocol limits allow."""
    blocks: list[Block] = []
    for function in ("holding", "input", "coil", "discrete"):
        limit = MAX_BITS if function in ("coil", "discrete") else MAX_REGISTERS
        wanted = sorted((r for r in registers if r.function == function), key=lambda r: r.address)
        current: list[ModbusRegister] = []
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


class ModbusDriver:
    def __init__(self, config: ModbusSensor) -> None:
        try:
            from pymodbus.client import ModbusSerialClient, ModbusTcpClient
            from pymodbus.exceptions import ModbusException

            if config.transport == "rtu":
                import serial  # noqa: F401  (pymodbus needs it for RTU)
        except ImportError as exc:
            raise DependencyMissingError(
                f"sensor {config.name!r} (kind modbus) needs the Python library"
                f" {exc.name or 'pymodbus'}, which is not installed:"
                " pip install 'edge-agent[modbus]'"
            ) from exc
        self.config = config
        self.blocks = plan_requests(config.registers, max_gap=config.max_gap)
        self._exception: type[Exception] = ModbusException
        # A client-side timeout below the poller's, so a dead device is reported as such.
        timeout = max(0.05, config.timeout_s / 2)
        if config.transport == "tcp":
            assert config.host is not None
            self._client: Any = ModbusTcpClient(
                config.host, port=config.port, timeout=timeout, retries=0
            )
        else:
            assert config.device is not None
            self._client = ModbusSerialClient(
                config.device,
                baudrate=config.baudrate,
                parity=config.parity,
                stopbits=config.stopbits,
                timeout=timeout,
                retries=0,
            )
        self._requests = 0

    def facts(self) -> dict[str, Any]:
        return {"requests_per_read": len(self.blocks), "requests": self._requests}

    def read(self) -> list[Sample]:
        where = self.config.host if self.config.transport == "tcp" else self.config.device
        if not self._client.connected and not self._client.connect():
            raise SensorError(f"cannot connect to Modbus device at {where}")
        samples: list[Sample] = []
        try:
            for block in self.blocks:
                samples += self._read_block(block)
        except self._exception as exc:
            self._client.close()
            raise SensorError(f"Modbus {where} unit {self.config.unit_id}: {exc}") from exc
        return samples

    def _read_block(self, block: Block) -> list[Sample]:
        call = {
            "holding": self._client.read_holding_registers,
            "input": self._client.read_input_registers,
            "coil": self._client.read_coils,
            "discrete": self._client.read_discrete_inputs,
        }[block.function]
        self._requests += 1
        response = call(block.start, count=block.count, device_id=self.config.unit_id)
        if response.isError():
            raise SensorError(
                f"Modbus unit {self.config.unit_id} refused {block.function}"
                f" {block.start}+{block.count}: {response}"
            )
        words = response.bits if block.function in ("coil", "discrete") else response.registers
        if len(words) < block.count:
            raise SensorError(f"Modbus answer too short: {len(words)} < {block.count}")
        return [
            Sample(reg.quantity, decode(reg, words[reg.address - block.start :]), reg.unit)
            for reg in block.registers
        ]

    def close(self) -> None:
        self._client.close()
