"""The monitoring-station files of Circular 10/2021/TT-BTNMT, uploaded to a real FTP server:
names, folders and lines; the backlog after an outage; cut-off uploads; calibration."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from edge_agent.config.environment import StationExportConfig, StationParameter
from edge_agent.contract import Kind, reading_data
from edge_agent.export.component import StationExport
from edge_agent.export.station_file import Samples, file_name, lines, local_stamp, station_dir
from edge_agent.health import ComponentHealth, State
from tests.derive.conftest import Clock, Events

from .conftest import PASSWORD, USER, FtpServer

VN = 7 * 3600
# 2026-11-27 08:00:00 in Vietnam
T0 = dt.datetime(2026, 11, 27, 1, 0, tzinfo=dt.UTC).timestamp()
PERIOD = 300.0
PARAMETERS = [{"quantity": "wastewater_flow"}, {"quantity": "ph"}, {"quantity": "cod"}]


def config(server: FtpServer, **extra: Any) -> StationExportConfig:
    return StationExportConfig(
        **{
            "enabled": True,
            "province": "HN",
            "facility": "ABCD",
            "host": "127.0.0.1",
            "port": server.port,
            "username": USER,
            "password": PASSWORD,
            "stations": [{"code": "NUO001", "parameters": PARAMETERS}],
            "grace_s": 30,
        }
        | extra
    )


def path_of(end: float, station: str = "NUO001") -> str:
    return f"{station_dir(station, end, VN)}/{file_name('HN', 'ABCD', station, end, VN)}"


def reading(quantity: str, value: float | None, **extra: Any) -> dict[str, Any]:
    quality = "ok" if value is not None else "bad"
    unit = {"wastewater_flow": "m3/h", "ph": "[pH]", "cod": "mg/L"}.get(quantity, "1")
    return (
        reading_data(sensor="ww", quantity=quantity, value=value, unit=unit, quality=quality)
        | extra
    )


@contextlib.asynccontextmanager
async def running_export(
    state_dir: Path, cfg: StationExportConfig, clock: Clock, events: Events | None = None
) -> AsyncIterator[StationExport]:
    export = StationExport(
        cfg,
        state_dir=state_dir,
        sink=events or Events(),
        health=ComponentHealth("station_export"),
        clock=clock,
        tick_s=0.01,
        retry_base_s=0.05,
    )
    async with export:
        task = asyncio.create_task(export.run())
        try:
            async with asyncio.timeout(10):
                while True:  # its first turn fixes the first period; wait for it
                    if export.health.last_beat is not None:
                        break
                    await asyncio.sleep(0.005)
            yield export
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def wait_files(
    server: FtpServer, check: Callable[[dict[str, bytes]], bool], timeout_s: float = 20
) -> dict[str, bytes]:
    async with asyncio.timeout(timeout_s):
        while True:
            files = await asyncio.to_thread(server.files)
            if check(files):
                return files
            await asyncio.sleep(0.02)


def normal_period(export: StationExport, start: float, cod: float = 45.0) -> None:
    export.offer(Kind.READING, reading("wastewater_flow", 12.5), "ww", start + 10)
    export.offer(Kind.READING, reading("wastewater_flow", 13.0), "ww", start + 150)
    export.offer(Kind.READING, reading("ph", 7.05), "ww", start + 10)
    export.offer(Kind.READING, reading("cod", cod), "ww", start + 10)


def test_names_folders_and_lines() -> None:
    end = T0 + PERIOD
    assert local_stamp(end, VN) == "20261127080500"
    assert file_name("HN", "ABCD", "NUO001", end, VN) == "HN_ABCD_NUO001_20261127080500.txt"
    assert station_dir("NUO001", end, VN) == "NUO001/2026/11/27"
    # the period ending at midnight is the day's last file, in the folder of the new date
    midnight = dt.datetime(2026, 11, 27, 17, 0, tzinfo=dt.UTC).timestamp()
    assert file_name("HN", "ABCD", "KT01", midnight, VN) == "HN_ABCD_KT01_20261128000000.txt"
    params = [
        StationParameter(quantity="wastewater_flow"),
        StationParameter(quantity="ph"),
        StationParameter(quantity="cod", decimals=1),
        StationParameter(quantity="tss"),
        StationParameter(quantity="stack_so2"),
        StationParameter(quantity="stack_o2", code="O2", unit="%", scale=1.0),
    ]
    flow, ph, cod, tss, so2, o2 = (Samples() for _ in range(6))
    flow.add("normal", 12.5)
    flow.add("normal", 13.0)
    ph.add("calibrating", 7.2)  # calibration at any time of the period: 01, its value
    ph.add("normal", 7.0)
    cod.add("normal", 45.25)
    cod.add("normal", float("nan"))  # a NaN is no measurement, and not a fault either
    tss.add("normal", None)  # nothing usable: 02, no value
    so2.add("fault", None)
    so2.add("normal", 80.0)
    o2.add("normal", -0.001)
    assert lines(params, [flow, ph, cod, tss, so2, o2], end, VN) == [
        "Flow\t12.75\tm3/h\t20261127080500\t00",
        "pH\t7.20\t-\t20261127080500\t01",
        "COD\t45.2\tmg/L\t20261127080500\t00",  # 45.25 with one digit: round half even
        "TSS\t\tmg/L\t20261127080500\t02",
        "SO2\t\tmg/Nm3\t20261127080500\t02",
        "O2\t0.00\t%\t20261127080500\t00",
    ]
    assert lines(params[:1], [None], end, VN) == ["Flow\t\tm3/h\t20261127080500\t02"]


@pytest.mark.asyncio
async def test_files_arrive_with_names_folders_and_lines(
    ftp_server: FtpServer, tmp_path: Path
) -> None:
    clock = Clock(T0 + 1)
    cfg = config(
        ftp_server,
        stations=[
            {"code": "NUO001", "parameters": PARAMETERS},
            {"code": "KHI01", "parameters": [{"quantity": "stack_so2"}, {"quantity": "stack_o2"}]},
        ],
    )
    async with running_export(tmp_path / "state", cfg, clock) as export:
        normal_period(export, T0)
        export.offer(Kind.READING, reading("stack_so2", 120.0, unit="mg/Nm3"), "khi", T0 + 20)
        export.offer(Kind.READING, reading("stack_o2", 9.5, unit="%"), "khi", T0 + 20)
        clock.now = T0 + PERIOD + 31
        wanted = {path_of(T0 + PERIOD), path_of(T0 + PERIOD, "KHI01")}
        files = await wait_files(ftp_server, lambda f: wanted <= set(f))
        await export_uploaded(export, 2)
        health = export.health.snapshot()
    assert files == {
        path_of(T0 + PERIOD): (
            b"Flow\t12.75\tm3/h\t20261127080500\t00\r\n"
            b"pH\t7.05\t-\t20261127080500\t00\r\n"
            b"COD\t45.00\tmg/L\t20261127080500\t00\r\n"
        ),
        path_of(T0 + PERIOD, "KHI01"): (
            b"SO2\t120.00\tmg/Nm3\t20261127080500\t00\r\nO2\t9.50\t%\t20261127080500\t00\r\n"
        ),
    }
    assert health["state"] == "ok" and health["counters"]["files_uploaded"] == 2
    # the node keeps what it sent, in the same layout
    sent = tmp_path / "state" / "station_export" / "sent" / path_of(T0 + PERIOD)
    assert await asyncio.to_thread(sent.read_bytes) == files[path_of(T0 + PERIOD)]


@pytest.mark.asyncio
async def test_calibrating_periods_carry_status_01(ftp_server: FtpServer, tmp_path: Path) -> None:
    clock = Clock(T0 + 1)
    async with running_export(tmp_path / "state", config(ftp_server), clock) as export:
        # The Modbus driver sends readings taken while calibrating as bad, with the status
        # and the instrument's number kept in raw.
        calibrating = reading("cod", None, raw="98.5", status="calibrating")
        export.offer(Kind.READING, calibrating, "ww", T0 + 10)
        export.offer(
            Kind.READING, reading("cod", None, raw="101.5", status="calibrating"), "ww", T0 + 70
        )
        export.offer(Kind.READING, reading("ph", None, raw="nan", status="fault"), "ww", T0 + 10)
        export.offer(Kind.READING, reading("wastewater_flow", 10.0), "ww", T0 + 10)
        clock.now = T0 + PERIOD + 31
        files = await wait_files(ftp_server, lambda f: path_of(T0 + PERIOD) in f)
    assert files[path_of(T0 + PERIOD)].decode().split("\r\n") == [
        "Flow\t10.00\tm3/h\t20261127080500\t00",
        "pH\t\t-\t20261127080500\t02",
        "COD\t100.00\tmg/L\t20261127080500\t01",
        "",
    ]


@pytest.mark.asyncio
async def test_backlog_after_an_ftp_outage_arrives_whole(
    ftp_server: FtpServer, tmp_path: Path
) -> None:
    clock, state = Clock(T0 + 1), tmp_path / "state"
    ftp_server.stop()
    async with running_export(state, config(ftp_server), clock) as export:
        for i in range(6):  # half an hour with the department's server down
            normal_period(export, T0 + i * PERIOD, cod=40.0 + i)
            clock.now = T0 + (i + 1) * PERIOD + 31
            await export_wrote(export, i + 1)
        await wait_state(export, State.FAILING)
        await eventually_fact(export, "pending_files", 6)
        assert await asyncio.to_thread(ftp_server.files) == {}
    # the agent restarts while the server is still down: the files wait on its disk
    async with running_export(state, config(ftp_server), clock) as export:
        ftp_server.start()
        await export_uploaded(export, 6)
        await wait_state(export, State.OK)
        files = await asyncio.to_thread(ftp_server.files)
    expected = {path_of(T0 + (i + 1) * PERIOD) for i in range(6)}
    assert set(files) == expected  # none missing, nothing else (no partial .tmp)
    for i in range(6):
        body = files[path_of(T0 + (i + 1) * PERIOD)].decode()
        stamp = local_stamp(T0 + (i + 1) * PERIOD, VN)
        assert body.endswith(f"COD\t{40 + i:.2f}\tmg/L\t{stamp}\t00\r\n")
    pending = state / "station_export" / "pending"
    assert await asyncio.to_thread(lambda: list(pending.rglob("*.txt"))) == []


@pytest.mark.asyncio
async def test_a_cut_off_upload_is_redone_from_scratch(
    ftp_server: FtpServer, tmp_path: Path
) -> None:
    ftp_server.cutoff.remaining = 2
    clock = Clock(T0 + 1)
    async with running_export(tmp_path / "state", config(ftp_server), clock) as export:
        normal_period(export, T0)
        clock.now = T0 + PERIOD + 31
        files = await wait_files(ftp_server, lambda f: path_of(T0 + PERIOD) in f)
        await export_uploaded(export, 1)  # the server has the file before it is counted
        failures = export.health.counters.get("files_uploaded"), export.health.last_error
    assert ftp_server.cutoff.remaining == 0  # both cuts happened
    assert list(files) == [path_of(T0 + PERIOD)]  # whole, under its final name only
    assert files[path_of(T0 + PERIOD)].startswith(b"Flow\t12.75\tm3/h\t20261127080500\t00\r\n")
    assert files[path_of(T0 + PERIOD)].count(b"\r\n") == 3
    assert failures[0] == 1 and "FTP" in failures[1]


@pytest.mark.asyncio
async def test_ftps(ftps_server: tuple[FtpServer, Path], tmp_path: Path) -> None:
    server, ca_file = ftps_server
    clock = Clock(T0 + 1)
    cfg = config(server, protocol="ftps", ca_file=str(ca_file))
    async with running_export(tmp_path / "state", cfg, clock) as export:
        normal_period(export, T0)
        clock.now = T0 + PERIOD + 31
        files = await wait_files(server, lambda f: path_of(T0 + PERIOD) in f)
    assert list(files) == [path_of(T0 + PERIOD)]


@pytest.mark.asyncio
async def test_a_full_spool_drops_the_oldest_and_says_so(
    ftp_server: FtpServer, tmp_path: Path
) -> None:
    ftp_server.stop()
    clock, events = Clock(T0 + 1), Events()
    cfg = config(ftp_server, max_pending_files=10)
    async with running_export(tmp_path / "state", cfg, clock, events) as export:
        for i in range(12):
            clock.now = T0 + (i + 1) * PERIOD + 31
            await export_wrote(export, i + 1)
        await events.wait_for(lambda: len(events.alerts()) == 2)
        pending = export.spool.pending()
    assert len(pending) == 10
    assert pending[0].name == file_name("HN", "ABCD", "NUO001", T0 + 3 * PERIOD, VN)
    first, second = events.alerts()
    assert first == {
        "alert": "station_files_dropped",
        "severity": "error",
        "count": 1,
        "first": file_name("HN", "ABCD", "NUO001", T0 + PERIOD, VN),
        "last": file_name("HN", "ABCD", "NUO001", T0 + PERIOD, VN),
    }
    assert second["first"] == file_name("HN", "ABCD", "NUO001", T0 + 2 * PERIOD, VN)


async def eventually_fact(export: StationExport, name: str, value: object) -> None:
    async with asyncio.timeout(60):
        while export.health.facts.get(name) != value:  # noqa: ASYNC110 (no event to await)
            await asyncio.sleep(0.01)


async def export_uploaded(export: StationExport, count: int) -> None:
    async with asyncio.timeout(60):
        while True:  # the health entry has no event to wait on; poll it
            if export.health.counters.get("files_uploaded", 0) >= count:
                return
            await asyncio.sleep(0.01)


async def export_wrote(export: StationExport, count: int) -> None:
    async with asyncio.timeout(60):
        while True:  # the health entry has no event to wait on; poll it
            if export.health.counters.get("files_written", 0) >= count:
                return
            await asyncio.sleep(0.01)


async def wait_state(export: StationExport, state: State) -> None:
    async with asyncio.timeout(60):
        while True:
            if export.health.state is state:
                return
            await asyncio.sleep(0.01)
