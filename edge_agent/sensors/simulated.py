"""Plausible diurnal values for demos and tests; the embedded default sensor."""

from __future__ import annotations

import math
import random
import time

from edge_agent.config.sensors import SimulatedSensor
from edge_agent.errors import SensorError
from edge_agent.sensors.base import Sample

# quantity: (unit, daily mean, daily swing, noise, peak hour)
PROFILES: dict[str, tuple[str, float, float, float, float]] = {
    "temperature": ("Cel", 28.0, 5.0, 0.3, 14.0),
    "humidity": ("%", 75.0, -15.0, 1.5, 14.0),
    "pm2_5": ("ug/m3", 35.0, 15.0, 3.0, 8.0),
    "pm10": ("ug/m3", 55.0, 20.0, 5.0, 8.0),
    "noise": ("dB", 60.0, 10.0, 2.0, 17.0),
    "water_level": ("m", 1.2, 0.2, 0.01, 3.0),
    "pressure": ("hPa", 1010.0, 2.0, 0.2, 10.0),
}


class SimulatedDriver:
    def __init__(self, config: SimulatedSensor) -> None:
        unknown = [q for q in config.quantities if q not in PROFILES]
        if unknown:
            raise SensorError(
                f"sensor {config.name}: cannot simulate {', '.join(unknown)};"
                f" known: {', '.join(PROFILES)}"
            )
        self.config = config
        self._random = random.Random(config.seed)

    def read(self) -> list[Sample]:
        fault = bool(self.config.fault_rate) and self._random.random() < self.config.fault_rate
        if fault and self._random.random() < 0.5:
            raise SensorError(f"sensor {self.config.name}: simulated fault")
        hour = (time.time() / 3600.0 + 7.0) % 24.0  # local time in Vietnam (UTC+7)
        samples = []
        for quantity in self.config.quantities:
            unit, mean, swing, noise, peak = PROFILES[quantity]
            value = mean + swing * math.cos((hour - peak) / 24.0 * 2 * math.pi)
            value += self._random.gauss(0.0, noise)
            samples.append(Sample(quantity, round(max(value, 0.0), 3), unit))
        if fault and samples:
            broken = self._random.randrange(len(samples))
            samples[broken] = Sample(samples[broken].quantity, math.nan, samples[broken].unit)
        return samples

    def close(self) -> None:
        pass
