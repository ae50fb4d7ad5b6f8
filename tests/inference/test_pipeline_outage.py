"""The camera pipeline during an outage: no frames come, yet the bins close on the clock
with their coverage, and the analysis entry carries the page's summary."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_agent.config import CameraConfig, DetectorConfig
from edge_agent.contract import Kind
from edge_agent.health import ComponentHealth
from edge_agent.inference.pipeline import CameraPipeline, InferenceService


@dataclass(frozen=True)
class Frame:
    image: np.ndarray
    ts: float


@pytest.mark.asyncio
async def test_bins_close_during_an_outage_with_their_coverage(model_dir: Path) -> None:
    # Ten seconds of frames that ended two minutes ago, then the camera went silent.
    start = time.time() - 130
    frames = [Frame(np.full((240, 320, 3), 90, np.uint8), start + k * 0.2) for k in range(51)]

    async def source(timeout: float) -> Frame | None:
        if frames:
            return frames.pop(0)
        await asyncio.sleep(min(timeout, 0.05))
        return None

    counts: list[dict[str, Any]] = []
    got_bins = asyncio.Event()

    async def sink(kind: Kind, data: dict[str, Any], stream: str, ts: float) -> None:
        if kind is Kind.COUNT:
            counts.append(data)
            if len(counts) >= 2:
                got_bins.set()

    config = CameraConfig(name="gate", source="x", fps=5, count_interval_s=60)
    analysis = ComponentHealth("analysis:gate")
    service = InferenceService(
        DetectorConfig(), model_dir=model_dir, health=ComponentHealth("inference")
    )
    async with service:
        pipeline = CameraPipeline(
            config, frames=source, service=service, sink=sink, health=analysis
        )
        async with pipeline:
            task = asyncio.create_task(pipeline.run())
            await asyncio.wait_for(got_bins.wait(), timeout=60)
            task.cancel()
    first, second = counts[0], counts[1]
    assert first["zone"] == "frame" and second["zone"] == "frame"
    # Ten seconds of frames within the first two 60 s bins, the rest an outage.
    covered = first["coverage"] * 60 + second["coverage"] * 60
    assert 9.5 <= covered <= 10.5
    assert first["coverage"] < 1 and second["coverage"] < 1
    facts = analysis.snapshot()["facts"]
    assert facts["today"] == {} and facts["last_rule_events"] == []
    assert "today_date" in facts and "today_lines" in facts
