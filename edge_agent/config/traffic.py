"""Traffic configuration of a camera: reported classes, movements, rules, speed, plates."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from edge_agent.config.base import Section

_NAME = r"^[A-Za-z0-9_.-]+$"

TRAFFIC_CLASS_MAP: dict[str, str] = {
    "motorcycle": "two_wheeler",
    "bicycle": "two_wheeler",
    "car": "car",
    "bus": "bus",
    "truck": "truck",
    "person": "person",
}
"""COCO labels → the classes a Vietnamese traffic office reports (the HCMC AI Challenge 2020
classes as far as COCO has them: two-wheelers, cars, buses, trucks; plus pedestrians)."""

TRAFFIC_CLASSES = ("two_wheeler", "car", "bus", "truck", "person")
VEHICLE_CLASSES = ("two_wheeler", "car", "bus", "truck")
DEFAULT_CLASS_THRESHOLDS: dict[str, float] = {
    # Motorbikes are small and often half hidden behind each other: accept lower scores.
    "two_wheeler": 0.30,
    "person": 0.35,
    "car": 0.40,
    "bus": 0.40,
    "truck": 0.40,
}


class MovementConfig(Section):
    name: str = Field(pattern=_NAME, description="Movement name, e.g. 'north_east'.")
    entry: str = Field(description="Line or zone where the movement starts (its name).")
    exit: str = Field(description="Line or zone where it ends; the same as entry for a U-turn.")
    entry_direction: str | None = Field(
        default=None, description="Entry is a line: only crossings in this direction count."
    )
    exit_direction: str | None = Field(
        default=None, description="Exit is a line: only crossings in this direction count."
    )


class DwellRule(Section):
    kind: Literal["dwell"] = Field(description="A person staying in a zone (loitering).")
    zone: str = Field(description="The zone watched.")
    dwell_s: float = Field(default=120.0, gt=0, description="Seconds in the zone before it fires.")
    classes: list[str] = Field(default=["person"], description="Classes watched.")
    cooldown_s: float = Field(
        default=300.0, ge=0, description="Seconds before the same track may fire again."
    )


class StoppedRule(Section):
    kind: Literal["stopped"] = Field(description="A vehicle stopped in a no-stopping zone.")
    zone: str = Field(description="The no-stopping zone.")
    stopped_s: float = Field(default=60.0, gt=0, description="Seconds still before it fires.")
    radius: float = Field(
        default=0.02,
        gt=0,
        le=0.5,
        description="How far (normalised) the box's anchor may wander and still be 'still'.",
    )
    classes: list[str] = Field(default=list(VEHICLE_CLASSES), description="Classes watched.")
    cooldown_s: float = Field(
        default=300.0, ge=0, description="Seconds before the same track may fire again."
    )


class CrowdRule(Section):
    kind: Literal["crowd"] = Field(description="Too many people in a zone for too long.")
    zone: str = Field(description="The zone watched.")
    max_people: int = Field(default=20, ge=1, description="It fires above this many people.")
    for_s: float = Field(default=60.0, ge=0, description="... held for this many seconds.")
    classes: list[str] = Field(default=["person"], description="Classes counted.")
    cooldown_s: float = Field(
        default=600.0, ge=0, description="Seconds after the crowd thins before it may fire again."
    )


RuleConfig = Annotated[DwellRule | StoppedRule | CrowdRule, Field(discriminator="kind")]


class SpeedConfig(Section):
    name: str = Field(pattern=_NAME, description="Name of the measured stretch.")
    lines: tuple[str, str] = Field(description="The two lines bounding the stretch (names).")
    distance_m: float = Field(gt=0, le=1000, description="Distance between them on the road (m).")


class PlatesConfig(Section):
    enabled: bool = Field(
        default=False,
        description=(
            "Read number plates of vehicles crossing a line (gate cameras). Plates are "
            "personal data: off by default; turn on only where the law and a notice allow."
        ),
    )
    lines: list[str] = Field(
        default_factory=list, description="Lines whose crossings trigger a read; empty = all."
    )
    classes: list[str] = Field(default=list(VEHICLE_CLASSES), description="Classes read.")
    min_confidence: float = Field(
        default=0.8, ge=0, le=1, description="Lowest OCR confidence a plate is reported with."
    )
    lower_part: float = Field(
        default=0.6,
        gt=0,
        le=1,
        description="Share of the vehicle box, from its bottom, searched for the plate.",
    )
    retention_s: float = Field(
        default=7 * 86400.0,
        ge=0,
        description="Plate snapshots older than this are deleted from the node (seconds).",
    )
