"""Vietnamese number plates: find text in the lower part of a vehicle box, read it, and keep
only what has the shape of a plate.

Plates come in one row (cars: `51F-123.45`, `30E-1234`, `29A1-12345`) and two rows
(motorbikes and some trucks: `59-X1` over `123.45`, reported as `59-X1 123.45`). A reading
that fits neither shape is not a plate and is never reported. Plates are personal data: the
reader is off unless a camera's `plates.enabled` says otherwise.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_agent.inference.ocr import TextLine, TextReader
from edge_agent.inference.tracker import Box

_SERIAL = r"(?:\d{3}\.\d{2}|\d{4,5})"
ONE_ROW = re.compile(rf"^\d{{2}}[A-Z]{{1,2}}\d?-{_SERIAL}$")
TWO_ROWS = re.compile(rf"^\d{{2}}-?[A-Z]{{1,2}}\d{{0,2}} {_SERIAL}$")


def valid_plate(text: str) -> bool:
    """True for the one- and two-row shapes of Vietnamese plates."""
    return bool(ONE_ROW.match(text) or TWO_ROWS.match(text))


def normalise(lines: list[TextLine]) -> tuple[str, float]:
    """Rows top to bottom joined by one space, upper case, inner spaces dropped; the
    confidence is the lowest row's."""
    rows = ["".join(line.text.upper().split()) for line in lines]
    return " ".join(row for row in rows if row), min(
        (line.confidence for line in lines), default=0.0
    )


@dataclass(frozen=True)
class Plate:
    text: str
    confidence: float
    box: Box  # the plate's text, in the frame's pixels


class PlateReader:
    """Reads plates in vehicle boxes with PP-OCR (see `ocr.py`)."""

    def __init__(self, model_dir: Path, *, threads: int = 1) -> None:
        self.reader = TextReader(model_dir, threads=threads)

    def read_crop(self, crop: np.ndarray) -> Plate | None:
        """The plate in an image of (the lower part of) a vehicle, or None."""
        lines = self.reader.read(crop)
        # A plate is the one or two rows that make a plate together; try both.
        for first in range(len(lines)):
            for count in (2, 1):
                group = lines[first : first + count]
                if len(group) < count:
                    continue
                text, confidence = normalise(group)
                if valid_plate(text):
                    xs = np.concatenate([line.box[:, 0] for line in group])
                    ys = np.concatenate([line.box[:, 1] for line in group])
                    box = (float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max()))
                    return Plate(text, confidence, box)
        return None

    def read_vehicle(self, frame: np.ndarray, box: Box, *, lower_part: float) -> Plate | None:
        """The plate in the lower `lower_part` of a vehicle's box in `frame`."""
        height, width = frame.shape[:2]
        x1, y1, x2, y2 = (round(v) for v in box)
        x1, x2 = max(0, x1), min(width, x2)
        y2 = min(height, y2)
        y1 = max(0, int(y2 - (y2 - max(0, y1)) * lower_part))
        if x2 - x1 < 16 or y2 - y1 < 8:
            return None
        plate = self.read_crop(frame[y1:y2, x1:x2])
        if plate is None:
            return None
        px1, py1, px2, py2 = plate.box
        return Plate(plate.text, plate.confidence, (px1 + x1, py1 + y1, px2 + x1, py2 + y1))
