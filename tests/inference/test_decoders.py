"""Decoders: YOLOv8 against a graph with known outputs, and both decoders against each other."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edge_agent.errors import InferenceError
from edge_agent.inference.detector import Detector

from .conftest import iou, read_image

OPSET = [helper.make_opsetid("", 17)]

# (cx, cy, w, h, score a, score b, score c) in 64 × 64 input pixels.
YOLO_ROWS = np.array(
    [
        [32, 20, 20, 10, 0.1, 0.9, 0.05],  # b 0.9 → kept
        [33, 21, 20, 10, 0.1, 0.8, 0.0],  # b 0.8, overlaps the first → suppressed
        [32, 20, 20, 10, 0.0, 0.0, 0.7],  # c 0.7, same box, other class → kept
        [10, 50, 8, 8, 0.2, 0.0, 0.0],  # a 0.2 → under the 0.35 threshold
        [60, 60, 20, 20, 0.6, 0.0, 0.0],  # a 0.6, crosses the edge → clipped
    ],
    np.float32,
)


def _constant_output_model(path: Path, table: np.ndarray, *, size: int = 64) -> Path:
    """A model whose output is `table` (plus 0 × the input, so the input is really used)."""
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["mean"], keepdims=0),
        helper.make_node("Mul", ["mean", "zero"], ["nothing"]),
        helper.make_node("Add", ["table", "nothing"], ["output0"]),
    ]
    graph = helper.make_graph(
        nodes,
        "constant_yolo",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, list(table.shape))],
        initializer=[
            numpy_helper.from_array(table.astype(np.float32), "table"),
            numpy_helper.from_array(np.array(0, np.float32), "zero"),
        ],
    )
    model = helper.make_model(graph, opset_imports=OPSET)
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture
def yolo_model(tmp_path: Path) -> Path:
    return _constant_output_model(tmp_path / "yolo.onnx", YOLO_ROWS.T[None])


def test_yolov8_decoder_on_known_outputs(yolo_model: Path) -> None:
    detector = Detector(model=yolo_model, classes=["a", "b", "c"], threshold=0.35)
    assert detector.decoder.kind == "yolov8"
    found = detector.detect(np.zeros((64, 64, 3), np.uint8))
    assert [(d.label, round(d.score, 3)) for d in found] == [("b", 0.9), ("c", 0.7), ("a", 0.6)]
    assert found[0].box == pytest.approx((22, 15, 42, 25))
    assert found[1].box == pytest.approx((22, 15, 42, 25))
    assert found[2].box == pytest.approx((50, 50, 64, 64))


def test_yolov8_boxes_map_back_to_a_wider_frame(yolo_model: Path) -> None:
    detector = Detector(model=yolo_model, classes=["a", "b", "c"], threshold=0.35)
    # 128 × 64 → scale 0.5 into 64 × 32, padded by 16 rows above and below.
    found = detector.detect(np.zeros((64, 128, 3), np.uint8))
    assert found[0].label == "b"
    assert found[0].box == pytest.approx((44, 0, 84, 18))
    # The "a" box lies in the bottom padding once mapped back: nothing of it is in the frame.
    assert [d.label for d in found] == ["b", "c"]


def test_yolov8_transposed_export_and_class_threshold(tmp_path: Path) -> None:
    model = _constant_output_model(tmp_path / "yolo_t.onnx", YOLO_ROWS[None])
    detector = Detector(
        model=model, classes=["a", "b", "c"], threshold=0.35, class_thresholds={"a": 0.15}
    )
    found = detector.detect(np.zeros((64, 64, 3), np.uint8))
    assert sorted(d.label for d in found) == ["a", "a", "b", "c"]
    small = next(d for d in found if d.score < 0.3)
    assert small.box == pytest.approx((6, 46, 14, 54))


def test_yolov8_class_count_mismatch(yolo_model: Path) -> None:
    with pytest.raises(InferenceError, match="class list"):
        Detector(model=yolo_model, classes=["a", "b"])


def test_unrecognised_outputs_are_an_inference_error(tmp_path: Path) -> None:
    nodes = [
        helper.make_node("Identity", ["images"], ["out_a"]),
        helper.make_node("Identity", ["images"], ["out_b"]),
    ]
    graph = helper.make_graph(
        nodes,
        "odd",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 8, 8])],
        [
            helper.make_tensor_value_info("out_a", TensorProto.FLOAT, [1, 3, 8, 8]),
            helper.make_tensor_value_info("out_b", TensorProto.FLOAT, [1, 3, 8, 8]),
        ],
    )
    model = helper.make_model(graph, opset_imports=OPSET)
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "odd.onnx"))
    with pytest.raises(InferenceError, match="not a NanoDet head"):
        Detector(model=tmp_path / "odd.onnx", classes=["x", "y", "z"])


def _nanodet_as_yolov8(nanodet: Path, out: Path) -> Path:
    """Wrap the NanoDet graph so it looks like a YOLOv8 export: RGB/255 in, [1, 84, N] out.

    The GFL decoding (softmax over bins, expected bin × stride, distances from cell centres)
    is written in ONNX ops here, independently of the numpy NanoDet decoder."""
    model = onnx.load(str(nanodet))
    graph = model.graph
    size, reg_bins = 416, 11
    inits = {
        "rgb_to_bgr": np.array([2, 1, 0], np.int64),
        "k255": np.array(255, np.float32),
        "mean": np.array([103.53, 116.28, 123.675], np.float32).reshape(1, 3, 1, 1),
        "std": np.array([57.375, 57.12, 58.395], np.float32).reshape(1, 3, 1, 1),
        "bins": np.arange(reg_bins, dtype=np.float32).reshape(reg_bins, 1),
        "half": np.array(0.5, np.float32),
        "lt_start": np.array([0], np.int64),
        "lt_end": np.array([2], np.int64),
        "rb_end": np.array([4], np.int64),
        "axis2": np.array([2], np.int64),
    }
    preprocess = [
        helper.make_node("Gather", ["images", "rgb_to_bgr"], ["bgr01"], axis=1),
        helper.make_node("Mul", ["bgr01", "k255"], ["bgr"]),
        helper.make_node("Sub", ["bgr", "mean"], ["centred"]),
        helper.make_node("Div", ["centred", "std"], ["input"]),
    ]
    nodes: list[onnx.NodeProto] = []
    per_stride = []
    for stride in (8, 16, 32):
        cells = (size // stride) ** 2
        ys, xs = np.mgrid[0 : size // stride, 0 : size // stride].astype(np.float32)
        centres = np.stack([(xs.ravel() + 0.5) * stride, (ys.ravel() + 0.5) * stride], 1)
        inits[f"centres{stride}"] = centres[None]
        inits[f"shape{stride}"] = np.array([1, cells, 4, reg_bins], np.int64)
        inits[f"flat{stride}"] = np.array([1, cells, 4], np.int64)
        inits[f"stride{stride}"] = np.array(stride, np.float32)
        s = str(stride)
        nodes += [
            helper.make_node("Reshape", [f"dist_{s}", f"shape{s}"], [f"d4_{s}"]),
            helper.make_node("Softmax", [f"d4_{s}"], [f"p_{s}"], axis=-1),
            helper.make_node("MatMul", [f"p_{s}", "bins"], [f"e_{s}"]),
            helper.make_node("Reshape", [f"e_{s}", f"flat{s}"], [f"e3_{s}"]),
            helper.make_node("Mul", [f"e3_{s}", f"stride{s}"], [f"ltrb_{s}"]),
            helper.make_node("Slice", [f"ltrb_{s}", "lt_start", "lt_end", "axis2"], [f"lt_{s}"]),
            helper.make_node("Slice", [f"ltrb_{s}", "lt_end", "rb_end", "axis2"], [f"rb_{s}"]),
            helper.make_node("Sub", [f"rb_{s}", f"lt_{s}"], [f"shift2_{s}"]),
            helper.make_node("Mul", [f"shift2_{s}", "half"], [f"shift_{s}"]),
            helper.make_node("Add", [f"centres{s}", f"shift_{s}"], [f"cxcy_{s}"]),
            helper.make_node("Add", [f"lt_{s}", f"rb_{s}"], [f"wh_{s}"]),
            helper.make_node("Concat", [f"cxcy_{s}", f"wh_{s}", f"cls_{s}"], [f"rows_{s}"], axis=2),
        ]
        per_stride.append(f"rows_{s}")
    nodes += [
        helper.make_node("Concat", per_stride, ["rows"], axis=1),
        helper.make_node("Transpose", ["rows"], ["output0"], perm=[0, 2, 1]),
    ]
    old_input = graph.input[0]
    graph.input.remove(old_input)
    graph.input.append(
        helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, size, size])
    )
    original = list(graph.node)
    del graph.node[:]
    graph.node.extend([*preprocess, *original, *nodes])
    graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in inits.items())
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 84, 3549]))
    onnx.checker.check_model(model)
    onnx.save(model, str(out))
    return out


@pytest.mark.parametrize("photo", ["astronaut.png", "messi5.jpg", "basketball1.png"])
def test_nanodet_and_yolov8_decoders_agree(
    photo: str, detector: Detector, model_dir: Path, media_dir: Path, tmp_path: Path
) -> None:
    wrapped = _nanodet_as_yolov8(model_dir / "nanodet.onnx", tmp_path / "wrapped.onnx")
    as_yolo = Detector(model=wrapped, classes=model_dir / "coco.names", decoder="auto")
    assert as_yolo.decoder.kind == "yolov8"
    assert detector.decoder.kind == "nanodet"
    # A 416 × 416 frame needs no padding, where the two input conventions differ.
    frame = cv2.resize(read_image(media_dir, photo), (416, 416), interpolation=cv2.INTER_AREA)
    nano, yolo = detector.detect(frame), as_yolo.detect(frame)
    assert len(nano) >= 1
    assert [d.label for d in nano] == [d.label for d in yolo]
    for a, b in zip(nano, yolo, strict=True):
        assert a.score == pytest.approx(b.score, abs=1e-3)
        assert a.box == pytest.approx(b.box, abs=0.5)
        assert iou(a.box, b.box) > 0.99
