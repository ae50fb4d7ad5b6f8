"""Capacity of one node: how many cameras one agent analyses at 5 fps.

  1. Where an analysed frame's time goes, in-process on the H.264 clip (10 fps, every other
     frame analysed, gate on as in the agent): grab (H.264 decode of every frame), retrieve
     (YUV to BGR of the analysed ones), motion gate, letterbox, model run, outputs (decoding
     and NMS), classes + tracking + analytics. CPU per analysed frame for each, with the
     model run both ways the service can run it (one run at a time on 2 threads, or runs on
     1 thread each, side by side), and what that makes: cameras at 5 fps per 2 cores.
  2. Batching: whether the model takes more than one frame per run, and (with `onnx`
     installed) what a batch of 4 would save per frame on a batch-capable copy of it.
  3. Memory of one camera, part by part (bench/capacity_memory.py in a fresh interpreter
     each): imports, the session (arena and memory pattern both ways), the video, frames
     in flight, snapshots; the baseline is the agent without a camera.
  4. 1, 2, 4, 6 and 8 RTSP streams (the test RTSP server, tests/camera/rtsp_server.py,
     serving vtest.avi as H.264 on loopback) to one `edge-agent run` at 5 fps each, motion
     gate on, fp32 and int8: analysed fps per camera (ratio to the 5 fps asked), frames
     dropped (overwritten before analysis), CPU (cores) and RSS, beside the same agent with
     no camera (the baseline RSS). The RTSP server runs on the same cores. `--env K=V`
     runs the agents with that environment too (e.g. the allocator settings for the unit).

Runs are long and load the whole machine: keep full runs few on a shared machine.
Needs models/, media/, ffmpeg and the RTSP server's Debian packages (scripts/setup).
Usage: python bench/bench_capacity.py [--cameras 1,2,4,6,8] [--variants fp32,int8]
       [--seconds 30] [--env MALLOC_ARENA_MAX=2 ...] [--skip-agents] [--quick]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
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

from capacity_batching import batching  # noqa: E402  (bench/ is the script's directory)

from edge_agent.config import CameraConfig  # noqa: E402
from edge_agent.inference.detector import Detector  # noqa: E402
from edge_agent.inference.pipeline import FrameAnalyzer  # noqa: E402

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


def process_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def stages(clip: Path, variant: str, frames: int) -> None:
    model = MODELS / ("nanodet.onnx" if variant == "fp32" else "nanodet.int8.onnx")
    config = CameraConfig(name="c", source="x", fps=FPS)
    runs = {
        f"{threads} thread{'s' if threads > 1 else ''} per run": Detector(
            model=model, classes=MODELS / "coco.names", intra_op_threads=threads
        )
        for threads in (2, 1)
    }
    detector = next(iter(runs.values()))
    analyzer = FrameAnalyzer(config, detector.detect)
    capture = cv2.VideoCapture(str(clip), cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1])
    spent = dict.fromkeys(("grab", "retrieve", "gate", "letterbox", "outputs", "tracking"), 0.0)
    model_cpu = dict.fromkeys(runs, 0.0)
    model_wall = dict.fromkeys(runs, 0.0)
    done = index = detected = 0
    # Thread CPU for the single-threaded stages; the whole process's CPU for a model run
    # (onnxruntime's pool threads work for it too).
    clock = time.thread_time
    while done < frames:
        t0 = clock()
        if not capture.grab():
            break
        index += 1
        spent["grab"] += clock() - t0
        if index % 2:  # 10 fps source, 5 fps analysed: the other frame is only grabbed
            continue
        t0 = clock()
        _, frame = capture.retrieve()
        t1 = clock()
        step = analyzer.begin(frame, done / FPS)
        t2 = clock()
        spent["retrieve"] += t1 - t0
        spent["gate"] += t2 - t1
        detections = None
        if step.detect:
            detected += 1
            t0 = clock()
            prepared = detector.prepare(frame)
            spent["letterbox"] += clock() - t0
            for name, each in runs.items():
                c0, w0 = process_cpu(), time.perf_counter()
                outputs = each.run_raw(prepared.tensor)
                model_cpu[name] += process_cpu() - c0
                model_wall[name] += time.perf_counter() - w0
            t0 = clock()
            detections = detector.finish(outputs, prepared)
            spent["outputs"] += clock() - t0
        t0 = clock()
        analyzer.complete(step, detections)
        spent["tracking"] += clock() - t0
        done += 1
    capture.release()
    per_frame = {k: v / done * 1000 for k, v in spent.items()}
    print(
        f"   {variant}: {done} analysed frames ({detected} through the detector), CPU ms"
        " per analysed frame:"
    )
    for name in runs:
        run_ms = model_cpu[name] / max(detected, 1) * 1000 * detected / done
        total = sum(per_frame.values()) + run_ms
        wall_ms = model_wall[name] / max(detected, 1) * 1000
        print(f"     model run, {name}: {run_ms:6.2f} ms (wall {wall_ms:.2f})")
        line = ", ".join(f"{k} {v:.2f} ({v / total:.1%})" for k, v in per_frame.items())
        print(f"       beside it: {line}; total {total:.1f} ms, the run {run_ms / total:.1%}")
        print(
            f"       2 cores / ({FPS:g} fps x {total:.1f} ms) = {2000 / (FPS * total):.1f}"
            " cameras if nothing else ran"
        )


def memory(workdir: Path, clip: Path, env: dict[str, str]) -> None:
    script = Path(__file__).resolve().parent / "capacity_memory.py"
    runs = [("int8", "1", "0", {}), ("int8", "1", "1", {}), ("int8", "0", "0", {})]
    runs += [("fp32", "1", "0", {})]
    if env:
        runs.append(("int8", "1", "0", env))
    for variant, arena, pattern, extra in runs:
        command = [sys.executable, str(script), variant, arena, pattern, str(clip)]
        child = subprocess.run(
            [*command, str(workdir / "snap")],
            capture_output=True, text=True, check=True, env={**os.environ, **extra},
        )  # fmt: skip
        steps = [json.loads(line) for line in child.stdout.splitlines()]
        label = f"{variant}, arena {'on' if arena == '1' else 'off'}, memory pattern "
        label += f"{'on' if pattern == '1' else 'off'}"
        label += "".join(f", {k}={v}" for k, v in extra.items())
        print(f"   {label}:")
        base = next(s for s in steps if s["step"] == "agent without a camera")
        previous = None
        for item in steps:
            if previous is not None and item["step"] != "agent without a camera":
                print(
                    f"     {item['step']:42s} +{item['VmRSS'] - previous['VmRSS']:5.1f} MiB"
                    f" (anon {item['RssAnon'] - previous['RssAnon']:+5.1f},"
                    f" files {item['RssFile'] - previous['RssFile']:+5.1f})"
                )
            previous = item
        last = steps[-1]
        print(
            f"     one camera in all {last['VmRSS']:6.1f} MiB (anon {last['RssAnon']:.1f},"
            f" files {last['RssFile']:.1f}); baseline, no camera, {base['VmRSS']:.1f} MiB:"
            f" ratio {last['VmRSS'] / base['VmRSS']:.2f}; aim <= 150 MB = 143.1 MiB"
        )


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
    workdir: Path,
    tag: str,
    urls: list[str],
    variant: str,
    seconds: float,
    extra_env: dict[str, str] | None = None,
) -> dict[str, Any]:
    port = free_port()
    config = agent_config(workdir, tag, urls, variant, port)
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_AGENT_")}
    env.update(PYTHONPATH=str(REPO), EDGE_AGENT_MQTT__ENABLED="false", **(extra_env or {}))
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
    parser.add_argument(
        "--env", action="append", default=[], metavar="KEY=VALUE",
        help="also run the agents (and the memory steps) with this environment",
    )  # fmt: skip
    parser.add_argument("--skip-agents", action="store_true", help="sections 1-3 only")
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
    extra = dict(item.split("=", 1) for item in args.env)
    print(
        f"cpu cores: {os.cpu_count()}, load average {os.getloadavg()[0]:.2f}"
        " (other work shares them)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        clip = h264_clip(workdir)
        print("\n1. where an analysed frame's time goes (in-process, one camera, gate on)")
        for variant in variants:
            stages(clip, variant, args.stage_frames)
        print("\n2. batching frames of several cameras into one model run")
        for variant in variants:
            batching(variant)
        print("\n3. memory of one camera, part by part (a fresh interpreter each)")
        memory(workdir, clip, extra)
        if args.skip_agents:
            return
        agents(workdir, clip, variants, counts, args.seconds, extra)
    print(
        "   aims: 8 cameras int8 at ratio 1.00 without drops on 2 cores;"
        " RSS with one camera <= 150 MB"
    )


def agents(
    workdir: Path,
    clip: Path,
    variants: list[str],
    counts: list[int],
    seconds: float,
    extra: dict[str, str],
) -> None:
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
        print("\n4. one agent, N RTSP cameras at 5 fps each, motion gate on")
        bare = run_agent(workdir, "none", [], variants[0], min(seconds, 10.0))
        print(
            f"   no camera: RSS {bare['rss_mib']:.0f} MiB, CPU {bare['cpu']:.2f} cores (baseline)"
        )
        print("   variant cams  fps/cam (min)  ratio  dropped/s  CPU cores  RSS MiB  RSS/none")
        environments = [("", {})] + ([(" (with --env)", extra)] if extra else [])
        for label, env in environments:
            for variant in variants:
                for n in counts:
                    tag = f"{variant}-{n}{'-env' if env else ''}"
                    r = run_agent(workdir, tag, [url] * n, variant, seconds, env)
                    rates = list(r["fps"].values())
                    mean = sum(rates) / len(rates)
                    dropped = sum(r["drops"].values()) / r["wall"]
                    print(
                        f"   {variant:7s} {n:4d}  {mean:5.2f} ({min(rates):4.2f})"
                        f"   {mean / FPS:5.2f}  {dropped:9.2f}  {r['cpu']:9.2f}"
                        f"  {r['rss_mib']:7.0f}"
                        f"  {r['rss_mib'] / bare['rss_mib']:8.2f}{label}",
                        flush=True,
                    )
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.communicate()


if __name__ == "__main__":
    main()
