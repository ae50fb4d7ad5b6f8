"""Camera and detector configuration."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from edge_agent.config.base import Section


class CameraConfig(Section):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="Unique camera name (topic-safe).")
    source: str = Field(description="rtsp://... URL, /dev/videoN device, or a video file path.")
    fps: float = Field(default=2.0, gt=0, le=60, description="Target analysis rate (frames/s).")
    enabled: bool = Field(default=True, description="Set false to keep the entry but not open it.")


class DetectorConfig(Section):
    model: Path | None = Field(
        default=None,
        description="ONNX model file; empty means the shipped NanoDet model under paths.model_dir.",
    )
