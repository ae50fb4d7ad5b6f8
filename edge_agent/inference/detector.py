"""The object detector: an ONNX model run with onnxruntime on the CPU.

One `Detector` owns one onnxruntime session sized for a small box (a few intra-op threads,
one inter-op thread, sequential execution). `detect()` letterboxes a BGR frame to the
model's input, runs it, decodes the outputs (see `decoders.py`), applies per-class score
thresholds and class-wise non-maximum suppression, and maps the boxes back to the frame's
own pixel coordinates.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import cv2
import numpy as np
import numpy.typing as npt

from edge_agent.errors import InferenceError
from edge_agent.inference.decoders import Candidates, Decoder, InputSpec, choose_decoder
from edge_agent.inference.letterbox import Letterbox, Letterboxer, letterbox

__all__ = [
    "Detection",
    "Detector",
    "Letterbox",
    "Prepared",
    "letterbox",
    "nms",
    "session_options",
]

if TYPE_CHECKING:
    from edge_agent.config.cameras import DetectorConfig

log = logging.getLogger(__name__)

SHIPPED_MODEL = {"fp32": "nanodet.onnx", "int8": "nanodet.int8.onnx"}
SHIPPED_CLASSES = "coco.names"
BUILD_HINT = "run scripts/build-model to build and install it"
DEFAULT_INPUT_SIZE = {"nanodet": 416, "yolov8": 640}


@dataclass(frozen=True)
class Prepared:
    """A frame made into the model's input: the tensor, how it was fitted, the frame size."""

    tensor: npt.NDArray[np.float32]
    fit: Letterbox
    width: int
    height: int


@dataclass(frozen=True)
class Detection:
    """One detected object; `box` is (x1, y1, x2, y2) in the frame's pixels."""

    class_id: int
    label: str
    score: float
    box: tuple[float, float, float, float]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form: label, class_id, score (4 decimals), box (1 decimal)."""
        return {
            "label": self.label,
            "class_id": self.class_id,
            "score": round(self.score, 4),
            "box": [round(v, 1) for v in self.box],
        }


def read_class_names(path: Path) -> list[str]:
    """One class name per line; blank lines and `#` comments are skipped."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InferenceError(f"class list not found: {path}; {BUILD_HINT}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InferenceError(f"class list {path} cannot be read: {exc}") from None
    names = [line.strip() for line in text.splitlines()]
    names = [n for n in names if n and not n.startswith("#")]
    if not names:
        raise InferenceError(f"class list {path} holds no class names")
    return names


def nms(boxes: npt.NDArray[np.float32], scores: npt.NDArray[np.float32], iou: float) -> list[int]:
    """Greedy non-maximum suppression; returns kept indices, best score first.

    The overlaps of every pair are computed at once (float32, the same formula and the same
    operands as a box against the rest), then the greedy pass only reads them."""
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = boxes[order].T
    areas = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    w = np.maximum(0.0, np.minimum(x2[:, None], x2) - np.maximum(x1[:, None], x1))
    h = np.maximum(0.0, np.minimum(y2[:, None], y2) - np.maximum(y1[:, None], y1))
    inter = w * h
    union = areas[:, None] + areas - inter
    overlap = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    suppressed = overlap > iou
    keep: list[int] = []
    alive = np.ones(order.size, bool)
    for rank in range(order.size):
        if alive[rank]:
            keep.append(int(order[rank]))
            alive &= ~suppressed[rank]
    return keep


def session_options(intra_op_threads: int) -> Any:
    """onnxruntime options for a small shared CPU: bounded threads, no busy-waiting."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Spinning threads would steal the cores capture and the rest of the agent need.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # Planning one block for all intermediate tensors saves nothing measurable here and
    # keeps 4 MiB more resident with the int8 model (bench/bench_capacity.py, memory).
    # The arena stays on: without it the heap grows by tens of MiB over the first frames.
    options.enable_mem_pattern = False
    options.log_severity_level = 3
    return options


class Detector:
    """An ONNX object detector. Construction loads and warms the model (slow: do it once).

    `options` (onnxruntime SessionOptions) replaces `session_options(intra_op_threads)`,
    for measuring other settings."""

    def __init__(
        self,
        *,
        model: Path,
        classes: Path | Sequence[str],
        threshold: float = 0.35,
        class_thresholds: Mapping[str, float] | None = None,
        iou_threshold: float = 0.6,
        max_detections: int = 100,
        intra_op_threads: int = 2,
        decoder: Literal["auto", "nanodet", "yolov8"] = "auto",
        options: Any = None,
    ) -> None:
        import onnxruntime as ort

        self.model_path = Path(model)
        if not self.model_path.is_file():
            raise InferenceError(f"detector model not found: {self.model_path}; {BUILD_HINT}")
        self.labels = read_class_names(classes) if isinstance(classes, Path) else list(classes)
        if not self.labels:
            raise InferenceError("the class list is empty")
        self.threshold = threshold
        self.iou_threshold = iou_threshold
        self.max_detections = max_detections
        self._thresholds = np.full(len(self.labels), threshold, np.float32)
        for label, value in (class_thresholds or {}).items():
            if label not in self.labels:
                raise InferenceError(
                    f"class threshold for {label!r}: no such class in the class list"
                )
            self._thresholds[self.labels.index(label)] = value
        self._score_floor = float(self._thresholds.min())
        try:
            self.session = ort.InferenceSession(
                str(self.model_path),
                sess_options=options or session_options(intra_op_threads),
                providers=["CPUExecutionProvider"],
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise InferenceError(f"cannot load detector model {self.model_path}: {exc}") from exc
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            raise InferenceError(
                f"{self.model_path}: expected one NCHW image input, got "
                f"{[(i.name, i.shape) for i in inputs]}"
            )
        self.input_name: str = inputs[0].name
        outputs = self.session.get_outputs()
        guess = decoder if decoder != "auto" else ("yolov8" if len(outputs) == 1 else "nanodet")
        height, width = (
            d if isinstance(d, int) else DEFAULT_INPUT_SIZE[guess] for d in inputs[0].shape[2:]
        )
        self.decoder: Decoder = choose_decoder(
            decoder, outputs, input_size=(width, height), num_classes=len(self.labels)
        )
        self.output_names = [o.name for o in outputs]
        self._local = threading.local()
        self.run_raw(np.zeros((1, 3, height, width), np.float32))  # warm-up
        log.info(
            "detector loaded %s (%s decoder, %dx%d input, %d classes, %d threads)",
            self.model_path,
            self.decoder.kind,
            width,
            height,
            len(self.labels),
            intra_op_threads,
        )

    def lower_thresholds(self, floors: Mapping[str, float]) -> None:
        """Report these labels down to these scores (what the cameras' own per-class
        thresholds need); call before the detector is shared with cameras."""
        for label, value in floors.items():
            if label in self.labels:
                index = self.labels.index(label)
                self._thresholds[index] = min(float(self._thresholds[index]), value)
        self._score_floor = float(self._thresholds.min())

    @classmethod
    def from_config(
        cls, config: DetectorConfig, *, model_dir: Path, intra_op_threads: int | None = None
    ) -> Detector:
        """Build from the `[detector]` section. An empty `model`/`classes` means the shipped
        file in `model_dir` (`paths.model_dir`); a path that is set is used as written.
        `intra_op_threads` overrides the section's (the service's plan for its workers)."""
        model = config.model or model_dir / SHIPPED_MODEL[config.variant]
        classes = config.classes or model_dir / SHIPPED_CLASSES
        return cls(
            model=model,
            classes=classes,
            threshold=config.threshold,
            class_thresholds=config.class_thresholds,
            iou_threshold=config.iou_threshold,
            intra_op_threads=intra_op_threads or config.intra_op_threads,
            decoder=config.decoder,
        )

    @property
    def input_spec(self) -> InputSpec:
        return self.decoder.input_spec

    def run_raw(self, tensor: npt.NDArray[np.float32]) -> list[np.ndarray]:
        """One plain model run on an already prepared input tensor."""
        try:
            return list(self.session.run(None, {self.input_name: tensor}))
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise InferenceError(f"model run failed ({self.model_path}): {exc}") from exc

    def detect(self, frame_bgr: np.ndarray) -> list[Detection]:
        """Detections in one BGR frame (H×W×3 uint8; H×W grey is accepted), best first."""
        prepared = self.prepare(frame_bgr)
        return self.finish(self.run_raw(prepared.tensor), prepared)

    def prepare(self, frame_bgr: np.ndarray, *, buffer: int = 0) -> Prepared:
        """`detect()` in three steps, for a caller that keeps a frame in the model while it
        prepares the next: `prepare`, `run_raw(prepared.tensor)`, `finish`. Each thread has
        two input tensors (`buffer` 0 or 1): one stays valid while the other is prepared."""
        frame = self._check_frame(frame_bgr)
        # Input tensors per thread: inference workers may share this detector.
        boxers: list[Letterboxer] | None = getattr(self._local, "letterboxers", None)
        if boxers is None:
            boxers = self._local.letterboxers = []
        while len(boxers) <= buffer:
            boxers.append(Letterboxer(self.decoder.input_spec))
        tensor, fit = boxers[buffer](frame)
        return Prepared(tensor, fit, frame.shape[1], frame.shape[0])

    def finish(self, outputs: Sequence[np.ndarray], prepared: Prepared) -> list[Detection]:
        """The detections from one run's outputs (see `prepare`)."""
        candidates = self.decoder.decode(outputs, self._score_floor)
        return self._finish(candidates, prepared.fit, prepared.width, prepared.height)

    @staticmethod
    def _check_frame(frame: np.ndarray) -> np.ndarray:
        if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8:
            raise InferenceError(
                f"frame must be a uint8 numpy array, got {type(frame).__name__}"
                f"{'' if not isinstance(frame, np.ndarray) else ' of ' + str(frame.dtype)}"
            )
        if frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] == 1):
            frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
        elif frame.ndim == 3 and frame.shape[2] == 4:
            frame = cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.shape[0] < 1 or frame.shape[1] < 1:
            raise InferenceError(f"frame must be H×W×3 (BGR), got shape {frame.shape}")
        return frame

    def _finish(self, c: Candidates, fit: Letterbox, width: int, height: int) -> list[Detection]:
        keep = c.scores >= self._thresholds[c.class_ids]
        boxes, scores, class_ids = c.boxes[keep], c.scores[keep], c.class_ids[keep]
        if scores.size == 0:
            return []
        boxes = boxes.copy()
        boxes[:, [0, 2]] = np.clip((boxes[:, [0, 2]] - fit.pad_x) / fit.scale, 0, width)
        boxes[:, [1, 3]] = np.clip((boxes[:, [1, 3]] - fit.pad_y) / fit.scale, 0, height)
        # A box that lay in the letterbox padding has nothing left inside the frame.
        visible = (boxes[:, 2] - boxes[:, 0] >= 1) & (boxes[:, 3] - boxes[:, 1] >= 1)
        boxes, scores, class_ids = boxes[visible], scores[visible], class_ids[visible]
        if scores.size == 0:
            return []
        # Offsetting each class into its own region makes one NMS pass class-wise.
        offset = class_ids.astype(np.float32)[:, None] * (max(width, height) + 1.0)
        kept = nms(boxes + offset, scores, self.iou_threshold)[: self.max_detections]
        return [
            Detection(
                class_id=int(class_ids[i]),
                label=self.labels[int(class_ids[i])],
                score=float(scores[i]),
                box=(
                    float(boxes[i, 0]),
                    float(boxes[i, 1]),
                    float(boxes[i, 2]),
                    float(boxes[i, 3]),
                ),
            )
            for i in kept
        ]
