"""Install the plate reader's OCR models: PP-OCRv4 text detection and recognition (and the
direction classifier) as rapidocr-onnxruntime 1.4.4 ships them in its wheel (Apache-2.0).

Steps: `pip download --no-deps` the pinned wheel from PyPI into .cache/ (nothing installs:
rapidocr's dependency on opencv-python would replace our opencv-python-headless), check
its sha256, extract the three ONNX files into models/ocr/, each checked by sha256.
A second run with everything present and valid does nothing.
Usage: python scripts/fetch_ocr_models.py [--models DIR] [--cache DIR]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

import fetch_media  # noqa: E402

VERSION = "1.4.4"
WHEEL = f"rapidocr_onnxruntime-{VERSION}-py3-none-any.whl"
WHEEL_SHA256 = "971d7d5f223a7a808662229df1ef69893809d8457d834e6373d3854bc1782cbf"
FILES = {
    "ch_PP-OCRv4_det_infer.onnx":
        "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9",
    "ch_PP-OCRv4_rec_infer.onnx":
        "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b",
    "ch_ppocr_mobile_v2.0_cls_infer.onnx":
        "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c",
}  # fmt: skip
LICENSE_NOTE = (
    "PP-OCRv4 det/rec and ppocr mobile v2.0 cls (PaddleOCR, Apache-2.0), as converted to ONNX\n"
    f"and shipped by rapidocr-onnxruntime {VERSION} (RapidAI, Apache-2.0), taken unchanged from\n"
    f"its wheel {WHEEL} (sha256 {WHEEL_SHA256}).\n"
)


def progress(message: str) -> None:
    print(f"fetch-ocr-models: {message}", flush=True)


def present(dest: Path) -> bool:
    return all(
        (dest / name).is_file() and fetch_media.sha256(dest / name) == digest
        for name, digest in FILES.items()
    )


def fetch(dest: Path, cache: Path) -> None:
    if present(dest):
        progress(f"models present and verified in {dest}")
        return
    wheel = cache / WHEEL
    if not wheel.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        progress(f"downloading rapidocr-onnxruntime=={VERSION} wheel from PyPI (15 MB)")
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
             f"rapidocr-onnxruntime=={VERSION}", "-d", str(cache)],
            check=True,
        )  # fmt: skip
    fetch_media.check_sha256(wheel, WHEEL_SHA256, "rapidocr-onnxruntime wheel")
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(wheel) as zf:
        for name, digest in FILES.items():
            extracted = Path(zf.extract(f"rapidocr_onnxruntime/models/{name}", tmp))
            fetch_media.check_sha256(extracted, digest, name)
            target = dest / name
            partial = target.with_suffix(".partial")
            partial.write_bytes(extracted.read_bytes())
            partial.replace(target)
            progress(f"  {name}  sha256 {digest[:16]}…")
    (dest / "LICENSE.txt").write_text(LICENSE_NOTE)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=REPO / "models" / "ocr")
    parser.add_argument("--cache", type=Path, default=REPO / ".cache")
    args = parser.parse_args(argv)
    try:
        fetch(args.models, args.cache)
    except (fetch_media.FetchError, subprocess.CalledProcessError, OSError) as exc:
        print(f"fetch-ocr-models: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
