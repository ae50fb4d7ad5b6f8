"""The tfjs → ONNX converter on a small hand-written graph, against a numpy reference.

The graph exercises ops NanoDet does not use (fused conv with bias and relu, depthwise conv,
SAME padding, max pool, nearest resize, channel concat in NHWC) so that a province's own
tfjs model fails loudly or converts correctly, never silently wrong."""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from .conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))

import tfjs_convert

RNG = np.random.default_rng(7)


def _same_pad(x: np.ndarray, k: int, stride: int, value: float = 0.0) -> np.ndarray:
    size = x.shape[1]
    out = -(-size // stride)
    total = max((out - 1) * stride + k - size, 0)
    before, after = total // 2, total - total // 2
    return np.pad(x, ((0, 0), (before, after), (before, after), (0, 0)), constant_values=value)


def _windows(x: np.ndarray, k: int, stride: int) -> np.ndarray:
    """[1, H', W', C, k, k] patches of an NHWC tensor."""
    view = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(1, 2))
    return view[:, ::stride, ::stride]


def _reference(x: np.ndarray, w: dict[str, np.ndarray]) -> np.ndarray:
    patches = _windows(_same_pad(x, 3, 1), 3, 1)  # [1, 8, 8, 3, 3, 3]
    conv = np.einsum("nhwcij,ijco->nhwo", patches, w["k1"]) + w["b1"]
    conv = np.maximum(conv, 0)
    patches = _windows(_same_pad(conv, 3, 2), 3, 2)  # [1, 4, 4, 4, 3, 3]
    dw = np.einsum("nhwcij,ijcm->nhwcm", patches, w["k2"]).reshape(1, 4, 4, 8)
    pooled = _windows(_same_pad(dw, 2, 1, -np.inf), 2, 1).max(axis=(4, 5))
    up = pooled.repeat(2, axis=1).repeat(2, axis=2)
    joined = np.concatenate([up, conv], axis=3)
    return 1 / (1 + np.exp(-(joined * w["scale"])))


def _node(name: str, op: str, inputs: list[str], **attr: Any) -> dict[str, Any]:
    return {"name": name, "op": op, "input": inputs, "attr": attr}


def _s(text: str) -> dict[str, str]:
    return {"s": base64.b64encode(text.encode()).decode()}


def _ints(*values: int) -> dict[str, Any]:
    return {"list": {"i": [str(v) for v in values]}}


def _write_graph(directory: Path, weights: dict[str, np.ndarray]) -> Path:
    consts = {**weights, "size": np.array([8, 8], np.int32), "axis": np.array(3, np.int32)}
    dtypes = {"size": "DT_INT32", "axis": "DT_INT32"}
    manifest, blob = [], b""
    for name, value in consts.items():
        spec: dict[str, Any] = {"name": name, "shape": list(value.shape)}
        if name == "k1":  # stored as float16, as tfjs-converter's --quantize_float16 does
            spec.update(dtype="float32", quantization={"dtype": "float16"})
            blob += value.astype(np.float16).tobytes()
        else:
            spec["dtype"] = "int32" if value.dtype == np.int32 else "float32"
            blob += value.tobytes()
        manifest.append(spec)
    nodes = [
        {"name": name, "op": "Const", "attr": {"dtype": {"type": dtypes.get(name, "DT_FLOAT")}}}
        for name in consts
    ]
    nodes += [
        _node("x", "Placeholder", [], shape={"shape": {"dim": [{"size": s} for s in "1883"]}}),
        _node(
            "conv1", "_FusedConv2D", ["x", "k1", "b1"],
            fused_ops={"list": {"s": [_s("BiasAdd")["s"], _s("Relu")["s"]]}},
            strides=_ints(1, 1, 1, 1), padding=_s("SAME"), data_format=_s("NHWC"),
        ),
        _node(
            "dw", "DepthwiseConv2dNative", ["conv1", "k2"],
            strides=_ints(1, 2, 2, 1), padding=_s("SAME"), data_format=_s("NHWC"),
        ),
        _node("pool", "MaxPool", ["dw"], ksize=_ints(1, 2, 2, 1), strides=_ints(1, 1, 1, 1),
              padding=_s("SAME"), data_format=_s("NHWC")),
        _node("up", "ResizeNearestNeighbor", ["pool", "size"], align_corners={"b": False},
              half_pixel_centers={"b": False}),
        _node("cat", "ConcatV2", ["up", "conv1", "axis"]),
        _node("mul", "Mul", ["cat", "scale"]),
        _node("sig", "Sigmoid", ["mul"]),
        _node("Identity", "Identity", ["sig"]),
    ]  # fmt: skip
    model = {
        "format": "graph-model",
        "modelTopology": {"node": nodes},
        "weightsManifest": [{"paths": ["w.bin"], "weights": manifest}],
        "signature": {"outputs": {"Identity:0": {"name": "Identity:0"}}},
    }
    (directory / "w.bin").write_bytes(blob)
    path = directory / "model.json"
    path.write_text(json.dumps(model), encoding="utf-8")
    return path


def test_small_graph_matches_numpy(tmp_path: Path) -> None:
    weights = {
        "k1": RNG.normal(size=(3, 3, 3, 4)).astype(np.float16).astype(np.float32),
        "b1": RNG.normal(size=4).astype(np.float32),
        "k2": RNG.normal(size=(3, 3, 4, 2)).astype(np.float32),
        "scale": RNG.uniform(0.1, 0.5, size=12).astype(np.float32),
    }
    model = tfjs_convert.convert(_write_graph(tmp_path, weights))
    ops = sorted(n.op_type for n in model.graph.node)
    assert ops.count("Conv") == 2
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = RNG.normal(size=(1, 8, 8, 3)).astype(np.float32)
    (got,) = session.run(None, {"x": x})
    assert got.shape == (1, 8, 8, 12)
    np.testing.assert_allclose(got, _reference(x, weights), atol=1e-5)


def test_unknown_op_names_the_node(tmp_path: Path) -> None:
    path = tmp_path / "model.json"
    path.write_text(
        json.dumps(
            {
                "format": "graph-model",
                "modelTopology": {
                    "node": [
                        _node("x", "Placeholder", [], shape={"shape": {"dim": [{"size": "1"}]}}),
                        _node("fft", "FFT", ["x"]),
                    ]
                },
                "weightsManifest": [],
            }
        ),
        encoding="utf-8",
    )
    with pytest.raises(tfjs_convert.UnsupportedOp, match="node fft: TF op FFT"):
        tfjs_convert.convert(path)
