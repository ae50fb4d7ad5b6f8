"""Camera and detector configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from edge_agent.config.base import Section


class CameraConfig(Section):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="Unique camera name (topic-safe).")
    source: str = Field(description="rtsp://... URL, /dev/videoN device, or a video file path.")
    fps: float = Field(default=2.0, gt=0, le=60, description="Target analysis rate (frames/s).")
    enabled: bool = Field(default=True, description="Set false to keep the entry but not open it.")


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
        default=2, ge=1, le=64, description="CPU threads one model run may use."
    )

    @field_validator("class_thresholds")
    @classmethod
    def _thresholds_in_range(cls, value: dict[str, float]) -> dict[str, float]:
        for name, threshold in value.items():
            if not 0.0 <= threshold <= 1.0:
                raise ValueError(f"threshold for {name!r} must be within 0..1, got {threshold}")
        return value
