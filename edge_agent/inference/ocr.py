"""PP-OCR text detection and recognition on our own onnxruntime sessions.

The models are PP-OCRv4's detector and recogniser as rapidocr-onnxruntime 1.4.4 ships them
in its wheel (`scripts/fetch-ocr-models` takes them out, checked by sha256). We do not
install rapidocr itself: it requires `opencv-python`, which would overwrite our
`opencv-python-headless` (both are `cv2`), and it loads three models and a YAML config where
a plate needs two sessions and a few array operations. The recogniser's alphabet is read
from the model's own metadata (`character`). The direction classifier is not used: plates
seen by a fixed camera are upright.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from edge_agent.errors import InferenceError
from edge_agent.inference.detector import session_options

log = logging.getLogger(__name__)

DET_MODEL = "ch_PP-OCRv4_det_infer.onnx"
REC_MODEL = "ch_PP-OCRv4_rec_infer.onnx"
CLS_MODEL = "ch_ppocr_mobile_v2.0_cls_infer.onnx"
FETCH_HINT = "run scripts/fetch-ocr-models to install the plate reader's models"
REC_HEIGHT = 48
REC_MIN_WIDTH = 320  # what the recogniser was trained to see; narrower crops are padded
DET_THRESHOLD = 0.3  # probability of a text pixel
DET_BOX_THRESHOLD = 0.5  # mean probability inside a text region
UNCLIP_RATIO = 1.6  # DB text regions are shrunk kernels: grow them back


@dataclass(frozen=True)
class TextLine:
    """One read line: its text, mean character confidence, and corner points in the image."""

    text: str
    confidence: float
    box: npt.NDArray[np.float32]  # 4 x 2: top-left, top-right, bottom-right, bottom-left


def _order(points: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    by_x = points[np.argsort(points[:, 0])]
    left = by_x[:2][np.argsort(by_x[:2, 1])]
    right = by_x[2:][np.argsort(by_x[2:, 1])]
    return np.array([left[0], right[0], right[1], left[1]], np.float32)


class TextReader:
    """Finds and reads lines of text in a BGR image."""

    def __init__(self, model_dir: Path, *, threads: int = 1) -> None:
        import onnxruntime as ort

        paths = [model_dir / DET_MODEL, model_dir / REC_MODEL]
        missing = [p for p in paths if not p.is_file()]
        if missing:
            raise InferenceError(f"OCR model not found: {missing[0]}; {FETCH_HINT}")
        try:
            options = session_options(threads)
            providers = ["CPUExecutionProvider"]
            self.det = ort.InferenceSession(str(paths[0]), options, providers=providers)
            self.rec = ort.InferenceSession(str(paths[1]), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise InferenceError(f"cannot load OCR models from {model_dir}: {exc}") from exc
        characters = self.rec.get_modelmeta().custom_metadata_map.get("character", "")
        if not characters:
            raise InferenceError(f"{paths[1]}: no 'character' alphabet in the model metadata")
        self.alphabet = ["", *characters.splitlines(), " "]  # index 0 is the CTC blank

    def read(self, image: np.ndarray, *, long_side: int = 480) -> list[TextLine]:
        """Every text line found, top to bottom."""
        lines = []
        for box in self.find(image, long_side=long_side):
            crop = self._warp(image, box)
            text, confidence = self.recognise(crop)
            if text:
                lines.append(TextLine(text, confidence, box))
        return sorted(lines, key=lambda line: float(line.box[:, 1].mean()))

    def find(self, image: np.ndarray, *, long_side: int = 480) -> list[npt.NDArray[np.float32]]:
        height, width = image.shape[:2]
        scale = long_side / max(height, width)
        new_w = max(32, round(width * scale / 32) * 32)
        new_h = max(32, round(height * scale / 32) * 32)
        resized = cv2.resize(image, (new_w, new_h))
        tensor = (resized.astype(np.float32) / 255.0 - 0.5) / 0.5
        tensor = tensor.transpose(2, 0, 1)[None]
        probability = self.det.run(None, {self.det.get_inputs()[0].name: tensor})[0][0, 0]
        mask = (probability > DET_THRESHOLD).astype(np.uint8)
        mask = cv2.dilate(mask, np.ones((2, 2), np.uint8))
        contours, _ = cv2.findContours(mask * 255, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
        boxes = []
        sx, sy = width / new_w, height / new_h
        for contour in contours[:100]:
            (cx, cy), (w, h), angle = cv2.minAreaRect(contour)
            if min(w, h) < 3:
                continue
            region = np.zeros_like(mask)
            cv2.fillPoly(region, [cv2.boxPoints(((cx, cy), (w, h), angle)).astype(np.int32)], 1)
            if cv2.mean(probability, region)[0] < DET_BOX_THRESHOLD:
                continue
            # The offset a polygon clipper would grow a rectangle by: area * ratio / perimeter.
            grow = w * h * UNCLIP_RATIO / (2 * (w + h))
            points = cv2.boxPoints(((cx, cy), (w + 2 * grow, h + 2 * grow), angle))
            points[:, 0] = np.clip(points[:, 0] * sx, 0, width - 1)
            points[:, 1] = np.clip(points[:, 1] * sy, 0, height - 1)
            boxes.append(_order(points.astype(np.float32)))
        return boxes

    @staticmethod
    def _warp(image: np.ndarray, box: npt.NDArray[np.float32]) -> np.ndarray:
        width = int(max(np.linalg.norm(box[0] - box[1]), np.linalg.norm(box[2] - box[3])))
        height = int(max(np.linalg.norm(box[0] - box[3]), np.linalg.norm(box[1] - box[2])))
        target = np.array([[0, 0], [width, 0], [width, height], [0, height]], np.float32)
        matrix = cv2.getPerspectiveTransform(box, target)
        crop = cv2.warpPerspective(
            image, matrix, (max(width, 1), max(height, 1)), borderMode=cv2.BORDER_REPLICATE
        )
        if crop.shape[0] >= 1.5 * crop.shape[1]:
            crop = np.rot90(crop)
        return np.ascontiguousarray(crop)

    def recognise(self, crop: np.ndarray) -> tuple[str, float]:
        """The text on one line image and its mean character confidence."""
        height, width = crop.shape[:2]
        resized_w = min(max(1, math.ceil(REC_HEIGHT * width / height)), 4 * REC_MIN_WIDTH)
        resized = cv2.resize(crop, (resized_w, REC_HEIGHT)).astype(np.float32)
        tensor = np.zeros((1, 3, REC_HEIGHT, max(REC_MIN_WIDTH, resized_w)), np.float32)
        tensor[0, :, :, :resized_w] = (resized.transpose(2, 0, 1) / 255.0 - 0.5) / 0.5
        scores = self.rec.run(None, {self.rec.get_inputs()[0].name: tensor})[0][0]
        best = scores.argmax(axis=1)
        keep = best != 0
        keep[1:] &= best[1:] != best[:-1]  # CTC: repeats without a blank between are one
        chars = [self.alphabet[i] for i in best[keep] if i < len(self.alphabet)]
        if not chars:
            return "", 0.0
        return "".join(chars), float(scores.max(axis=1)[keep].mean())
