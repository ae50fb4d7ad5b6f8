"""Detector labels → the classes a camera reports, its allow-list and per-class thresholds.

A road camera reports `two_wheeler`, `car`, `bus`, `truck` and `person` (the HCMC AI
Challenge classes as far as COCO has them); a dog or a frisbee is neither tracked nor
counted. The detector's own threshold stays a floor: `detector_floors` lowers it for the
labels some camera wants at a lower score (motorbikes), and each camera then applies its
own thresholds per reported class.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from edge_agent.config.cameras import TRAFFIC_CLASSES, CameraConfig
from edge_agent.inference.detector import Detection


@dataclass(frozen=True)
class ClassFilter:
    """Relabels and filters one camera's detections."""

    class_map: Mapping[str, str]
    allowed: frozenset[str] | None  # None: every class
    thresholds: Mapping[str, float]

    @classmethod
    def from_config(cls, config: CameraConfig) -> ClassFilter:
        allowed: frozenset[str] | None
        if config.classes == "all":
            allowed = None
        elif config.classes == "traffic":
            allowed = frozenset(TRAFFIC_CLASSES)
        else:
            allowed = frozenset(config.classes)
        return cls(dict(config.class_map), allowed, dict(config.class_thresholds))

    def group(self, label: str) -> str:
        return self.class_map.get(label, label)

    def wants(self, group: str) -> bool:
        return self.allowed is None or group in self.allowed

    def apply(self, detections: Sequence[Detection]) -> list[Detection]:
        """The detections this camera keeps, labelled with its reported class."""
        kept = []
        for det in detections:
            group = self.class_map.get(det.label, det.label)
            if self.allowed is not None and group not in self.allowed:
                continue
            if det.score < self.thresholds.get(group, 0.0):
                continue
            kept.append(
                det if group == det.label else Detection(det.class_id, group, det.score, det.box)
            )
        return kept


def detector_floors(
    cameras: Iterable[CameraConfig], labels: Sequence[str], threshold: float
) -> dict[str, float]:
    """Per detector label, the lowest score any camera wants below `threshold`, so the
    detector reports motorbikes at 0.30 while its default stays 0.35."""
    floors: dict[str, float] = {}
    for camera in cameras:
        keep = ClassFilter.from_config(camera)
        for label in labels:
            group = keep.group(label)
            if not keep.wants(group) or group not in keep.thresholds:
                continue
            wanted = keep.thresholds[group]
            if wanted < min(threshold, floors.get(label, threshold)):
                floors[label] = wanted
    return floors
