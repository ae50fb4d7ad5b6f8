"""Convert a TensorFlow.js graph model (model.json + weight shards) to ONNX.

Only build-time code: it needs numpy and the `onnx` package, never onnxruntime, and the
agent never imports it. It covers the TF ops that graph models exported from PyTorch via
onnx-tf use (NCHW tensors with NHWC islands around Conv2D/MaxPool/Resize), plus the
fused variants tfjs-converter writes:

    Const, Placeholder, Identity, Transpose, Reshape, Pad, PadV2, MirrorPad,
    Conv2D, DepthwiseConv2dNative, _FusedConv2D, FusedDepthwiseConv2dNative,
    MaxPool, AvgPool, Add, AddV2, BiasAdd, Sub, Mul, RealDiv, Maximum, Minimum,
    Relu, Relu6, LeakyRelu, Sigmoid, Tanh, Exp, ConcatV2, Pack, SplitV, Split,
    ResizeBilinear, ResizeNearestNeighbor, Softmax, StridedSlice (constant inputs only),
    SparseToDense (constant inputs only), Cast (constant inputs only).

Anything else raises `UnsupportedOp` naming the node, so a new model fails loudly instead of
producing a wrong graph.

Layout: TF NHWC ops are written as Transpose(to NCHW) -> ONNX op -> Transpose(to NHWC).
Pairs of transposes that cancel are removed as they are created, a bias Add right after a
convolution is folded into it, and a zero Pad feeding a convolution (or a -inf pad feeding
a max pool) becomes the op's own `pads`; unused nodes are dropped at the end. The result is
checked against onnx.checker and shape inference by the caller.
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8  # readable by onnxruntime >= 1.11

_TF_DTYPES: dict[str, Any] = {
    "DT_FLOAT": np.float32,
    "DT_HALF": np.float16,
    "DT_INT32": np.int32,
    "DT_INT64": np.int64,
    "DT_BOOL": np.bool_,
    "DT_UINT8": np.uint8,
}
_NHWC_TO_NCHW = (0, 3, 1, 2)
_NCHW_TO_NHWC = (0, 2, 3, 1)


class UnsupportedOp(ValueError):
    """The graph uses a TF op (or an op variant) this converter does not handle."""


@dataclass
class _Tensor:
    """A non-constant value in the ONNX graph being built."""

    name: str
    shape: tuple[int, ...]
    # How it was made, for the peephole rewrites (transpose cancelling, pad/bias folding).
    transpose_of: tuple[_Tensor, tuple[int, ...]] | None = None
    pad_of: tuple[_Tensor, list[int], float] | None = None
    conv_node: onnx.NodeProto | None = None
    conv_nhwc: bool = False


@dataclass
class _Builder:
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    initializers: dict[str, np.ndarray] = field(default_factory=dict)
    counter: int = 0

    def fresh(self, hint: str) -> str:
        self.counter += 1
        return f"{hint.replace('/', '_')}__{self.counter}"

    def const(self, hint: str, value: np.ndarray) -> str:
        name = self.fresh(hint)
        self.initializers[name] = value
        return name

    def node(
        self, op: str, inputs: list[str], hint: str, **attrs: Any
    ) -> tuple[str, onnx.NodeProto]:
        out = self.fresh(hint)
        proto = helper.make_node(op, inputs, [out], name=out, **attrs)
        self.nodes.append(proto)
        return out, proto


def _attr(node: dict[str, Any], key: str, default: Any = None) -> Any:
    value = node.get("attr", {}).get(key)
    if value is None:
        return default
    if "list" in value:
        items = value["list"]
        if "i" in items:
            return [int(i) for i in items["i"]]
        if "f" in items:
            return [float(f) for f in items["f"]]
        if "s" in items:
            return [base64.b64decode(v).decode() for v in items["s"]]
        return []
    if "s" in value:
        return base64.b64decode(value["s"]).decode()
    if "i" in value:
        return int(value["i"])
    if "f" in value:
        return float(value["f"])
    if "b" in value:
        return bool(value["b"])
    if "type" in value:
        return value["type"]
    return default


def load_weights(model_json: dict[str, Any], directory: Path) -> dict[str, np.ndarray]:
    """Read every weight of the manifest, undoing tfjs float16/uint8 quantisation."""
    weights: dict[str, np.ndarray] = {}
    for group in model_json["weightsManifest"]:
        blob = b"".join((directory / p).read_bytes() for p in group["paths"])
        offset = 0
        for spec in group["weights"]:
            quant = spec.get("quantization")
            stored = np.dtype(quant["dtype"] if quant else spec["dtype"])
            count = int(np.prod(spec["shape"])) if spec["shape"] else 1
            raw = np.frombuffer(blob, stored, count, offset).reshape(spec["shape"])
            offset += count * stored.itemsize
            if quant is None:
                value = raw.copy()
            elif quant["dtype"] == "float16":
                value = raw.astype(np.float32)
            elif "scale" in quant:
                value = (raw.astype(np.float32) * quant["scale"] + quant["min"]).astype(np.float32)
            else:
                raise UnsupportedOp(f"weight {spec['name']}: unknown quantization {quant}")
            weights[spec["name"]] = value
        if offset != len(blob):
            raise ValueError(f"weight shards hold {len(blob)} bytes, manifest uses {offset}")
    return weights


def _toposort(nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_name = {n["name"]: n for n in nodes}
    done: set[str] = set()
    order: list[dict[str, Any]] = []
    for root in nodes:
        stack: list[tuple[str, bool]] = [(root["name"], False)]
        while stack:
            name, expanded = stack.pop()
            if name in done:
                continue
            if expanded:
                done.add(name)
                order.append(by_name[name])
                continue
            stack.append((name, True))
            for inp in by_name[name].get("input", []):
                src = inp.lstrip("^").split(":")[0]
                if src not in done:
                    stack.append((src, False))
    return order


class _Converter:
    def __init__(self, model_json: dict[str, Any], weights: dict[str, np.ndarray]) -> None:
        self.json = model_json
        self.weights = weights
        self.b = _Builder()
        self.values: dict[str, _Tensor | np.ndarray | list[_Tensor | np.ndarray]] = {}
        self.consumers: Counter[str] = Counter()

    # -- value helpers -------------------------------------------------------------------

    def _get(self, ref: str) -> _Tensor | np.ndarray:
        name, _, index = ref.partition(":")
        value = self.values[name]
        if isinstance(value, list):
            return value[int(index or 0)]
        return value

    def _tensor(self, value: _Tensor | np.ndarray, hint: str) -> _Tensor:
        if isinstance(value, _Tensor):
            return value
        return _Tensor(self.b.const(hint, np.asarray(value)), tuple(np.shape(value)))

    def _transpose(self, x: _Tensor, perm: tuple[int, ...], hint: str) -> _Tensor:
        if x.transpose_of is not None:
            src, first = x.transpose_of
            if tuple(first[p] for p in perm) == tuple(range(len(perm))):
                return src
        if perm == tuple(range(len(perm))):
            return x
        out, _ = self.b.node("Transpose", [x.name], hint, perm=list(perm))
        return _Tensor(out, tuple(x.shape[p] for p in perm), transpose_of=(x, perm))

    # -- conversion ----------------------------------------------------------------------

    def run(self) -> onnx.ModelProto:
        nodes = self.json["modelTopology"]["node"]
        for n in nodes:
            for inp in n.get("input", []):
                self.consumers[inp.lstrip("^").split(":")[0]] += 1
        inputs: list[onnx.ValueInfoProto] = []
        for n in _toposort(nodes):
            op = n["op"]
            if op == "Placeholder":
                dims = [int(d.get("size", -1)) for d in n["attr"]["shape"]["shape"]["dim"]]
                name = n["name"]
                self.values[name] = _Tensor(name, tuple(dims))
                inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, dims))
                continue
            if op == "Const":
                dtype = _TF_DTYPES[_attr(n, "dtype")]
                self.values[n["name"]] = self.weights[n["name"]].astype(dtype)
                continue
            args = [self._get(i) for i in n.get("input", []) if not i.startswith("^")]
            handler = getattr(self, f"_op_{op.lstrip('_')}", None)
            if handler is None:
                raise UnsupportedOp(f"node {n['name']}: TF op {op} is not supported")
            self.values[n["name"]] = handler(n, args)
        return self._finish(inputs)

    def _finish(self, inputs: list[onnx.ValueInfoProto]) -> onnx.ModelProto:
        signature = self.json.get("signature", {}).get("outputs", {})
        outputs: list[onnx.ValueInfoProto] = []
        renames: dict[str, str] = {}
        for key in sorted(signature, key=lambda k: k.split(":")[0]):
            value = self._get(key.split(":")[0])
            if not isinstance(value, _Tensor):
                raise UnsupportedOp(f"output {key} is a constant")
            out_name = key.split(":")[0]
            renames[value.name] = out_name
            outputs.append(
                helper.make_tensor_value_info(out_name, TensorProto.FLOAT, list(value.shape))
            )
        for node in self.b.nodes:
            node.output[:] = [renames.get(o, o) for o in node.output]
            node.input[:] = [renames.get(i, i) for i in node.input]
        needed = {o.name for o in outputs}
        kept: list[onnx.NodeProto] = []
        for node in reversed(self.b.nodes):
            if any(o in needed for o in node.output):
                kept.append(node)
                needed.update(i for i in node.input if i)
        kept.reverse()
        inits = [
            numpy_helper.from_array(v, k) for k, v in self.b.initializers.items() if k in needed
        ]
        graph = helper.make_graph(kept, "graph", inputs, outputs, initializer=inits)
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", OPSET)],
            producer_name="edge-agent tfjs_convert",
        )
        model.ir_version = IR_VERSION
        return model

    # -- folding of constant-only subgraphs ---------------------------------------------

    @staticmethod
    def _all_const(args: list[Any]) -> bool:
        return all(isinstance(a, np.ndarray) for a in args)

    def _op_SparseToDense(self, n: dict[str, Any], args: list[Any]) -> np.ndarray:
        if not self._all_const(args):
            raise UnsupportedOp(f"node {n['name']}: SparseToDense with runtime inputs")
        indices, shape, values, default = args
        dense = np.full(tuple(int(s) for s in np.atleast_1d(shape)), default, dtype=default.dtype)
        idx = np.asarray(indices).reshape(-1, dense.ndim)
        for row, value in zip(idx, np.broadcast_to(values, (len(idx),)), strict=True):
            dense[tuple(row)] = value
        return dense

    def _op_Cast(self, n: dict[str, Any], args: list[Any]) -> np.ndarray:
        if not self._all_const(args):
            raise UnsupportedOp(f"node {n['name']}: Cast with runtime input")
        return np.asarray(args[0]).astype(_TF_DTYPES[_attr(n, "DstT")])

    def _op_StridedSlice(self, n: dict[str, Any], args: list[Any]) -> np.ndarray:
        if not self._all_const(args):
            raise UnsupportedOp(f"node {n['name']}: StridedSlice with runtime input")
        if any(_attr(n, k, 0) for k in ("ellipsis_mask", "new_axis_mask")):
            raise UnsupportedOp(f"node {n['name']}: StridedSlice ellipsis/new-axis masks")
        data, begin, end, strides = args
        begin_mask, end_mask = _attr(n, "begin_mask", 0), _attr(n, "end_mask", 0)
        shrink = _attr(n, "shrink_axis_mask", 0)
        index: list[Any] = []
        for axis, (b, e, s) in enumerate(zip(begin, end, strides, strict=True)):
            if shrink >> axis & 1:
                index.append(int(b))
                continue
            index.append(
                slice(
                    None if begin_mask >> axis & 1 else int(b),
                    None if end_mask >> axis & 1 else int(e),
                    int(s),
                )
            )
        return np.asarray(data[tuple(index)])

    # -- elementwise ---------------------------------------------------------------------

    _BINARY: ClassVar[dict[str, tuple[str, Any]]] = {
        "Add": ("Add", np.add),
        "AddV2": ("Add", np.add),
        "BiasAdd": ("Add", np.add),
        "Sub": ("Sub", np.subtract),
        "Mul": ("Mul", np.multiply),
        "RealDiv": ("Div", np.divide),
        "Maximum": ("Max", np.maximum),
        "Minimum": ("Min", np.minimum),
    }

    def _binary(self, n: dict[str, Any], args: list[Any]) -> _Tensor | np.ndarray:
        onnx_op, fold = self._BINARY[n["op"]]
        a, b = args
        if self._all_const(args):
            return np.asarray(fold(a, b)).astype(np.result_type(a, b))
        if onnx_op == "Add":
            fused = self._fold_bias(a, b) or self._fold_bias(b, a)
            if fused is not None:
                return fused
        ta, tb = self._tensor(a, n["name"]), self._tensor(b, n["name"])
        shape = tuple(np.broadcast_shapes(ta.shape, tb.shape))
        out, _ = self.b.node(onnx_op, [ta.name, tb.name], n["name"])
        return _Tensor(out, shape)

    _op_Add = _op_AddV2 = _op_BiasAdd = _op_Sub = _op_Mul = _op_RealDiv = _binary
    _op_Maximum = _op_Minimum = _binary

    def _fold_bias(self, x: Any, bias: Any) -> _Tensor | None:
        """conv(x) + b, with b a constant over the channel axis, becomes conv(x, bias=b)."""
        if not isinstance(x, _Tensor) or not isinstance(bias, np.ndarray):
            return None
        conv = x.conv_node
        if conv is None or len(conv.input) > 2:
            return None
        channels = x.shape[3] if x.conv_nhwc else x.shape[1]
        flat = bias.reshape(-1)
        if flat.size != channels or (x.conv_nhwc and bias.shape[-1] != channels):
            return None
        if self.consumers_of_conv.get(id(conv), 0) != 1:
            return None
        conv.input.append(self.b.const("bias", flat.astype(np.float32)))
        return _Tensor(
            x.name, x.shape, transpose_of=x.transpose_of, conv_node=None, conv_nhwc=x.conv_nhwc
        )

    consumers_of_conv: dict[int, int]

    def _unary(self, n: dict[str, Any], args: list[Any]) -> _Tensor:
        ops = {
            "Relu": ("Relu", {}),
            "Sigmoid": ("Sigmoid", {}),
            "Tanh": ("Tanh", {}),
            "Exp": ("Exp", {}),
            "LeakyRelu": ("LeakyRelu", {"alpha": _attr(n, "alpha", 0.2)}),
        }
        if n["op"] == "Relu6":
            x = self._tensor(args[0], n["name"])
            lo = self.b.const("zero", np.array(0, np.float32))
            hi = self.b.const("six", np.array(6, np.float32))
            out, _ = self.b.node("Clip", [x.name, lo, hi], n["name"])
            return _Tensor(out, x.shape)
        onnx_op, attrs = ops[n["op"]]
        x = self._tensor(args[0], n["name"])
        out, _ = self.b.node(onnx_op, [x.name], n["name"], **attrs)
        return _Tensor(out, x.shape)

    _op_Relu = _op_Relu6 = _op_Sigmoid = _op_Tanh = _op_Exp = _op_LeakyRelu = _unary

    def _op_Identity(self, n: dict[str, Any], args: list[Any]) -> Any:
        return args[0]

    def _op_Softmax(self, n: dict[str, Any], args: list[Any]) -> _Tensor:
        x = self._tensor(args[0], n["name"])
        out, _ = self.b.node("Softmax", [x.name], n["name"], axis=-1)
        return _Tensor(out, x.shape)

    # -- shape ops -----------------------------------------------------------------------

    def _op_Transpose(self, n: dict[str, Any], args: list[Any]) -> Any:
        x, perm = args
        if isinstance(x, np.ndarray):
            return np.transpose(x, perm)
        return self._transpose(x, tuple(int(p) for p in perm), n["name"])

    def _op_Reshape(self, n: dict[str, Any], args: list[Any]) -> Any:
        x, shape = args
        if not isinstance(shape, np.ndarray):
            raise UnsupportedOp(f"node {n['name']}: Reshape to a runtime shape")
        if isinstance(x, np.ndarray):
            return x.reshape(shape)
        target = np.zeros(x.shape).reshape(shape.astype(np.int64)).shape
        out, _ = self.b.node(
            "Reshape", [x.name, self.b.const("shape", shape.astype(np.int64))], n["name"]
        )
        return _Tensor(out, tuple(target))

    def _op_ConcatV2(self, n: dict[str, Any], args: list[Any]) -> Any:
        *parts, axis_value = args
        if self._all_const(parts):
            return np.concatenate(parts, axis=int(axis_value))
        tensors = [self._tensor(p, n["name"]) for p in parts]
        axis = int(axis_value) % len(tensors[0].shape)
        shape = list(tensors[0].shape)
        shape[axis] = sum(t.shape[axis] for t in tensors)
        out, _ = self.b.node("Concat", [t.name for t in tensors], n["name"], axis=axis)
        return _Tensor(out, tuple(shape))

    def _op_Pack(self, n: dict[str, Any], args: list[Any]) -> Any:
        axis = _attr(n, "axis", 0)
        if self._all_const(args):
            return np.stack(args, axis=axis)
        tensors = [self._tensor(p, n["name"]) for p in args]
        axes = self.b.const("axes", np.array([axis], np.int64))
        expanded = [self.b.node("Unsqueeze", [t.name, axes], n["name"])[0] for t in tensors]
        shape = list(tensors[0].shape)
        shape.insert(axis % (len(shape) + 1), len(tensors))
        out, _ = self.b.node("Concat", expanded, n["name"], axis=axis)
        return _Tensor(out, tuple(shape))

    def _split(self, n: dict[str, Any], x: _Tensor, sizes: list[int], axis: int) -> list[Any]:
        axis %= len(x.shape)
        if -1 in sizes:
            sizes[sizes.index(-1)] = x.shape[axis] - (sum(sizes) + 1)
        outs = [self.b.fresh(n["name"]) for _ in sizes]
        split = self.b.const("split", np.array(sizes, np.int64))
        self.b.nodes.append(
            helper.make_node("Split", [x.name, split], outs, name=outs[0], axis=axis)
        )
        result: list[Any] = []
        for name, size in zip(outs, sizes, strict=True):
            shape = list(x.shape)
            shape[axis] = size
            result.append(_Tensor(name, tuple(shape)))
        return result

    def _op_SplitV(self, n: dict[str, Any], args: list[Any]) -> list[Any]:
        x, sizes, axis = args
        return self._split(n, self._tensor(x, n["name"]), [int(s) for s in sizes], int(axis))

    def _op_Split(self, n: dict[str, Any], args: list[Any]) -> list[Any]:
        axis, x = args
        x = self._tensor(x, n["name"])
        count = _attr(n, "num_split")
        return self._split(n, x, [x.shape[int(axis)] // count] * count, int(axis))

    def _pad(self, n: dict[str, Any], args: list[Any], value: float) -> Any:
        x, paddings = args[0], np.asarray(args[1]).astype(np.int64)
        mode = "constant"
        if n["op"] == "MirrorPad":
            mode = "reflect" if _attr(n, "mode") == "REFLECT" else "edge"
        if isinstance(x, np.ndarray):
            return np.pad(x, paddings, constant_values=value)
        pads = [int(p) for p in paddings[:, 0]] + [int(p) for p in paddings[:, 1]]
        inputs = [x.name, self.b.const("pads", np.array(pads, np.int64))]
        if mode == "constant":
            inputs.append(self.b.const("pad_value", np.array(value, np.float32)))
        out, _ = self.b.node("Pad", inputs, n["name"], mode=mode)
        shape = tuple(d + int(a) + int(b) for d, (a, b) in zip(x.shape, paddings, strict=True))
        made = _Tensor(out, shape)
        if mode == "constant":
            made.pad_of = (x, pads, value)
        return made

    def _op_Pad(self, n: dict[str, Any], args: list[Any]) -> Any:
        return self._pad(n, args, 0.0)

    def _op_PadV2(self, n: dict[str, Any], args: list[Any]) -> Any:
        return self._pad(n, args[:2], float(args[2]))

    def _op_MirrorPad(self, n: dict[str, Any], args: list[Any]) -> Any:
        return self._pad(n, args, 0.0)

    # -- NHWC islands --------------------------------------------------------------------

    def _to_nchw(
        self, n: dict[str, Any], x: _Tensor, pad_value: float | None
    ) -> tuple[_Tensor, list[int]]:
        """The NCHW view of an NHWC input, absorbing a spatial constant pad if there is one."""
        nchw = self._transpose(x, _NHWC_TO_NCHW, n["name"])
        if pad_value is not None and nchw.pad_of is not None:
            src, pads, value = nchw.pad_of
            if value == pad_value and pads[0] == pads[1] == pads[4] == pads[5] == 0:
                return src, [pads[2], pads[3], pads[6], pads[7]]
        if pad_value is not None and x.pad_of is not None and nchw is not x:
            # Padded in NHWC, then transposed: the pad sits on axes 1, 2.
            src, pads, value = x.pad_of
            if value == pad_value and pads[0] == pads[3] == pads[4] == pads[7] == 0:
                return (
                    self._transpose(src, _NHWC_TO_NCHW, n["name"]),
                    [pads[1], pads[2], pads[5], pads[6]],
                )
        return nchw, [0, 0, 0, 0]

    def _same_pads(
        self,
        size: tuple[int, int],
        kernel: tuple[int, int],
        strides: list[int],
        dilations: list[int],
    ) -> list[int]:
        pads_begin, pads_end = [], []
        for dim, k, s, d in zip(size, kernel, strides, dilations, strict=True):
            effective = (k - 1) * d + 1
            out = -(-dim // s)
            total = max((out - 1) * s + effective - dim, 0)
            pads_begin.append(total // 2)
            pads_end.append(total - total // 2)
        return pads_begin + pads_end

    def _conv(self, n: dict[str, Any], args: list[Any], depthwise: bool) -> _Tensor:
        x, kernel, *extra = args
        if _attr(n, "data_format", "NHWC") != "NHWC":
            raise UnsupportedOp(f"node {n['name']}: data_format {_attr(n, 'data_format')}")
        strides = _attr(n, "strides", [1, 1, 1, 1])[1:3]
        dilations = _attr(n, "dilations", [1, 1, 1, 1])[1:3]
        x = self._tensor(x, n["name"])
        src, pads = self._to_nchw(n, x, 0.0)
        kh, kw, cin, cmul = kernel.shape
        channels = x.shape[3]
        if depthwise:
            weight = kernel.reshape(kh, kw, 1, cin * cmul).transpose(3, 2, 0, 1)
            group = cin
        else:
            weight = kernel.transpose(3, 2, 0, 1)
            group = channels // cin
            if group * cin != channels:
                raise UnsupportedOp(f"node {n['name']}: {channels} channels vs kernel {cin}")
        padding = _attr(n, "padding")
        if padding == "SAME":
            extra_pads = self._same_pads(
                (src.shape[2] - pads[0] - pads[2], src.shape[3] - pads[1] - pads[3]),
                (kh, kw),
                strides,
                dilations,
            )
            if any(pads):
                raise UnsupportedOp(f"node {n['name']}: SAME padding after an explicit Pad")
            pads = extra_pads
        elif padding != "VALID":
            raise UnsupportedOp(f"node {n['name']}: padding {padding}")
        inputs = [src.name, self.b.const("weight", weight.astype(np.float32))]
        out, proto = self.b.node(
            "Conv",
            inputs,
            n["name"],
            kernel_shape=[kh, kw],
            strides=strides,
            dilations=dilations,
            pads=pads,
            group=group,
        )
        h = (src.shape[2] + pads[0] + pads[2] - ((kh - 1) * dilations[0] + 1)) // strides[0] + 1
        w = (src.shape[3] + pads[1] + pads[3] - ((kw - 1) * dilations[1] + 1)) // strides[1] + 1
        y = _Tensor(out, (src.shape[0], weight.shape[0], h, w), conv_node=proto)
        self.consumers_of_conv[id(proto)] = 1
        fused = _attr(n, "fused_ops", [])
        if extra or fused:
            y = self._apply_fused(n, y, extra, fused)
        out_nhwc = self._transpose(y, _NCHW_TO_NHWC, n["name"])
        # Bias folding must see the conv through the layout transpose.
        if y.conv_node is not None:
            out_nhwc.conv_node, out_nhwc.conv_nhwc = y.conv_node, True
        self.consumers_of_conv[id(proto)] = self.consumers[n["name"]]
        return out_nhwc

    def _apply_fused(
        self, n: dict[str, Any], y: _Tensor, extra: list[Any], fused: list[str]
    ) -> _Tensor:
        args = list(extra)
        for op in fused:
            if op == "BiasAdd":
                assert y.conv_node is not None
                y.conv_node.input.append(self.b.const("bias", np.asarray(args.pop(0), np.float32)))
            elif op in ("Relu", "Relu6", "Sigmoid", "Tanh"):
                y = self._unary({"op": op, "name": n["name"]}, [y])
            elif op == "LeakyRelu":
                alpha = _attr(n, "leakyrelu_alpha", 0.2)
                out, _ = self.b.node("LeakyRelu", [y.name], n["name"], alpha=alpha)
                y = _Tensor(out, y.shape)
            elif op == "Prelu":
                slope = np.asarray(args.pop(0), np.float32).reshape(-1, 1, 1)
                out, _ = self.b.node("PRelu", [y.name, self.b.const("slope", slope)], n["name"])
                y = _Tensor(out, y.shape)
            else:
                raise UnsupportedOp(f"node {n['name']}: fused op {op}")
        return y

    def _op_Conv2D(self, n: dict[str, Any], args: list[Any]) -> _Tensor:
        return self._conv(n, args, depthwise=False)

    def _op_FusedConv2D(self, n: dict[str, Any], args: list[Any]) -> _Tensor:
        return self._conv(n, args, depthwise=False)

    def _op_DepthwiseConv2dNative(self, n: dict[str, Any], args: list[Any]) -> _Tensor:
        return self._conv(n, args, depthwise=True)

    _op_FusedDepthwiseConv2dNative = _op_DepthwiseConv2dNative

    def _pool(self, n: dict[str, Any], args: list[Any]) -> _Tensor:
        if _attr(n, "data_format", "NHWC") != "NHWC":
            raise UnsupportedOp(f"node {n['name']}: data_format {_attr(n, 'data_format')}")
        x = self._tensor(args[0], n["name"])
        is_max = n["op"] == "MaxPool"
        src, pads = self._to_nchw(n, x, float("-inf") if is_max else None)
        kernel = _attr(n, "ksize")[1:3]
        strides = _attr(n, "strides")[1:3]
        if _attr(n, "padding") == "SAME":
            pads = self._same_pads((src.shape[2], src.shape[3]), tuple(kernel), strides, [1, 1])
        attrs: dict[str, Any] = {"kernel_shape": kernel, "strides": strides, "pads": pads}
        if not is_max:
            attrs["count_include_pad"] = 0
        out, _ = self.b.node("MaxPool" if is_max else "AveragePool", [src.name], n["name"], **attrs)
        h = (src.shape[2] + pads[0] + pads[2] - kernel[0]) // strides[0] + 1
        w = (src.shape[3] + pads[1] + pads[3] - kernel[1]) // strides[1] + 1
        y = _Tensor(out, (src.shape[0], src.shape[1], h, w))
        return self._transpose(y, _NCHW_TO_NHWC, n["name"])

    _op_MaxPool = _op_AvgPool = _pool

    def _resize(self, n: dict[str, Any], args: list[Any]) -> _Tensor:
        x, size = self._tensor(args[0], n["name"]), args[1]
        src = self._transpose(x, _NHWC_TO_NCHW, n["name"])
        linear = n["op"] == "ResizeBilinear"
        if _attr(n, "align_corners", False):
            transform = "align_corners"
        elif _attr(n, "half_pixel_centers", False):
            transform = "half_pixel" if linear else "tf_half_pixel_for_nn"
        else:
            transform = "asymmetric"
        sizes = np.array([src.shape[0], src.shape[1], int(size[0]), int(size[1])], np.int64)
        attrs: dict[str, Any] = {
            "mode": "linear" if linear else "nearest",
            "coordinate_transformation_mode": transform,
        }
        if not linear:
            # TF picks floor((out + 0.5) * in / out) or floor(out * in / out): always floor.
            attrs["nearest_mode"] = "floor"
        out, _ = self.b.node(
            "Resize", [src.name, "", "", self.b.const("sizes", sizes)], n["name"], **attrs
        )
        y = _Tensor(out, tuple(int(s) for s in sizes))
        return self._transpose(y, _NCHW_TO_NHWC, n["name"])

    _op_ResizeBilinear = _op_ResizeNearestNeighbor = _resize


def convert(model_json_path: Path) -> onnx.ModelProto:
    """Convert `model.json` (weights beside it) to an ONNX model; raises `UnsupportedOp`."""
    model_json = json.loads(model_json_path.read_text(encoding="utf-8"))
    if model_json.get("format") != "graph-model":
        raise UnsupportedOp(f"{model_json_path}: not a tfjs graph model")
    weights = load_weights(model_json, model_json_path.parent)
    converter = _Converter(model_json, weights)
    converter.consumers_of_conv = {}
    return converter.run()


def op_summary(model_json_path: Path) -> dict[str, int]:
    """How many nodes of each TF op the graph holds (printed by the build before converting)."""
    model_json = json.loads(model_json_path.read_text(encoding="utf-8"))
    return dict(Counter(n["op"] for n in model_json["modelTopology"]["node"]))
