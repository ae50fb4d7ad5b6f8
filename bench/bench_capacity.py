"""Capacity of one node: how many cameras one agent analyses at 5 fps.

  1. Where a frame's time goes, in-process on the H.264 clip: decode (grab + retrieve),
     letterbox, inference (onnxruntime), output decoding and NMS, classes + tracking +
     analytics; each as a share of the whole.
  2. 1, 2, 4, 6 and 8 RTSP streams (the test RTSP server, tests/camera/rtsp_server.py,
     serving vtest.avi as H.264 on loopback) to one `edge-agent run` at 5 fps each, motion
     gate on, fp32 and int8: analysed fps per camera (ratio to the 5 fps asked), frames
     dropped (overwritten before analysis), CPU (cores) and RSS, beside the same agent with
     no camera (the baseline RSS). The RTSP server runs on the same cores.

Runs are long and load the whole machine: keep full runs few on a shared machine.
Needs models/, media/, ffmpeg and the RTSP server's Debian packages (scripts/setup).
Usage: python bench/bench_capacity.py [--cameras 1,2,4,6,8] [--variants fp32,int8]
       [--seconds 30] [--quick]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import cv2
import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from edge_agent.config import CameraConfig  # noqa: E402
from edge_agent.inference.analytics import TrafficAnalytics  # noqa: E402
from edge_agent.inference.classes import ClassFilter  # noqa: E402
from edge_agent.inference.detector import Detector, letterbox  # noqa: E402
from edge_agent.inference.tracker import Tracker  # noqa: E402

MODELS = REPO / "models"
VTEST = REPO / "media" / "vtest.avi"
RTSP_SERVER = REPO / "tests" / "camera" / "rtsp_server.py"
FPS = 5.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def h264_clip(workdir: Path) -> Path:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise SystemExit("ffmpeg not found: install the Debian package ffmpeg")
    clip = workdir / "vtest.mp4"
    subprocess.run(
        [ffmpeg, "-loglevel", "error", "-y", "-i", str(VTEST), "-an", "-c:v", "libx264",
         "-preset", "veryfast", "-g", "10", "-pix_fmt", "yuv420p", str(clip)],
        check=True,
    )  # fmt: skip
    return clip


def stages(clip: Path, variant: str, frames: int) -> None:
    model = MODELS / ("nanodet.onnx" if variant == "fp32" else "nanodet.int8.onnx")
    detector = Detector(model=model, classes=MODELS / "coco.names")
    config = CameraConfig(name="c", source="x", fps=FPS)
    keep, tracker, analytics = ClassFilter.from_config(config), Tracker(), TrafficAnalytics(config)
    capture = cv2.VideoCapture(str(clip))
    spent = dict.fromkeys(("decode", "letterbox", "inference", "outputs", "tracking"), 0.0)
    done = 0
    index = 0
    while done < frames:
        t0 = time.perf_counter()
        if not capture.grab():
            break
        index += 1
        if index % 2:  # 10 fps source, 5 fps analysed: the other frame is only grabbed
            spent["decode"] += time.perf_counter() - t0
            continue
        _, frame = capture.retrieve()
        t1 = time.perf_counter()
        tensor, _ = letterbox(frame, detector.input_spec)
        t2 = time.perf_counter()
        detector.run_raw(tensor)
        t3 = time.perf_counter()
        # The whole detect() again: what it costs beyond letterbox and inference is the
        # output decoding and NMS.
        found = detector.detect(frame)
        t4 = time.perf_counter()
        tracks = tracker.update(keep.apply(found), done / FPS)
        analytics.update(tracks, done / FPS, frame.shape[1], frame.shape[0])
        t5 = time.perf_counter()
        spent["decode"] += t1 - t0
        spent["letterbox"] += t2 - t1
        spent["inference"] += t3 - t2
        spent["outputs"] += max(0.0, (t4 - t3) - (t3 - t1))
        spent["tracking"] += t5 - t4
        done += 1
    capture.release()
    total = sum(spent.values())
    print(f"   {variant}: {done} analysed frames, {total / done * 1000:.1f} ms per analysed frame")
    for name, seconds in spent.items():
        print(f"     {name:10s} {seconds / done * 1000:7.2f} ms  share {seconds / total:.3f}")


def agent_config(workdir: Path, tag: str, urls: list[str], variant: str, web_port: int) -> Path:
    cameras = "".join(
        f'[[cameras]]\nname = "cam{i + 1}"\nsource = "{url}"\nfps = {FPS}\ncount_interval_s = 60\n'
        for i, url in enumerate(urls)
    )
    path = workdir / f"agent-{tag}.toml"
    path.write_text(
        "sensors = []\n"
        + ("" if urls else "cameras = []\n")
        + f'[paths]\nstate_dir = "{workdir / ("state-" + tag)}"\nmodel_dir = "{MODELS}"\n'
        + f'[web]\nenabled = true\nhost = "127.0.0.1"\nport = {web_port}\n'
        + f'[detector]\nvariant = "{variant}"\n'
        + cameras
    )
    return path


def status(port: int) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=2) as reply:
            return dict(json.loads(reply.read()))
    except OSError:
        return None


def counters(snapshot: dict[str, Any], prefix: str, counter: str) -> dict[str, float]:
    return {
        c["name"]: float(c["counters"].get(counter, 0))
        for c in snapshot["components"]
        if c["name"].startswith(prefix)
    }


def run_agent(
    workdir: Path, tag: str, urls: list[str], variant: str, seconds: float
) -> dict[str, Any]:
    port = free_port()
    config = agent_config(workdir, tag, urls, variant, port)
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_AGENT_")}
    env.update(PYTHONPATH=str(REPO), EDGE_AGENT_MQTT__ENABLED="false")
    agent = subprocess.Popen(
        [sys.executable, "-m", "edge_agent", "run", "--config", str(config)],
        cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        process = psutil.Process(agent.pid)
        deadline = time.monotonic() + 90
        first = None
        while time.monotonic() < deadline:
            first = status(port)
            analysed = counters(first, "analysis:", "frames_analysed") if first else {}
            if len(analysed) == len(urls) and all(v > 0 for v in analysed.values()):
                break
            time.sleep(0.5)
        else:
            raise RuntimeError(f"{tag}: the agent's cameras did not start within 90 s")
        time.sleep(3)  # past the start-up burst
        before, cpu0, t0 = status(port), process.cpu_times(), time.monotonic()
        rss = [process.memory_info().rss]
        while time.monotonic() - t0 < seconds:
            time.sleep(1)
            rss.append(process.memory_info().rss)
        after, cpu1, wall = status(port), process.cpu_times(), time.monotonic() - t0
    finally:
        agent.send_signal(signal.SIGTERM)
        try:
            agent.wait(timeout=30)
        except subprocess.TimeoutExpired:
            agent.kill()
            agent.wait()
    assert before is not None and after is not None
    fps = {}
    drops = {}
    for name, value in counters(after, "analysis:", "frames_analysed").items():
        fps[name] = (value - counters(before, "analysis:", "frames_analysed")[name]) / wall
    for name, value in counters(after, "camera:", "frames_dropped").items():
        drops[name] = value - counters(before, "camera:", "frames_dropped").get(name, 0.0)
    cpu = (cpu1.user - cpu0.user + cpu1.system - cpu0.system) / wall
    return {"fps": fps, "drops": drops, "cpu": cpu, "rss_mib": max(rss) / 2**20, "wall": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cameras", default="1,2,4,6,8")
    parser.add_argument("--variants", default="fp32,int8")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--stage-frames", type=int, default=150)
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    args = parser.parse_args()
    if args.quick:
        parser.set_defaults(cameras="1,2", variants="int8", seconds=8.0, stage_frames=30)
        args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    for needed in (VTEST, MODELS / "nanodet.onnx", MODELS / "nanodet.int8.onnx"):
        if not needed.is_file():
            raise SystemExit(
                f"{needed} missing: run scripts/build-model --int8, scripts/fetch-media"
            )
    variants = args.variants.split(",")
    counts = [int(n) for n in args.cameras.split(",")]
    print(
        f"cpu cores: {os.cpu_count()}, load average {os.getloadavg()[0]:.2f}"
        " (other work shares them)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        clip = h264_clip(workdir)
        print("\n1. where an analysed frame's time goes (in-process, one camera, gate off)")
        for variant in variants:
            stages(clip, variant, args.stage_frames)
        port = free_port()
        server = subprocess.Popen(
            ["/usr/bin/python3", str(RTSP_SERVER), str(clip), str(port)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert server.stdout is not None
            if server.stdout.readline().strip() != "ready":
                raise SystemExit(f"RTSP server did not start: {server.communicate()[1]}")
            url = f"rtsp://127.0.0.1:{port}/stream"
            print("\n2. one agent, N RTSP cameras at 5 fps each, motion gate on")
            bare = run_agent(workdir, "none", [], variants[0], min(args.seconds, 10.0))
            print(
                f"   no camera: RSS {bare['rss_mib']:.0f} MiB, CPU {bare['cpu']:.2f} cores"
                " (baseline)"
            )
            header = (
                "   variant cams  fps/cam (min)  ratio  dropped/s  CPU cores  RSS MiB  RSS/none"
            )
            print(header)
            for variant in variants:
                for n in counts:
                    r = run_agent(workdir, f"{variant}-{n}", [url] * n, variant, args.seconds)
                    rates = list(r["fps"].values())
                    mean = sum(rates) / len(rates)
                    dropped = sum(r["drops"].values()) / r["wall"]
                    print(
                        f"   {variant:7s} {n:4d}  {mean:5.2f} ({min(rates):4.2f})"
                        f"   {mean / FPS:5.2f}  {dropped:9.2f}  {r['cpu']:9.2f}"
                        f"  {r['rss_mib']:7.0f}"
                        f"  {r['rss_mib'] / bare['rss_mib']:8.2f}",
                        flush=True,
                    )
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.communicate()
    print(
        "   aims: 8 cameras int8 at ratio 1.00 without drops on 2 cores;"
        " RSS with one camera <= 150 MB"
    )


if __name__ == "__main__":
    main()
