"""The checks on this machine: identity, state directory and disk, model, cameras, sensors,
clock and the status page port. Each returns findings; none raises."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import pwd
import shutil
import socket
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from edge_agent.config import Settings
from edge_agent.doctor.findings import Finding, Status, finding
from edge_agent.errors import EdgeAgentError

T = TypeVar("T")
SERVICE_USER = "edge-agent"
GENERIC_IDS = {
    "localhost", "debian", "ubuntu", "raspberrypi", "raspberry", "pi", "orangepi", "armbian",
    "dietpi", "vm", "node", "node-01", "node1", "edge", "default", "test", "server", "host",
}  # fmt: skip
MIN_FREE_BYTES = 64 * 1024 * 1024
CLOCK_SLACK_S = 86400.0


def size(count: float) -> str:
    for unit in ("B", "KiB", "MiB"):
        if count < 1024:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} GiB"


def utc(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M")


def within(seconds: float, work: Callable[[], T]) -> T:
    """`work()` in a daemon thread; TimeoutError after `seconds` (a hung device read or
    camera open cannot be interrupted, so its thread is left behind)."""
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(work())
        except BaseException as exc:  # handed to the caller below
            error.append(exc)

    thread = threading.Thread(target=target, name="doctor-check", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise TimeoutError(f"no answer within {seconds:.0f} s")
    if error:
        raise error[0]
    return result[0]


# -- checks -------------------------------------------------------------------------------


def check_node(settings: Settings) -> list[Finding]:
    node = settings.node
    name = node.id.lower()
    if name in GENERIC_IDS or name.startswith(("localhost", "ip-")):
        example = f"{node.district}-01" if node.district != "district" else "hk-01"
        found = [finding("node", Status.FAIL, "node_generic", node=node.id, example=example)]
    else:
        found = [finding("node", Status.OK, "node_ok", node=node.id, district=node.district)]
    if node.district in ("district", "district-01"):
        found.append(finding("node", Status.WARN, "district_default", district=node.district))
    return found


def _service_cannot_write(path: Path) -> dict[str, object] | None:
    """Run as root, the doctor also checks for the service's user, which the unit runs as:
    the owner and mode that keep it out, or None."""
    try:
        user = pwd.getpwnam(SERVICE_USER)
    except KeyError:
        return None
    info = path.stat()
    if info.st_uid == user.pw_uid:
        allowed = info.st_mode & 0o300 == 0o300
    elif info.st_gid in os.getgrouplist(SERVICE_USER, user.pw_gid):
        allowed = info.st_mode & 0o030 == 0o030
    else:
        allowed = info.st_mode & 0o003 == 0o003
    if allowed:
        return None
    owner = f"{info.st_uid}:{info.st_gid}"
    return {"user": SERVICE_USER, "owner": owner, "mode": oct(info.st_mode & 0o7777)}


def check_state(settings: Settings) -> list[Finding]:
    path = settings.paths.state_dir
    try:
        if not path.is_dir():
            what = "is not a directory" if path.exists() else "does not exist"
            raise NotADirectoryError(f"{path} {what}")
        probe = path / f".doctor-{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        return [finding("state", Status.FAIL, "state_unwritable", path=path, error=exc)]
    if os.geteuid() == 0 and (denied := _service_cannot_write(path)) is not None:
        return [finding("state", Status.FAIL, "state_not_for_service", path=path, **denied)]
    found = [finding("state", Status.OK, "state_ok", path=path)]
    outbox = path / "outbox.sqlite3"
    used = outbox.stat().st_size if outbox.exists() else 0
    free = shutil.disk_usage(path).free
    cap = settings.outbox.max_bytes
    if free < MIN_FREE_BYTES:
        found.append(finding("disk", Status.FAIL, "disk_full", path=path, free=size(free)))
    elif free + used < cap:
        found.append(
            finding("disk", Status.WARN, "disk_low", path=path, free=size(free), cap=size(cap))
        )
    else:
        found.append(finding("disk", Status.OK, "disk_ok", free=size(free), cap=size(cap)))
    return found


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_model(settings: Settings) -> list[Finding]:
    if not any(camera.enabled for camera in settings.cameras):
        return [finding("model", Status.OK, "model_not_needed")]
    from edge_agent.inference.detector import SHIPPED_MODEL, Detector

    config = settings.detector
    model = config.model or settings.paths.model_dir / SHIPPED_MODEL[config.variant]
    if not model.is_file():
        return [finding("model", Status.FAIL, "model_missing", file=model)]
    if config.model is None:
        try:
            manifest = json.loads((model.parent / "MANIFEST.json").read_text(encoding="utf-8"))
            expected = manifest["files"][model.name]
        except (OSError, ValueError, KeyError, TypeError):
            expected = None
        if expected is None or _sha256(model) != expected:
            return [finding("model", Status.FAIL, "model_altered", file=model)]
    try:
        detector = Detector.from_config(config, model_dir=settings.paths.model_dir)
    except EdgeAgentError as exc:
        return [finding("model", Status.FAIL, "model_unloadable", file=model, error=exc)]
    code = "model_ok" if config.model is None else "model_custom"
    return [finding("model", Status.OK, code, file=model, classes=len(detector.labels))]


def check_cameras(settings: Settings) -> list[Finding]:
    found: list[Finding] = []
    for camera in settings.cameras:
        if not camera.enabled:
            continue
        from edge_agent.sensors.camera import open_source, redact

        seconds = camera.open_timeout_s + camera.read_timeout_s
        where = {"name": camera.name, "source": redact(camera.source), "seconds": f"{seconds:g}"}

        def first_frame(config: Any = camera) -> Any:
            capture = open_source(config)
            try:
                ok, frame = capture.read()
            finally:
                capture.release()
            return frame if ok else None

        try:
            frame = within(seconds, first_frame)
        except (EdgeAgentError, TimeoutError, OSError) as exc:
            found.append(
                finding(f"camera:{camera.name}", Status.FAIL, "camera_failed", error=exc, **where)
            )
            continue
        if frame is None:
            found.append(finding(f"camera:{camera.name}", Status.FAIL, "camera_no_frame", **where))
            continue
        height, width = frame.shape[:2]
        found.append(
            finding(
                f"camera:{camera.name}", Status.OK, "camera_ok", width=width, height=height, **where
            )
        )
    return found


def check_sensors(settings: Settings) -> list[Finding]:
    from edge_agent.sensors.registry import build_driver

    found: list[Finding] = []
    for sensor in settings.sensors:
        if not sensor.enabled:
            continue
        check = f"sensor:{sensor.name}"
        try:
            driver = build_driver(sensor, state_dir=settings.paths.state_dir)
            try:
                samples = within(sensor.timeout_s, driver.read)
            finally:
                driver.close()
        except Exception as exc:  # any driver failure is this sensor's finding
            found.append(
                finding(
                    check,
                    Status.FAIL,
                    "sensor_failed",
                    name=sensor.name,
                    kind=sensor.kind,
                    error=exc,
                )
            )
            continue
        code = "sensor_simulated" if sensor.kind == "simulated" else "sensor_ok"
        found.append(
            finding(check, Status.OK, code, name=sensor.name, kind=sensor.kind, count=len(samples))
        )
    return found


def kernel_clock_synchronised() -> bool | None:
    """The kernel's NTP state (adjtimex read-only): None when it cannot be read."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        state = libc.adjtimex(ctypes.create_string_buffer(512))  # a zeroed struct timex
    except (OSError, AttributeError):
        return None
    time_error = 5  # TIME_ERROR: the clock is not synchronised
    return None if state < 0 else state != time_error


def check_clock(settings: Settings, config_path: Path | None, certificate: Any | None) -> Finding:
    now = time.time()
    references = [Path(__file__), settings.paths.state_dir / "outbox.sqlite3"]
    if config_path is not None:
        references.append(config_path)
    for reference in references:
        with contextlib.suppress(OSError):
            then = reference.stat().st_mtime
            if now < then - CLOCK_SLACK_S:
                return finding(
                    "clock",
                    Status.FAIL,
                    "clock_behind",
                    now=utc(now),
                    reference=reference,
                    then=utc(then),
                )
    if certificate is not None:
        start = certificate.not_valid_before_utc.timestamp()
        end = certificate.not_valid_after_utc.timestamp()
        if not start <= now <= end:
            return finding(
                "clock",
                Status.FAIL,
                "clock_outside_certificate",
                now=utc(now),
                start=utc(start),
                end=utc(end),
            )
    synchronised = kernel_clock_synchronised()
    if synchronised is False:
        return finding("clock", Status.WARN, "clock_unsynchronised", now=utc(now))
    return finding(
        "clock", Status.OK, "clock_ok" if synchronised else "clock_unknown", now=utc(now)
    )


def check_web(settings: Settings) -> Finding:
    web = settings.web
    if not web.enabled:
        return finding("web", Status.OK, "web_disabled")
    where = {"host": web.host, "port": web.port}
    if web.port == 0:
        return finding("web", Status.OK, "web_ok", **where)
    try:
        with socket.create_server((web.host, web.port)):
            return finding("web", Status.OK, "web_ok", **where)
    except OSError:
        pass
    host = "127.0.0.1" if web.host in ("0.0.0.0", "") else ("::1" if web.host == "::" else web.host)
    url = f"http://{host if ':' not in host else f'[{host}]'}:{web.port}/api/status"
    try:
        with urllib.request.urlopen(url, timeout=3) as answer:
            ours = json.loads(answer.read()).get("node", {}).get("id") == settings.node.id
    except (OSError, ValueError, AttributeError):
        ours = False
    return finding(
        "web", Status.OK if ours else Status.FAIL, "web_ours" if ours else "web_taken", **where
    )
