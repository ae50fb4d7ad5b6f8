"""What the node produced lately, kept small and in memory for the page.

`Recent.observe()` sees every event after the outbox has stored it (app.py calls it from its
sink, on the event loop, the only writer). It keeps per sensor quantity the last value and a
ring of 5-minute means over 6 hours (the sparkline), per camera the last detection and
today's detections by class, the latest air-quality index, and the last events for the
technician's event list. Nothing here reads the outbox.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from edge_agent.contract import Kind

SPARK_STEP_S = 300.0
SPARK_POINTS = 72  # 6 hours of 5-minute means
RECENT_EVENTS = 50
AQI_QUANTITY = "vn_aqi_hourly"


def _local_date(ts: float) -> str:
    return time.strftime("%Y-%m-%d", time.localtime(ts))


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


@dataclass
class Series:
    """One quantity of one sensor: the last reading and the 6-hour ring of 5-minute means."""

    quantity: str
    unit: str = ""
    value: float | None = None
    quality: str = "ok"
    ts: float = 0.0
    # (bucket start, sum, count), oldest first.
    buckets: deque[list[float]] = field(default_factory=lambda: deque(maxlen=SPARK_POINTS))
    # The last sparkline built, by (end of the window, additions so far): pages poll more
    # often than sensors read.
    _spark: tuple[float, int, dict[str, Any]] | None = None
    _added: int = 0

    def add(self, value: float | None, unit: str, quality: str, ts: float) -> None:
        if ts >= self.ts:
            self.value, self.unit, self.quality, self.ts = value, unit, quality, ts
        if value is None:
            return
        self._added += 1
        start = ts - ts % SPARK_STEP_S
        if self.buckets and self.buckets[-1][0] == start:
            bucket = self.buckets[-1]
            bucket[1] += value
            bucket[2] += 1
        elif not self.buckets or start > self.buckets[-1][0]:
            self.buckets.append([start, value, 1])

    def spark(self, now: float) -> dict[str, Any]:
        end = now - now % SPARK_STEP_S
        cached = self._spark
        if cached is not None and cached[0] == end and cached[1] == self._added:
            return cached[2]
        first = end - (SPARK_POINTS - 1) * SPARK_STEP_S
        values: list[float | None] = [None] * SPARK_POINTS
        for start, total, count in self.buckets:
            index = int((start - first) // SPARK_STEP_S)
            if 0 <= index < SPARK_POINTS:
                values[index] = round(total / count, 4)
        spark = {"step_s": SPARK_STEP_S, "end": end, "values": values}
        self._spark = (end, self._added, spark)
        return spark

    def to_dict(self, now: float) -> dict[str, Any]:
        return {
            "quantity": self.quantity,
            "value": self.value,
            "unit": self.unit,
            "quality": self.quality,
            "ts": self.ts,
            "spark": self.spark(now),
        }


@dataclass
class CameraActivity:
    last_detection: dict[str, Any] | None = None
    # The boxes found on the frame of the last detection, for the annotated thumbnail.
    last_frame: list[dict[str, Any]] = field(default_factory=list)
    snapshot: str | None = None
    today: str = ""
    counts: dict[str, int] = field(default_factory=dict)
    totals: dict[str, int] = field(default_factory=dict)

    def detected(self, data: Mapping[str, Any], ts: float) -> None:
        label = str(data.get("label", ""))
        date = _local_date(ts)
        if date != self.today:
            self.today, self.counts = date, {}
        self.counts[label] = self.counts.get(label, 0) + 1
        self.totals[label] = self.totals.get(label, 0) + 1
        box = {
            "label": label,
            "score": _number(data.get("score")),
            "box": data.get("box"),
            "frame_size": data.get("frame_size"),
        }
        if self.last_detection is not None and self.last_detection["ts"] == ts:
            self.last_frame.append(box)
        else:
            self.last_frame = [box]
        self.last_detection = {"ts": ts, "label": label, "zone": str(data.get("zone", ""))}
        snapshot = data.get("snapshot")
        if isinstance(snapshot, str):
            self.snapshot = snapshot

    def today_counts(self, now: float) -> dict[str, Any]:
        date = _local_date(now)
        return {"date": date, "counts": dict(self.counts) if date == self.today else {}}


class Recent:
    """The sink tap: recent readings, detections and events, for the page."""

    def __init__(self) -> None:
        self.sensors: dict[str, dict[str, Series]] = {}
        self.cameras: dict[str, CameraActivity] = {}
        self.air_quality: dict[str, dict[str, Any]] = {}
        self.events: deque[dict[str, Any]] = deque(maxlen=RECENT_EVENTS)

    def observe(self, kind: Kind | str, data: Mapping[str, Any], stream: str, ts: float) -> None:
        kind = str(kind)
        if kind == Kind.READING:
            self._reading(data, stream, ts)
            return
        if kind == Kind.DETECTION:
            camera = str(data.get("camera", stream))
            self.cameras.setdefault(camera, CameraActivity()).detected(data, ts)
        if kind in (Kind.DETECTION, Kind.CAMERA, Kind.COUNT, Kind.GAP, Kind.ALERT):
            self.events.append({"ts": ts, "kind": kind, "stream": stream, "data": dict(data)})

    def _reading(self, data: Mapping[str, Any], stream: str, ts: float) -> None:
        sensor = str(data.get("sensor", stream))
        quantity = str(data.get("quantity", ""))
        value = _number(data.get("value"))
        if quantity == AQI_QUANTITY:
            color = data.get("color")
            self.air_quality[sensor] = {
                "sensor": sensor,
                "value": value,
                "category": data.get("category"),
                "color": list(color) if isinstance(color, list | tuple) else None,
                "label_vi": data.get("label_vi"),
                "ts": ts,
            }
            return
        series = self.sensors.setdefault(sensor, {}).get(quantity)
        if series is None:
            series = self.sensors[sensor][quantity] = Series(quantity)
        series.add(value, str(data.get("unit", "")), str(data.get("quality", "ok")), ts)

    def sensor_values(self, sensor: str, now: float) -> list[dict[str, Any]]:
        return [s.to_dict(now) for s in self.sensors.get(sensor, {}).values()]
