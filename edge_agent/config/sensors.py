"""One configuration model per sensor driver kind, joined in a discriminated union."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, model_validator

from edge_agent.config.base import Section


class Range(Section):
    min: float = Field(description="Lowest physically plausible value.")
    max: float = Field(description="Highest physically plausible value.")

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self


class SensorBase(Section):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="Unique sensor name (topic-safe).")
    label: str | None = Field(
        default=None,
        min_length=1,
        max_length=80,
        description="Friendly name on the status page (e.g. 'Trạm chợ Đông Ba'); default: name.",
    )
    interval_s: float = Field(
        default=10.0, ge=0.01, le=86_400, description="Seconds between reads (at least 0.01)."
    )
    timeout_s: float = Field(
        default=5.0,
        ge=0.01,
        le=600,
        description="A read (the whole answer, not just its start) taking longer counts as failed.",
    )
    backoff_max_s: float = Field(
        default=300.0, gt=0, description="Upper bound of the retry delay after failed reads."
    )
    failing_after: int = Field(
        default=3,
        ge=1,
        le=1000,
        description="Consecutive failed reads after which the sensor shows 'failing'"
        " (before that: 'degraded').",
    )
    enabled: bool = Field(default=True, description="Set false to keep the entry but not poll it.")
    ranges: dict[str, Range] = Field(
        default_factory=dict,
        description="Plausible range per quantity, overriding the built-in defaults;"
        " values outside are sent with quality 'bad' and the raw value kept aside.",
    )
    stuck_after_s: float | None = Field(
        default=None,
        gt=0,
        description="A value unchanged for this many seconds is marked 'suspect'; unset = off.",
    )
    aggregate_s: float | None = Field(
        default=None,
        gt=0,
        le=86_400,
        description="Send min/mean/max/count per quantity once per window of this many seconds"
        " instead of every raw sample; unset = raw mode.",
    )


class SimulatedSensor(SensorBase):
    kind: Literal["simulated"] = Field(description="Plausible diurnal values, for demos and tests.")
    quantities: list[str] = Field(
        default=["temperature", "humidity", "pm2_5", "pm10", "noise", "water_level"],
        description="Quantities to simulate.",
    )
    fault_rate: float = Field(
        default=0.0, ge=0, le=1, description="Share of reads that fail or return NaN on purpose."
    )
    seed: int | None = Field(default=None, description="Random seed, for repeatable values.")


class SystemSensor(SensorBase):
    kind: Literal["system"] = Field(description="Host health via psutil.")
    interval_s: float = Field(
        default=60.0, ge=0.01, le=86_400, description="Seconds between reads (at least 0.01)."
    )


class ModbusRegister(Section):
    quantity: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="Quantity name, e.g. pm2_5.")
    unit: str = Field(description="Unit of the value after scaling, e.g. 'Cel', 'ug/m3', 'm'.")
    address: int = Field(ge=0, le=65535, description="Register (or coil) address, 0-based.")
    function: Literal["holding", "input", "coil", "discrete"] = Field(
        default="holding", description="Register table: holding (03), input (04), coil, discrete."
    )
    type: Literal["int16", "uint16", "int32", "uint32", "float32", "bool"] = Field(
        default="uint16", description="Data type; 32-bit types span two registers."
    )
    word_order: Literal["big", "little"] = Field(
        default="big", description="32-bit types: 'big' = high word first."
    )
    byte_order: Literal["big", "little"] = Field(
        default="big", description="Byte order inside each 16-bit register."
    )
    scale: float = Field(default=1.0, description="value = raw * scale + offset.")
    offset: float = Field(default=0.0, description="value = raw * scale + offset.")

    @model_validator(mode="after")
    def _type_fits_function(self) -> ModbusRegister:
        bits = self.function in ("coil", "discrete")
        if bits != (self.type == "bool"):
            raise ValueError("coil and discrete inputs use type 'bool'; registers do not")
        return self


class ModbusStatus(Section):
    address: int = Field(ge=0, le=65535, description="Status register (or coil) address, 0-based.")
    function: Literal["holding", "input", "coil", "discrete"] = Field(
        default="holding", description="Register table of the status word or bit."
    )
    calibrating: list[int] = Field(
        default_factory=list,
        description="Values meaning 'calibrating' (a coil or discrete input: [1] = on).",
    )
    fault: list[int] = Field(default_factory=list, description="Values meaning 'instrument fault'.")
    calibrating_bits: int = Field(
        default=0, ge=0, le=0xFFFF, description="Register bits any of which means calibrating."
    )
    fault_bits: int = Field(
        default=0, ge=0, le=0xFFFF, description="Register bits any of which means a fault."
    )
    quantities: list[str] = Field(
        default_factory=list,
        description="The registers this status describes (empty: every one of the device).",
    )

    @property
    def type(self) -> Literal["uint16", "bool"]:
        return "bool" if self.function in ("coil", "discrete") else "uint16"

    @model_validator(mode="after")
    def _meaningful(self) -> ModbusStatus:
        if not (self.calibrating or self.fault or self.calibrating_bits or self.fault_bits):
            raise ValueError("give calibrating and/or fault values (or bits)")
        if self.type == "bool" and (self.calibrating_bits or self.fault_bits):
            raise ValueError("a coil or discrete input has no bits; use calibrating = [1]")
        return self


class ModbusSensor(SensorBase):
    kind: Literal["modbus"] = Field(description="Modbus TCP or RTU device (needs [modbus] extra).")
    transport: Literal["tcp", "rtu"] = Field(description="'tcp' (Ethernet) or 'rtu' (RS-485).")
    host: str | None = Field(default=None, description="TCP: device address.")
    port: int = Field(default=502, ge=1, le=65535, description="TCP: device port.")
    device: str | None = Field(default=None, description="RTU: serial device, e.g. /dev/ttyUSB0.")
    baudrate: int = Field(default=9600, gt=0, description="RTU: baud rate.")
    parity: Literal["N", "E", "O"] = Field(default="N", description="RTU: parity.")
    stopbits: Literal[1, 2] = Field(default=1, description="RTU: stop bits.")
    unit_id: int = Field(default=1, ge=0, le=247, description="Modbus device (slave) id.")
    max_gap: int = Field(
        default=8,
        ge=0,
        le=100,
        description="Unused registers (or bits) between two wanted ones that are still read"
        " in the same request: one round trip instead of two.",
    )
    registers: list[ModbusRegister] = Field(min_length=1, description="What to read and how.")
    status: list[ModbusStatus] = Field(
        default_factory=list,
        description="Instrument status registers or coils: readings taken while calibrating"
        " or in fault are sent with that status and never as measurements.",
    )

    @model_validator(mode="after")
    def _transport_fields(self) -> ModbusSensor:
        if self.transport == "tcp" and not self.host:
            raise ValueError("transport 'tcp' needs 'host'")
        if self.transport == "rtu" and not self.device:
            raise ValueError("transport 'rtu' needs 'device'")
        quantities = {r.quantity for r in self.registers}
        for i, status in enumerate(self.status):
            unknown = sorted(set(status.quantities) - quantities)
            if unknown:
                raise ValueError(f"status[{i}]: no register for {', '.join(unknown)}")
        return self


class SerialParticulate(SensorBase):
    device: str = Field(description="Serial device, e.g. /dev/ttyS0 or /dev/ttyUSB0.")
    baudrate: int = Field(default=9600, gt=0, description="Baud rate (both sensors use 9600).")
    interval_s: float = Field(default=10.0, gt=0, le=86_400, description="Seconds between reads.")


class Pms5003Sensor(SerialParticulate):
    kind: Literal["pms5003"] = Field(description="Plantower PMS5003 over UART (needs [serial]).")


class Sds011Sensor(SerialParticulate):
    kind: Literal["sds011"] = Field(description="Nova SDS011 over UART (needs [serial]).")


class JsonValue(Section):
    pointer: str = Field(
        pattern=r"^(/.*)?$", description="RFC 6901 JSON pointer, e.g. /data/0/pm25."
    )
    quantity: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="Quantity name.")
    unit: str = Field(description="Unit of the value after scaling.")
    scale: float = Field(default=1.0, description="value = raw * scale + offset.")
    offset: float = Field(default=0.0, description="value = raw * scale + offset.")


class HttpJsonSensor(SensorBase):
    kind: Literal["http_json"] = Field(description="Poll a URL and pick values from its JSON.")
    url: str = Field(pattern=r"^https?://", description="http:// or https:// URL to GET.")
    values: list[JsonValue] = Field(min_length=1, description="Values to pick from the response.")
    token: SecretStr | None = Field(
        default=None,
        description="Bearer token; better given as the credential file"
        " 'sensors.<name>.token' (systemd LoadCredential) than written here.",
    )


class W1ThermSensor(SensorBase):
    kind: Literal["w1_therm"] = Field(description="1-Wire DS18B20 temperature via sysfs.")
    path: Path = Field(
        description="The device's w1_slave file, e.g. /sys/bus/w1/devices/28-0316a2790aff/w1_slave."
    )
    quantity: str = Field(default="temperature", description="Quantity name.")


class FileSensor(SensorBase):
    kind: Literal["file"] = Field(description="A numeric value read from a (sysfs) text file.")
    path: Path = Field(description="File holding one number, e.g. an IIO sysfs attribute.")
    quantity: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="Quantity name.")
    unit: str = Field(description="Unit after scaling.")
    scale: float = Field(default=1.0, description="value = raw * scale + offset.")
    offset: float = Field(default=0.0, description="value = raw * scale + offset.")


SensorConfig = Annotated[
    SimulatedSensor
    | SystemSensor
    | ModbusSensor
    | Pms5003Sensor
    | Sds011Sensor
    | HttpJsonSensor
    | W1ThermSensor
    | FileSensor,
    Field(discriminator="kind"),
]
