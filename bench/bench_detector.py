"""Detector throughput on street-clip frames, against plain onnxruntime in the same run.

Figures (each a ratio to a baseline measured here, on this machine, now):
  * Detector.detect (letterbox + run + decode + NMS) vs a bare session.run on prepared
    tensors, same model and thread settings: the pre/post-processing overhead;
  * int8 vs fp32 model, both bare runs and full detect;
  * int8 vs fp32 detection agreement (same label, IoU >= 0.7, fp32 score >= 0.5).

Needs models/ (scripts/build-model --int8) and media/ (scripts/fetch-media).
Usage: python bench/bench_detector.py [--frames 60] [--threads 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from edge_agent.inference.detector import (  # noqa: E402
    Detection,
    Detector,
    letterbox,
    session_options,
)


def read_frames(video: Path, count: int) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(video))
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    frames = []
    for i in range(count):
        capture.set(cv2.CAP_PROP_POS_FRAMES, i * total // count)
        ok, frame = capture.read()
        if not ok:
            raise SystemExit(f"cannot read frame {i * total // count} of {video}")
        frames.append(frame)
    capture.release()
    return frames


def rate(items: Sequence[object], work: Callable[[object], object], rounds: int) -> float:
    """Items per second, best of `rounds` passes (the least disturbed by other load)."""
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for item in items:
            work(item)
        best = min(best, time.perf_counter() - start)
    return len(items) / best


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def agreement(reference: list[list[Detection]], other: list[list[Detection]]) -> tuple[int, int]:
    matched = total = 0
    for ref, oth in zip(reference, other, strict=True):
        for d in ref:
            if d.score < 0.5:
                continue
            total += 1
            matched += any(o.label == d.label and iou(d.box, o.box) >= 0.7 for o in oth)
    return matched, total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model-dir", type=Path, default=REPO / "models")
    parser.add_argument("--media-dir", type=Path, default=REPO / "media")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    args = parser.parse_args()
    if args.quick:
        # Flags given explicitly still win over the quick sizes.
        parser.set_defaults(frames=10, rounds=1)
        args = parser.parse_args()

    frames = read_frames(args.media_dir / "vtest.avi", args.frames)
    classes = args.model_dir / "coco.names"
    fp32 = Detector(
        model=args.model_dir / "nanodet.onnx", classes=classes, intra_op_threads=args.threads
    )
    int8 = Detector(
        model=args.model_dir / "nanodet.int8.onnx", classes=classes, intra_op_threads=args.threads
    )
    tensors = [letterbox(f, fp32.input_spec)[0] for f in frames]

    def bare_session(model: Path) -> Callable[[object], object]:
        session = ort.InferenceSession(
            str(model),
            sess_options=session_options(args.threads),
            providers=["CPUExecutionProvider"],
        )
        session.run(None, {"input": tensors[0]})
        return lambda t: session.run(None, {"input": t})

    print(
        f"{len(frames)} frames of vtest.avi (768x576), {args.threads} intra-op threads, "
        f"best of {args.rounds} passes, onnxruntime {ort.__version__}"
    )
    raw32 = rate(tensors, bare_session(args.model_dir / "nanodet.onnx"), args.rounds)
    det32 = rate(frames, fp32.detect, args.rounds)  # type: ignore[arg-type]
    raw8 = rate(tensors, bare_session(args.model_dir / "nanodet.int8.onnx"), args.rounds)
    det8 = rate(frames, int8.detect, args.rounds)  # type: ignore[arg-type]

    print(f"fp32 bare session.run      {raw32:7.1f} frames/s   (baseline)")
    print(f"fp32 Detector.detect       {det32:7.1f} frames/s   ratio {det32 / raw32:.2f} of bare")
    print(
        f"int8 bare session.run      {raw8:7.1f} frames/s   ratio {raw8 / raw32:.2f} of fp32 bare"
    )
    print(
        f"int8 Detector.detect       {det8:7.1f} frames/s   ratio {det8 / det32:.2f} of fp32 detect"
    )

    ref = [fp32.detect(f) for f in frames]
    got = [int8.detect(f) for f in frames]
    m, t = agreement(ref, got)
    back_m, back_t = agreement(got, ref)
    print(f"int8 finds {m}/{t} fp32 detections (score >= 0.5): agreement {m / max(t, 1):.3f}")
    print(
        f"fp32 finds {back_m}/{back_t} int8 detections (score >= 0.5): "
        f"{back_m / max(back_t, 1):.3f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
