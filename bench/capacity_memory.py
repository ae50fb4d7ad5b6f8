"""Resident memory of one camera, part by part, for bench_capacity.py.

Run as a child process (a fresh interpreter per configuration):

    python bench/capacity_memory.py VARIANT ARENA MEM_PATTERN

It imports and builds what an agent with one camera has, in the agent's order, and prints
one JSON line per step: the step, RSS, and its anonymous and file-backed parts (RssAnon,
RssFile from /proc/self/status). ARENA and MEM_PATTERN (1/0) are onnxruntime's
enable_cpu_mem_arena and enable_mem_pattern for the session step.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
CLIP_FRAMES = 150


def status() -> dict[str, float]:
    fields = {}
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile"):
                fields[key] = int(value.split()[0]) / 1024
    return fields


def step(name: str) -> None:
    print(json.dumps({"step": name, **status()}), flush=True)


def main() -> None:
    variant, arena, pattern = sys.argv[1], sys.argv[2] == "1", sys.argv[3] == "1"
    clip = Path(sys.argv[4])
    step("python")
    import edge_agent.app
    import edge_agent.cli  # noqa: F401

    step("agent without a camera")
    import numpy  # noqa: F401

    step("numpy")
    import cv2

    step("cv2")
    import onnxruntime  # noqa: F401

    step("onnxruntime")
    from edge_agent.config import CameraConfig
    from edge_agent.inference.detector import SHIPPED_MODEL, Detector, session_options
    from edge_agent.inference.pipeline import FrameAnalyzer
    from edge_agent.inference.snapshots import SnapshotStore

    step("edge_agent.inference")
    options = session_options(2)
    options.enable_cpu_mem_arena = arena
    options.enable_mem_pattern = pattern
    detector = Detector(
        model=REPO / "models" / SHIPPED_MODEL[variant],
        classes=REPO / "models" / "coco.names",
        options=options,
    )
    step("detector loaded and warmed up (one run)")
    capture = cv2.VideoCapture(str(clip), cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1])
    ok, frame = capture.read()
    assert ok
    step("video opened, first frame decoded")
    analyzer = FrameAnalyzer(CameraConfig(name="c", source="x", fps=5), detector.detect)
    latest = frame
    for index in range(CLIP_FRAMES):
        ok, frame = capture.read()
        if not ok:
            break
        if index % 2:
            continue  # 10 fps source, 5 fps analysed
        latest = frame
        analyzer.analyse(frame, index / 10)
    step(f"{CLIP_FRAMES // 2} frames analysed (gate on)")
    store = SnapshotStore(Path(sys.argv[5]), max_count=50, max_bytes=10_000_000)
    for index in range(20):
        store.save(latest, f"s{index}")
    step("20 snapshots saved")


if __name__ == "__main__":
    main()
