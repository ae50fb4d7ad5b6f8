"""The `detect` command's arguments, kept apart so building the CLI imports no OpenCV."""

from __future__ import annotations

import argparse
from datetime import datetime
from pathlib import Path


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be within 0..1, got {text}")
    return value


def _stride(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {text}")
    return value


def _utc_time(text: str) -> float:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"needs a time zone, e.g. {text}Z or {text}+07:00")
    return moment.timestamp()


def add_detect_arguments(parser: argparse.ArgumentParser) -> None:
    """The `detect` subcommand's options, for the CLI to attach to its subparser."""
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE", help="images or videos")
    parser.add_argument("--model", type=Path, help="ONNX model (default: the shipped NanoDet)")
    parser.add_argument("--classes", type=Path, help="class list, one name per line")
    parser.add_argument(
        "--threshold", type=_fraction, metavar="T", help="lowest score reported (0..1)"
    )
    parser.add_argument(
        "--decoder", choices=["auto", "nanodet", "yolov8"], help="model output format"
    )
    parser.add_argument(
        "--every", type=_stride, default=1, metavar="N", help="analyse every Nth video frame"
    )
    parser.add_argument(
        "--analytics",
        type=Path,
        metavar="CONFIG",
        help="run one camera's classes, zones, lines, movements and rules from this agent"
        " configuration on the video files and print every event as a JSON line",
    )
    parser.add_argument(
        "--camera", metavar="NAME", help="with --analytics: the camera (default: the first)"
    )
    parser.add_argument(
        "--start",
        type=_utc_time,
        metavar="TIME",
        help="with --analytics: wall time of the first frame, ISO 8601 with zone"
        " (default: the file's modification time)",
    )
