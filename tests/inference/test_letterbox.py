"""The fast preprocessing and NMS give exactly what the plain way gives.

The references below are the straightforward implementations the detector used before:
resize, pad, convert to float, subtract, multiply, reorder to NCHW; and NMS as a loop of one
box against the rest. The fast ones must agree bit for bit, so that no detection changes.
"""

from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_agent.inference.decoders import InputSpec, NanoDetDecoder, YoloV8Decoder
from edge_agent.inference.detector import Detector, nms
from edge_agent.inference.letterbox import Letterboxer, letterbox

from .conftest import read_image

NANODET = NanoDetDecoder(
    input_size=(416, 416), heads=[(8, 0, 3), (16, 1, 4), (32, 2, 5)], num_classes=80, reg_max=10
).input_spec
YOLO = YoloV8Decoder(input_size=(640, 640), num_classes=80, transposed=False).input_spec
SIZES = [
    (576, 768),
    (1080, 1920),
    (416, 416),
    (100, 900),
    (900, 100),
    (1, 1),
    (3, 2000),
    (413, 417),
]


def plain_letterbox(
    frame: np.ndarray, spec: InputSpec
) -> tuple[np.ndarray, tuple[float, int, int]]:
    height, width = frame.shape[:2]
    scale = min(spec.width / width, spec.height / height)
    new_w = max(1, min(spec.width, round(width * scale)))
    new_h = max(1, min(spec.height, round(height * scale)))
    pad_x, pad_y = (spec.width - new_w) // 2, (spec.height - new_h) // 2
    interpolation = cv2.INTER_AREA if scale < 0.5 else cv2.INTER_LINEAR
    resized = cv2.resize(frame, (new_w, new_h), interpolation=interpolation)
    canvas = cv2.copyMakeBorder(
        resized,
        pad_y,
        spec.height - new_h - pad_y,
        pad_x,
        spec.width - new_w - pad_x,
        cv2.BORDER_CONSTANT,
        value=spec.pad_value,
    )
    if spec.rgb:
        canvas = cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB)
    pixels = canvas.astype(np.float32)
    cv2.subtract(pixels, (*spec.mean, 0.0), dst=pixels)  # type: ignore[call-overload]
    cv2.multiply(pixels, (*(1.0 / s for s in spec.std), 0.0), dst=pixels)  # type: ignore[call-overload]
    return np.asarray(cv2.dnn.blobFromImage(pixels), np.float32), (scale, pad_x, pad_y)


def plain_nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> list[int]:
    x1, y1, x2, y2 = boxes.T
    areas = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size:
        best = int(order[0])
        keep.append(best)
        rest = order[1:]
        w = np.maximum(0.0, np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]))
        h = np.maximum(0.0, np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]))
        inter = w * h
        union = areas[best] + areas[rest] - inter
        overlap = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        order = rest[overlap <= iou]
    return keep


def frames(media_dir: Path) -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    found = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in SIZES]
    found += [read_image(media_dir, n) for n in ("astronaut.png", "messi5.jpg", "fruits.jpg")]
    # A view with strides (a crop) as well as contiguous frames.
    found.append(read_image(media_dir, "coffee.png")[50:350, 20:500])
    return found


@pytest.mark.parametrize("spec", [NANODET, YOLO], ids=["nanodet-bgr", "yolov8-rgb"])
def test_letterbox_is_bit_identical_to_the_plain_way(spec: InputSpec, media_dir: Path) -> None:
    # One Letterboxer through frames of changing sizes: the padding follows each size.
    boxer = Letterboxer(spec)
    for frame in frames(media_dir) + frames(media_dir)[:2]:
        expected, (scale, pad_x, pad_y) = plain_letterbox(frame, spec)
        tensor, fit = boxer(frame)
        assert tensor.shape == expected.shape and tensor.dtype == np.float32
        assert np.array_equal(tensor.view(np.uint32), expected.view(np.uint32)), frame.shape
        assert (fit.scale, fit.pad_x, fit.pad_y) == (scale, pad_x, pad_y)


def test_letterbox_function_returns_a_new_tensor_each_time(media_dir: Path) -> None:
    photo = read_image(media_dir, "astronaut.png")
    first, _ = letterbox(photo, NANODET)
    second, _ = letterbox(np.zeros_like(photo), NANODET)
    assert not np.shares_memory(first, second)
    assert np.array_equal(first, plain_letterbox(photo, NANODET)[0])


def test_nms_matches_the_plain_loop() -> None:
    rng = np.random.default_rng(11)
    for trial in range(300):
        n = int(rng.integers(0, 60))
        corners = rng.uniform(0, 300, (n, 2)).astype(np.float32)
        sizes = rng.uniform(0, 80, (n, 2)).astype(np.float32)
        if trial % 5 == 0 and n:
            sizes[: n // 3] = 0  # empty boxes: no area, no overlap
        boxes = np.concatenate([corners, corners + sizes], axis=1)
        if trial % 3 == 0 and n > 4:
            boxes[1] = boxes[0]  # the same box twice
        # Few distinct scores: ties are broken by position, as before.
        scores = rng.choice(np.array([0.3, 0.5, 0.5, 0.7, 0.9], np.float32), n)
        for iou in (0.0, 0.3, 0.6, 0.95, 1.0):
            assert nms(boxes, scores, iou) == plain_nms(boxes, scores, iou), (trial, iou)


def test_detect_from_two_threads_gives_what_one_thread_gives(
    detector: Detector, media_dir: Path
) -> None:
    """Workers share one detector: each thread has its own input tensor."""
    pictures = [read_image(media_dir, n) for n in ("astronaut.png", "messi5.jpg")] * 4
    alone = [detector.detect(p) for p in pictures]
    together: dict[int, list[object]] = {}

    def work(parity: int) -> None:
        for index in range(parity, len(pictures), 2):
            together[index] = list(detector.detect(pictures[index]))

    threads = [threading.Thread(target=work, args=(parity,)) for parity in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [together[i] for i in range(len(pictures))] == alone
