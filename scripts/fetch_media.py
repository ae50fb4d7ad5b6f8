"""Fetch the real photos and the video clip the tests, benchmarks and demo use.

Everything comes from package registries, pinned by version and sha256:

* scikit-image's wheel from PyPI: astronaut.png, motorcycle_left.png, coffee.png, chelsea.png
  (public-domain / CC0 images shipped in `skimage/data`);
* Debian bookworm's `opencv-doc` package: vtest.avi (a street scene with walking people,
  795 frames at 10 fps) and a few photos from the OpenCV samples (BSD/Apache, see
  media/opencv-doc.copyright).

Usage: scripts/fetch-media [--media-dir DIR] [--cache-dir DIR]. A second run with every
file present and matching its checksum does nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

SKIMAGE_VERSION = "0.25.2"
SKIMAGE_WHEEL = "scikit_image-0.25.2-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
SKIMAGE_WHEEL_SHA256 = "24cc986e1f4187a12aa319f777b36008764e856e5013666a4a83f8df083c2641"
SKIMAGE_FILES = {
    "astronaut.png": "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5",
    "motorcycle_left.png": "db18e9c4157617403c3537a6ba355dfeafe9a7eabb6b9b94cb33f6525dd49179",
    "coffee.png": "cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7",
    "chelsea.png": "596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb",
}

OPENCV_DOC_VERSION = "4.6.0+dfsg-12"
OPENCV_DOC_DEB = f"opencv-doc_{OPENCV_DOC_VERSION}_all.deb"
OPENCV_DOC_DEB_SHA256 = "4b12681df35878207ac7097dc66184b2ae552e4bf4ddd2af04a0f03ed0b8682a"
OPENCV_DOC_DATA = "usr/share/doc/opencv-doc/examples/data"
OPENCV_DOC_FILES = {
    "vtest.avi": "45cddc9490be69345cbdab64ca583be65987e864ca408038e648db99e10516cf",
    "messi5.jpg": "1d570e49654e84c7a943918537bd9e5e1ef82920152e147c834006e235be97c9",
    "basketball1.png": "ba06f6701f7260998b430c39b6557f775497e6ce7b1a74f0b7ea6af371bf54a6",
    "fruits.jpg": "9c031d80a1c52da5eca790db896baffec6a7e52bf786cdb7bbfca5c7f880e6a1",
    "apple.jpg": "e86879de3d9a807dedc742a8f464f39e6b74bbb531a1fba3583155d94997d1cd",
}
ALL_FILES = {**SKIMAGE_FILES, **OPENCV_DOC_FILES}


class FetchError(RuntimeError):
    pass


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_sha256(path: Path, expected: str, what: str) -> None:
    actual = sha256(path)
    if actual != expected:
        raise FetchError(
            f"{what}: sha256 mismatch for {path}\n  expected {expected}\n  got      {actual}\n"
            "The registry served different bytes than the pinned ones; refusing to use them."
        )


def progress(message: str) -> None:
    print(f"fetch-media: {message}", flush=True)


def _present(media: Path, files: dict[str, str]) -> bool:
    return all((media / n).is_file() and sha256(media / n) == h for n, h in files.items())


def _install(src: Path, dest: Path, expected: str) -> None:
    check_sha256(src, expected, dest.name)
    tmp = dest.with_name(dest.name + ".part")
    shutil.copyfile(src, tmp)
    tmp.replace(dest)
    progress(f"  {dest.name}  sha256 {expected[:16]}…")


def fetch_skimage(media: Path, cache: Path) -> None:
    if _present(media, SKIMAGE_FILES):
        progress("scikit-image photos present and verified")
        return
    wheel = cache / SKIMAGE_WHEEL
    if not wheel.is_file():
        progress(f"downloading scikit-image=={SKIMAGE_VERSION} wheel from PyPI")
        subprocess.run(
            [
                sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                f"scikit-image=={SKIMAGE_VERSION}",
                "--platform", "manylinux2014_x86_64", "--python-version", "3.11",
                "--only-binary=:all:", "-d", str(cache),
            ],
            check=True,
        )  # fmt: skip
    check_sha256(wheel, SKIMAGE_WHEEL_SHA256, "scikit-image wheel")
    with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(wheel) as zf:
        for name, expected in SKIMAGE_FILES.items():
            extracted = Path(zf.extract(f"skimage/data/{name}", tmp))
            _install(extracted, media / name, expected)


def fetch_opencv_doc(media: Path, cache: Path) -> None:
    if _present(media, OPENCV_DOC_FILES):
        progress("opencv-doc clip and photos present and verified")
        return
    deb = cache / OPENCV_DOC_DEB
    if not deb.is_file():
        progress(f"downloading Debian opencv-doc {OPENCV_DOC_VERSION} (~96 MB)")
        with tempfile.TemporaryDirectory() as tmp:
            result = subprocess.run(
                ["apt-get", "download", f"opencv-doc={OPENCV_DOC_VERSION}"],
                cwd=tmp,
                capture_output=True,
                text=True,
            )
            if result.returncode != 0:
                raise FetchError(
                    f"apt-get download opencv-doc={OPENCV_DOC_VERSION} failed:\n{result.stderr}"
                    "Is this Debian bookworm with its main archive in sources.list "
                    "(run `apt-get update`)?"
                )
            shutil.move(str(Path(tmp) / OPENCV_DOC_DEB), deb)
    check_sha256(deb, OPENCV_DOC_DEB_SHA256, "opencv-doc .deb")
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["dpkg-deb", "-x", str(deb), tmp], check=True)
        for name, expected in OPENCV_DOC_FILES.items():
            _install(Path(tmp) / OPENCV_DOC_DATA / name, media / name, expected)
        shutil.copyfile(
            Path(tmp) / "usr/share/doc/opencv-doc/copyright", media / "opencv-doc.copyright"
        )


def write_sums(media: Path) -> None:
    lines = [f"{h}  {n}\n" for n, h in sorted(ALL_FILES.items())]
    (media / "SHA256SUMS").write_text("".join(lines), encoding="utf-8")


def fetch(media: Path, cache: Path) -> None:
    """Make sure every pinned file is in `media`; raises FetchError."""
    media.mkdir(parents=True, exist_ok=True)
    cache.mkdir(parents=True, exist_ok=True)
    fetch_skimage(media, cache)
    fetch_opencv_doc(media, cache)
    write_sums(media)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--media-dir", type=Path, default=REPO / "media")
    parser.add_argument("--cache-dir", type=Path, default=REPO / ".cache")
    args = parser.parse_args(argv)
    try:
        fetch(args.media_dir, args.cache_dir)
    except (FetchError, subprocess.CalledProcessError, OSError) as exc:
        print(f"fetch-media: error: {exc}", file=sys.stderr)
        return 1
    progress(f"done: {len(ALL_FILES)} files in {args.media_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
