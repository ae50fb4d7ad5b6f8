"""One configuration model per sensor driver kind, joined in a discriminated union."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from edge_agent.config.base import Section


class SensorBase(Section):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="Unique sensor name (topic-safe).")
    interval_s: float = Field(
        default=10.0, gt=0, le=86_400, description="Seconds between reads."
    )
    timeout_s: float = Field(
        default=5.0, gt=0, le=600, description="A read taking longer than this counts as failed."
    )
    backoff_max_s: float = Field(
        default=300.0, gt=0, description="Upper bound of the retry delay after failed reads."
    )
    enabled: bool = Field(default=True, description="Set false to keep the entry but not poll it.")


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
    interval_s: float = Field(default=60.0, gt=0, le=86_400, description="Seconds between reads.")


SensorConfig = Annotated[SimulatedSensor | SystemSensor, Field(discriminator="kind")]
