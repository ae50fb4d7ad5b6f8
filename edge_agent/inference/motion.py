"""The motion gate: a cheap look at a small grey copy of each frame decides whether the
detector needs to run, so a quiet street costs almost nothing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from edge_agent.config.cameras import MotionConfig


@dataclass(frozen=True)
class GateDecision:
    """Whether to detect on this frame, and why: 'motion', 'hold', 'heartbeat', 'first',
    'off' (gate disabled) or '' (skipped)."""

    run: bool
    reason: str
    moving_share: float


def mask_image(
    masks: Sequence[Sequence[tuple[float, float]]], width: int, height: int
) -> np.ndarray | None:
    """255 where motion counts, 0 inside the masks; None when there are no masks."""
    if not masks:
        return None
    keep = np.full((height, width), 255, np.uint8)
    for polygon in masks:
        points = np.array([[x * (width - 1), y * (height - 1)] for x, y in polygon], np.int32)
        cv2.fillPoly(keep, [points], 0)
    return keep


class MotionGate:
    """Background subtraction (running average) on a downscaled, blurred grey frame."""

    def __init__(self, config: MotionConfig, *, learning_rate: float = 0.2) -> None:
        self.config = config
        self.learning_rate = learning_rate
        self._background: np.ndarray | None = None
        self._keep: np.ndarray | None = None
        self._kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
        self._last_detect: float | None = None
        self._last_motion: float | None = None

    def moving_share(self, frame_bgr: np.ndarray) -> float:
        """Share of the (unmasked) small frame covered by its largest moving region."""
        height, width = frame_bgr.shape[:2]
        small_w = min(self.config.width, width)
        small_h = max(1, round(height * small_w / width))
        small = cv2.resize(frame_bgr, (small_w, small_h), interpolation=cv2.INTER_AREA)
        grey = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY) if small.ndim == 3 else small
        grey = cv2.GaussianBlur(grey, (5, 5), 0)
        if self._background is None or self._background.shape != grey.shape:
            self._background = grey.astype(np.float32)
            self._keep = mask_image(self.config.masks, small_w, small_h)
            return 0.0  # nothing to compare with yet; decide() looks at a first frame anyway
        diff = cv2.absdiff(grey, cv2.convertScaleAbs(self._background))
        cv2.accumulateWeighted(grey, self._background, self.learning_rate)
        _, moving = cv2.threshold(diff, self.config.threshold, 255, cv2.THRESH_BINARY)
        if self._keep is not None:
            moving = cv2.bitwise_and(moving, self._keep)
        moving = cv2.dilate(moving, self._kernel, iterations=2)
        contours, _ = cv2.findContours(moving, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        if not contours:
            return 0.0
        largest = max(cv2.contourArea(c) for c in contours)
        return float(largest) / float(small_w * small_h)

    def decide(self, frame_bgr: np.ndarray, ts: float) -> GateDecision:
        """Look at the frame taken at `ts` (seconds) and decide whether to run the detector."""
        if not self.config.enabled:
            return GateDecision(True, "off", 1.0)
        share = self.moving_share(frame_bgr)
        reason = ""
        if self._last_detect is None:
            reason = "first"
        elif share >= self.config.min_area:
            reason = "motion"
        elif self._last_motion is not None and ts - self._last_motion <= self.config.hold_s:
            reason = "hold"
        elif ts - self._last_detect >= self.config.heartbeat_s:
            reason = "heartbeat"
        if share >= self.config.min_area:
            self._last_motion = ts
        if reason:
            self._last_detect = ts
        return GateDecision(bool(reason), reason, share)
