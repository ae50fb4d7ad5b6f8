"""Batching frames of several cameras into one model run, measured for bench_capacity.py:
whether the shipped model takes a batch, and what a batch of 4 would save per frame on a
batch-capable copy of it (built in memory with `onnx`, when installed)."""

from __future__ import annotations

import resource
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from edge_agent.inference.detector import Detector, session_options  # noqa: E402

MODELS = REPO / "models"


def process_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def batching(variant: str) -> None:
    model = MODELS / ("nanodet.onnx" if variant == "fp32" else "nanodet.int8.onnx")
    detector = Detector(model=model, classes=MODELS / "coco.names", intra_op_threads=1)
    shape = detector.session.get_inputs()[0].shape
    print(f"   {variant}: input {shape}: {'fixed batch of 1' if shape[0] == 1 else 'batched'}")
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        print("   (onnx not installed: pip install '.[model]' to measure a batch-capable copy)")
        return
    # A copy with a free batch dimension: the reshapes keep their batch (0) and the resizes
    # scale by 2 instead of naming the output size. Only for this measurement.
    graph_model = onnx.load(str(model))
    graph = graph_model.graph
    inferred = onnx.shape_inference.infer_shapes(graph_model)
    dims = {
        v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in [*inferred.graph.value_info, *inferred.graph.input]
    }
    constants = {i.name: i for i in graph.initializer}
    for value in [*graph.input, *graph.output]:
        value.type.tensor_type.shape.dim[0].dim_param = "N"
    for node in graph.node:
        if node.op_type == "Reshape":
            target = numpy_helper.to_array(constants[node.input[1]]).copy()
            target[0] = 0
            constants[node.input[1]].CopyFrom(numpy_helper.from_array(target, node.input[1]))
        elif node.op_type == "Resize":
            sizes = numpy_helper.to_array(constants[node.input[3]]).astype(np.float32)
            scales = sizes / np.array(dims[node.input[0]], np.float32)
            graph.initializer.append(numpy_helper.from_array(scales, node.name + "_scales"))
            del node.input[2:]
            node.input.append(node.name + "_scales")
    del graph.value_info[:]
    session = ort.InferenceSession(
        graph_model.SerializeToString(),
        sess_options=session_options(1),
        providers=["CPUExecutionProvider"],
    )
    frames = np.random.default_rng(0).standard_normal((4, 3, 416, 416)).astype(np.float32)
    together = session.run(None, {"input": frames})
    apart = [detector.run_raw(frames[i : i + 1]) for i in range(4)]
    gap = max(
        float(np.abs(one[k][0] - together[k][i]).max())
        for i, one in enumerate(apart)
        for k in range(6)
    )
    cost = {}
    for batch in (1, 4):
        feed = {"input": frames[:batch]}
        session.run(None, feed)
        rounds = []
        for _ in range(5):
            c0 = process_cpu()
            for _ in range(8 // batch):
                session.run(None, feed)
            rounds.append((process_cpu() - c0) / 8)
        cost[batch] = min(rounds) * 1000
    print(
        f"   batch-capable copy (outputs {'the same' if gap == 0 else f'within {gap:.1e}'}),"
        " one thread:"
        f" CPU per frame batch 1 {cost[1]:.2f} ms, batch 4 {cost[4]:.2f} ms,"
        f" ratio {cost[4] / cost[1]:.3f}"
    )
