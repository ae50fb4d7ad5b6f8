"""The `detect` command's arguments, kept apart so building the CLI imports no OpenCV."""

from __future__ import annotations

import argparse
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
