"""`edge-agent doctor`: the technician's check after an install, or when something is wrong.

Each check gives findings, OK, WARN or FAIL, with a stable code and parameters; the text and
the fix come from `messages`, in Vietnamese or English. Like app.py this package sits on top
and uses the parts themselves (the loader, the detector, capture, the sensor drivers, the
sync link), so that what it checks is what the agent will do.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

from edge_agent.config import DEFAULT_CONFIG_PATH, load_settings
from edge_agent.doctor.broker import check_broker
from edge_agent.doctor.findings import Finding, Report, Status, finding
from edge_agent.doctor.local import (
    check_cameras,
    check_clock,
    check_model,
    check_node,
    check_sensors,
    check_state,
    check_web,
)
from edge_agent.errors import ConfigError

__all__ = ["Finding", "Report", "Status", "diagnose", "run_doctor"]


async def diagnose(
    config_path: Path | None, *, env: Mapping[str, str] | None = None
) -> tuple[Report, str]:
    """Run every check; returns the report and the configured page language."""
    path = config_path or (DEFAULT_CONFIG_PATH if DEFAULT_CONFIG_PATH.exists() else None)
    shown = str(path) if path else "embedded default"
    try:
        settings = load_settings(path, env=env)
    except ConfigError as exc:
        problems = "; ".join(exc.problems)
        invalid = finding("config", Status.FAIL, "config_invalid", path=shown, problems=problems)
        return Report((invalid,)), "vi"
    findings = [
        finding("config", Status.OK, "config_ok", path=shown)
        if path
        else finding("config", Status.WARN, "config_default")
    ]
    findings += check_node(settings)
    findings += check_state(settings)
    findings += await asyncio.to_thread(check_model, settings)
    findings += await asyncio.to_thread(check_cameras, settings)
    findings += await asyncio.to_thread(check_sensors, settings)
    broker, certificate = await check_broker(settings)
    findings.append(check_clock(settings, path, certificate))
    findings += broker
    findings.append(await asyncio.to_thread(check_web, settings))
    return Report(tuple(findings)), settings.web.language


def run_doctor(config_path: Path | None, *, lang: str | None, as_json: bool, out: TextIO) -> int:
    """Print the report; 1 when anything failed, else 0."""
    report, language = asyncio.run(diagnose(config_path))
    language = lang or language
    out.write((report.as_json(language) if as_json else report.as_text(language)) + "\n")
    return 1 if report.failed else 0
