"""1-Wire DS18B20 (`w1_slave`) and generic numeric sysfs files."""

from __future__ import annotations

from pathlib import Path

from edge_agent.config.sensors import FileSensor, W1ThermSensor
from edge_agent.errors import SensorError
from edge_agent.sensors.base import Sample

# The DS18B20 answers 85.000 °C after a power-on reset before its first conversion.
POWER_ON_RESET_MILLIDEGREES = 85000


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="ascii", errors="replace")
    except FileNotFoundError:
        raise SensorError(
            f"{path} does not exist (device unplugged or driver not loaded?)"
        ) from None
    except OSError as exc:
        raise SensorError(f"cannot read {path}: {exc.strerror or exc}") from exc


def parse_w1_slave(text: str) -> float:
    """Degrees Celsius from the two lines of a `w1_slave` file; the CRC line must say YES."""
    lines = text.strip().splitlines()
    if len(lines) < 2:
        raise SensorError("w1_slave answer is incomplete")
    if not lines[0].strip().endswith("YES"):
        raise SensorError("CRC check failed on the 1-Wire bus (w1_slave says NO)")
    _, sep, value = lines[1].rpartition("t=")
    if not sep:
        raise SensorError("w1_slave answer has no t= value")
    try:
        millidegrees = int(value.strip())
    except ValueError:
        raise SensorError(f"w1_slave t= value {value.strip()!r} is not a number") from None
    if millidegrees == POWER_ON_RESET_MILLIDEGREES:
        raise SensorError("DS18B20 returned its power-on reset value (85 °C); check its power")
    return millidegrees / 1000.0


class W1ThermDriver:
    def __init__(self, config: W1ThermSensor) -> None:
        self.config = config

    def read(self) -> list[Sample]:
        try:
            celsius = parse_w1_slave(_read_text(self.config.path))
        except SensorError as exc:
            raise SensorError(f"{self.config.path}: {exc}") from None
        return [Sample(self.config.quantity, celsius, "Cel")]

    def close(self) -> None:
        pass


class FileDriver:
    def __init__(self, config: FileSensor) -> None:
        self.config = config

    def read(self) -> list[Sample]:
        text = _read_text(self.config.path).strip()
        try:
            raw = float(text)
        except ValueError:
            raise SensorError(f"{self.config.path}: {text[:40]!r} is not a number") from None
        value = raw * self.config.scale + self.config.offset
        return [Sample(self.config.quantity, value, self.config.unit)]

    def close(self) -> None:
        pass
