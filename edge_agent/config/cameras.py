"""Camera and detector configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator

from edge_agent.config.base import Section
from edge_agent.config.traffic import (
    DEFAULT_CLASS_THRESHOLDS,
    TRAFFIC_CLASS_MAP,
    TRAFFIC_CLASSES,
    VEHICLE_CLASSES,
    CrowdRule,
    DwellRule,
    MovementConfig,
    PlatesConfig,
    RuleConfig,
    SpeedConfig,
    StoppedRule,
)

__all__ = [
    "DEFAULT_CLASS_THRESHOLDS",
    "TRAFFIC_CLASSES",
    "TRAFFIC_CLASS_MAP",
    "VEHICLE_CLASSES",
    "CameraConfig",
    "CrowdRule",
    "DetectorConfig",
    "DwellRule",
    "LineConfig",
    "MotionConfig",
    "MovementConfig",
    "PlatesConfig",
    "RuleConfig",
    "SpeedConfig",
    "StoppedRule",
    "ZoneConfig",
]

Point = tuple[float, float]
"""(x, y) in normalised frame coordinates: 0..1 from the left and from the top."""


def _check_points(points: list[Point], *, minimum: int) -> list[Point]:
    if len(points) < minimum:
        raise ValueError(f"needs at least {minimum} points, got {len(points)}")
    for x, y in points:
        if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
            raise ValueError(f"point ({x}, {y}) lies outside 0..1 (coordinates are normalised)")
    return points


class MotionConfig(Section):
    enabled: bool = Field(
        default=True,
        description="Run the detector only on frames with motion (and on the heartbeat).",
    )
    threshold: int = Field(
        default=25,
        ge=1,
        le=255,
        description="Grey-level change (0..255) a pixel needs to count as moving.",
    )
    min_area: float = Field(
        default=0.002,
        gt=0.0,
        le=1.0,
        description="Smallest moving region, as a share of the frame area, that counts as motion.",
    )
    width: int = Field(
        default=160, ge=32, le=1280, description="Width (pixels) the frame is shrunk to first."
    )
    masks: list[list[Point]] = Field(
        default_factory=list,
        description="Polygons (normalised points) where motion is ignored, e.g. trees, a clock.",
    )
    heartbeat_s: float = Field(
        default=30.0,
        gt=0.0,
        description="Run the detector at least this often even without motion (seconds).",
    )
    hold_s: float = Field(
        default=2.0,
        ge=0.0,
        description="Keep detecting this long after motion stops, so slow objects keep a track.",
    )

    @field_validator("masks")
    @classmethod
    def _masks_valid(cls, value: list[list[Point]]) -> list[list[Point]]:
        return [_check_points(mask, minimum=3) for mask in value]


class ZoneConfig(Section):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="Zone name, unique per camera.")
    polygon: list[Point] = Field(description="Corners in normalised coordinates (3 or more).")
    classes: list[str] = Field(
        default_factory=list,
        description="Classes counted here (e.g. ['person', 'car']); empty means every class.",
    )

    @field_validator("polygon")
    @classmethod
    def _polygon_valid(cls, value: list[Point]) -> list[Point]:
        return _check_points(value, minimum=3)


class LineConfig(Section):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="Line name, unique per camera.")
    points: tuple[Point, Point] = Field(description="Start and end in normalised coordinates.")
    directions: tuple[str, str] = Field(
        default=("in", "out"),
        description=(
            "Names of the two crossing directions: the first for a crossing from the left "
            "to the right of the line walked from its first point to its second (as seen in "
            "the image), the second for the opposite."
        ),
    )
    classes: list[str] = Field(
        default_factory=list, description="Classes counted; empty means every class."
    )
    margin: float = Field(
        default=0.02,
        ge=0.0,
        le=0.5,
        description=(
            "Hysteresis: how far (normalised) past the line an anchor must be before its "
            "side counts, so a box jittering on the line is counted once."
        ),
    )
    allowed_direction: str | None = Field(
        default=None,
        description=(
            "For a one-way road: the one direction name allowed here; a track crossing the "
            "other way raises a `wrong_way` event. Empty means both ways are allowed."
        ),
    )

    @model_validator(mode="after")
    def _allowed_is_a_direction(self) -> LineConfig:
        if self.allowed_direction is not None and self.allowed_direction not in self.directions:
            raise ValueError(
                f"allowed_direction {self.allowed_direction!r} is not one of "
                f"{list(self.directions)}"
            )
        return self

    @field_validator("points")
    @classmethod
    def _points_valid(cls, value: tuple[Point, Point]) -> tuple[Point, Point]:
        _check_points(list(value), minimum=2)
        if value[0] == value[1]:
            raise ValueError("the two points of a line must differ")
        return value


class CameraConfig(Section):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="Unique camera name (topic-safe).")
    label: str | None = Field(
        default=None,
        min_length=1,
        max_length=80,
        description="Friendly name on the status page (e.g. 'Camera cổng chính'); default: name.",
    )
    source: str = Field(description="rtsp://... URL, /dev/videoN device, or a video file path.")
    fps: float = Field(default=2.0, gt=0, le=60, description="Target analysis rate (frames/s).")
    enabled: bool = Field(default=True, description="Set false to keep the entry but not open it.")
    loop: bool = Field(
        default=False, description="Video files only: start again at the end (for demos)."
    )
    rtsp_transport: Literal["tcp", "udp"] = Field(
        default="tcp", description="RTSP only: 'tcp' (robust on lossy links) or 'udp'."
    )
    open_timeout_s: float = Field(
        default=10.0, gt=0, le=300, description="Give up opening the source after this long."
    )
    read_timeout_s: float = Field(
        default=10.0, gt=0, le=300, description="A read waiting longer marks the camera offline."
    )
    backoff_max_s: float = Field(
        default=60.0, ge=1, description="Cap of the delay between reconnection attempts."
    )
    decode_nice: Literal["auto"] | int = Field(
        default="auto",
        description=(
            "Niceness (0..19) added to the capture thread's, relative to the agent's other "
            "threads, so that decoding fills the gaps the detector's threads leave instead "
            "of delaying a model run. 'auto': 19 when the agent has one camera (the model "
            "then only runs frames this thread decoded, so it cannot starve it), 0 with "
            "several (other cameras' model runs could keep a low-priority decoder behind "
            "its stream)."
        ),
    )
    motion: MotionConfig = Field(
        default_factory=MotionConfig, description="Motion gate in front of the detector."
    )
    zones: list[ZoneConfig] = Field(
        default_factory=list,
        description="Zones counted per interval and reported on entry; none means no zone events.",
    )
    lines: list[LineConfig] = Field(
        default_factory=list, description="Lines whose crossings are counted by direction."
    )
    count_interval_s: float = Field(
        default=900.0,
        ge=1,
        le=86400,
        description=(
            "Length of a counting bin (seconds, dividing a day): bins are aligned to the "
            "hour in `timezone` and stamped in UTC; every bin is published, zeros included."
        ),
    )
    timezone: str = Field(
        default="Asia/Ho_Chi_Minh", description="IANA time zone the counting bins align to."
    )
    classes: Literal["traffic", "all"] | list[str] = Field(
        default="traffic",
        description=(
            "Classes tracked and counted: 'traffic' (two_wheeler, car, bus, truck, person), "
            "'all' (every detector label), or a list of class names."
        ),
    )
    class_map: dict[str, str] = Field(
        default_factory=lambda: dict(TRAFFIC_CLASS_MAP),
        description="Detector label → reported class; labels not listed keep their name.",
    )
    class_thresholds: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_CLASS_THRESHOLDS),
        description="Lowest score per reported class; others use detector.threshold.",
    )
    movements: list[MovementConfig] = Field(
        default_factory=list, description="Named entry → exit movements counted per class."
    )
    rules: list[RuleConfig] = Field(
        default_factory=list, description="Rules that raise events: dwell, stopped, crowd."
    )
    speed: list[SpeedConfig] = Field(
        default_factory=list, description="Stretches between two lines whose speed is estimated."
    )
    plates: PlatesConfig = Field(
        default_factory=PlatesConfig, description="Number plate reading (personal data)."
    )
    detection_cooldown_s: float = Field(
        default=10.0,
        ge=0,
        description="A track re-entering the same zone within this time is not reported again.",
    )
    snapshots_max_count: int = Field(
        default=200, ge=0, description="Event snapshots kept on disk (0 keeps none)."
    )
    snapshots_max_bytes: int = Field(
        default=50_000_000, ge=0, description="Bytes of event snapshots kept on disk."
    )

    @model_validator(mode="after")
    def _unique_names(self) -> CameraConfig:
        names = [z.name for z in self.zones] + [line.name for line in self.lines]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"zone/line names used twice: {', '.join(duplicates)}")
        self._check_references()
        return self

    def _check_references(self) -> None:
        zones = {z.name for z in self.zones}
        lines = {line.name: line for line in self.lines}
        for m in self.movements:
            for end, direction in ((m.entry, m.entry_direction), (m.exit, m.exit_direction)):
                if end not in zones and end not in lines:
                    raise ValueError(f"movement {m.name}: no zone or line named {end!r}")
                if direction is not None and (
                    end not in lines or direction not in lines[end].directions
                ):
                    raise ValueError(f"movement {m.name}: {end!r} has no direction {direction!r}")
        for rule in self.rules:
            if rule.zone not in zones:
                raise ValueError(f"{rule.kind} rule: no zone named {rule.zone!r}")
        for stretch in self.speed:
            for name in stretch.lines:
                if name not in lines:
                    raise ValueError(f"speed {stretch.name}: no line named {name!r}")
        for name in self.plates.lines:
            if name not in lines:
                raise ValueError(f"plates.lines: no line named {name!r}")

    @field_validator("count_interval_s")
    @classmethod
    def _divides_a_day(cls, value: float) -> float:
        if value != int(value) or 86400 % int(value):
            raise ValueError(f"must be a whole number of seconds dividing 86400, got {value}")
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @field_validator("decode_nice")
    @classmethod
    def _nice_in_range(cls, value: Literal["auto"] | int) -> Literal["auto"] | int:
        if value != "auto" and not 0 <= value <= 19:
            raise ValueError(f"must be 'auto' or 0..19, got {value}")
        return value

    @field_validator("class_thresholds")
    @classmethod
    def _scores_in_range(cls, value: dict[str, float]) -> dict[str, float]:
        for name, threshold in value.items():
            if not 0.0 <= threshold <= 1.0:
                raise ValueError(f"threshold for {name!r} must be within 0..1, got {threshold}")
        return value


class DetectorConfig(Section):
    model: Path | None = Field(
        default=None,
        description=(
            "ONNX model file; empty means the shipped NanoDet model under paths.model_dir "
            "(nanodet.onnx, or nanodet.int8.onnx with variant = 'int8')."
        ),
    )
    classes: Path | None = Field(
        default=None,
        description=(
            "Class-list file, one name per line in the model's class order; empty means "
            "coco.names under paths.model_dir."
        ),
    )
    decoder: Literal["auto", "nanodet", "yolov8"] = Field(
        default="auto",
        description=(
            "Output format of the model: 'nanodet' (NanoDet GFL heads), 'yolov8' "
            "(Ultralytics YOLOv8/YOLO11 export, [1, 4+C, N]) or 'auto' (from output shapes)."
        ),
    )
    variant: Literal["fp32", "int8"] = Field(
        default="fp32",
        description=(
            "Which shipped model to use: 'fp32' or 'int8' (quantised, built with "
            "scripts/build-model --int8). Ignored when `model` is set."
        ),
    )
    threshold: float = Field(
        default=0.35, ge=0.0, le=1.0, description="Lowest score a detection is reported with."
    )
    class_thresholds: dict[str, float] = Field(
        default_factory=dict,
        description=(
            "Per-class score thresholds by class name, e.g. {person = 0.5}; "
            "other classes use `threshold`."
        ),
    )
    iou_threshold: float = Field(
        default=0.6,
        gt=0.0,
        le=1.0,
        description="Overlap (IoU) above which a lower-scored box of the same class is dropped.",
    )
    intra_op_threads: int = Field(
        default=2,
        ge=1,
        le=64,
        description=(
            "CPU threads one model run may use; with workers = 'auto', the threads all model "
            "runs share."
        ),
    )
    workers: Literal["auto"] | int = Field(
        default="auto",
        description=(
            "Model runs at a time, each camera's frames one after another: 'auto' runs one "
            "at a time with intra_op_threads threads for one camera, and with several "
            "cameras up to intra_op_threads at a time with one thread each (more frames per "
            "second: no thread waits for another at every layer); or a number (1..16), each "
            "run then using intra_op_threads threads."
        ),
    )

    @field_validator("class_thresholds")
    @classmethod
    def _thresholds_in_range(cls, value: dict[str, float]) -> dict[str, float]:
        for name, threshold in value.items():
            if not 0.0 <= threshold <= 1.0:
                raise ValueError(f"threshold for {name!r} must be within 0..1, got {threshold}")
        return value

    @field_validator("workers")
    @classmethod
    def _workers_in_range(cls, value: Literal["auto"] | int) -> Literal["auto"] | int:
        if value != "auto" and not 1 <= value <= 16:
            raise ValueError(f"must be 'auto' or 1..16, got {value}")
        return value
