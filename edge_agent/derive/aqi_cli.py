"""`edge-agent aqi`: VN_AQI from hourly means given on the command line or in a CSV file,
with the very functions the derived stream uses (vn_aqi.py). No heavy imports."""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edge_agent.derive.vn_aqi import (
    POLLUTANTS,
    AqiResult,
    daily_aqi,
    daily_from_hours,
    hourly_aqi,
)
from edge_agent.errors import EdgeAgentError

EXIT_OK = 0
_ALIASES = {
    "pm2_5": "pm2_5",
    "pm25": "pm2_5",
    "pm2.5": "pm2_5",
    "pm10": "pm10",
    "o3": "o3",
    "co": "co",
    "so2": "so2",
    "no2": "no2",
}
_TIME_COLUMNS = ("time", "hour", "ts")
_INPUT_LABELS = {
    "hourly": {"pm2_5": "NowCast", "pm10": "NowCast"},
    "daily": {"pm2_5": "24-h mean", "pm10": "24-h mean", "o3_1h": "max 1-h", "o3_8h": "max 8-h"},
}


def _number(text: str, what: str) -> float | None:
    text = text.strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise EdgeAgentError(f"{what}: {text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise EdgeAgentError(f"{what}: {text!r} is not a concentration (µg/m³, 0 or more)")
    return value


def _hours(text: str) -> list[float | None]:
    try:
        values = [_number(part, "hours") for part in text.split(",")]
    except EdgeAgentError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if len(values) > 12:
        raise argparse.ArgumentTypeError("at most 12 hours (NowCast uses the last 12)")
    return values


def _concentration(text: str) -> float:
    try:
        value = _number(text, "value")
    except EdgeAgentError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if value is None:
        raise argparse.ArgumentTypeError("empty value")
    return value


def add_aqi_parser(sub: Any) -> None:
    """Register `edge-agent aqi` on the command line's subparsers."""
    aqi = sub.add_parser(
        "aqi",
        help="compute VN_AQI (Decision 1459/QĐ-TCMT) from hourly means",
        description="Compute the hourly (NowCast) or daily VN_AQI of Decision 1459/QĐ-TCMT"
        " from hourly means in µg/m³, with its sub-indices, category and colour: the same"
        " code the agent's vn_aqi_hourly and vn_aqi_daily readings come from. Example:"
        " `edge-agent aqi --pm25-hours 60,30,30,30,30,30,30,30,30,30,30,30` or"
        " `edge-agent aqi --pm25 35 --pm10 80 --daily`.",
    )
    for name, pollutant in (("pm25", "PM2.5"), ("pm10", "PM10")):
        aqi.add_argument(
            f"--{name}",
            type=_concentration,
            metavar="UG_M3",
            help=f"hourly: the {pollutant} NowCast (used as given); --daily: its 24-hour mean",
        )
        aqi.add_argument(
            f"--{name}-hours",
            type=_hours,
            metavar="C1,C2,...",
            default=[],
            help=f"hourly: the last 12 {pollutant} hourly means, most recent first; an empty"
            " entry is a missing hour (NowCast needs 2 of the last 3)",
        )
    for name in ("o3", "co", "so2", "no2"):
        aqi.add_argument(
            f"--{name}",
            type=_concentration,
            metavar="UG_M3",
            help=f"hourly: this hour's {name.upper()} mean; --daily: the day's highest 1-hour mean",
        )
    aqi.add_argument(
        "--o3-8h",
        type=_concentration,
        metavar="UG_M3",
        help="--daily: the day's highest 8-hour O3 mean",
    )
    aqi.add_argument(
        "--csv",
        type=Path,
        metavar="FILE",
        help="hourly means in a CSV file, oldest first: columns pm2_5 (or pm25), pm10, o3,"
        " co, so2, no2 and optionally time (ISO 8601, the hour's end); an empty cell is a"
        " missing hour. Prints one result per row, or with --daily one per day",
    )
    aqi.add_argument(
        "--daily",
        action="store_true",
        help="the daily AQI (24-hour means for PM, the day's highest 1-hour means for gases)",
    )
    aqi.add_argument("--json", action="store_true", help="print JSON instead of text")
    aqi.set_defaults(handler=run_aqi_command)


def run_aqi_command(args: argparse.Namespace) -> int:
    if args.csv is not None:
        if any(getattr(args, k) not in (None, []) for k in _DIRECT_ARGS):
            raise EdgeAgentError("give the hourly means either with --csv or as options")
        labelled = _from_csv(args.csv, daily=args.daily)
    else:
        labelled = [(None, _from_options(args))]
    if args.json:
        items = [_as_json(label, result) for label, result in labelled]
        print(json.dumps(items if args.csv is not None else items[0], ensure_ascii=False))
    else:
        print("\n\n".join(_as_text(label, result) for label, result in labelled))
    return EXIT_OK


_DIRECT_ARGS = (
    "pm25",
    "pm10",
    "pm25_hours",
    "pm10_hours",
    "o3",
    "co",
    "so2",
    "no2",
    "o3_8h",
)


def _from_options(args: argparse.Namespace) -> AqiResult:
    if args.daily:
        if args.pm25_hours or args.pm10_hours:
            raise EdgeAgentError("--daily takes 24-hour means (--pm25, --pm10), not --*-hours")
        result = daily_aqi(
            pm2_5=args.pm25,
            pm10=args.pm10,
            o3_1h_max=args.o3,
            o3_8h_max=args.o3_8h,
            co_1h_max=args.co,
            so2_1h_max=args.so2,
            no2_1h_max=args.no2,
        )
    else:
        if args.o3_8h is not None:
            raise EdgeAgentError("--o3-8h belongs to --daily")
        try:
            result = hourly_aqi(
                pm2_5_hours=args.pm25_hours,
                pm10_hours=args.pm10_hours,
                pm2_5=args.pm25,
                pm10=args.pm10,
                o3=args.o3,
                co=args.co,
                so2=args.so2,
                no2=args.no2,
            )
        except ValueError as exc:
            raise EdgeAgentError(f"{exc} (--pm25 or --pm25-hours)") from None
    if result.aqi is None:
        raise EdgeAgentError(f"no VN_AQI: {result.reason}")
    return result


def _read_csv(path: Path) -> tuple[list[str | None], dict[str, list[float | None]]]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = [h.strip().lower() for h in reader.fieldnames or []]
            columns = {h: _ALIASES[h] for h in header if h in _ALIASES}
            time_column = next((h for h in header if h in _TIME_COLUMNS), None)
            unknown = [h for h in header if h not in _ALIASES and h != time_column]
            if unknown or not columns:
                raise EdgeAgentError(
                    f"{path}: columns {unknown or header} not known; use time and"
                    f" {', '.join(POLLUTANTS)}"
                )
            times: list[str | None] = []
            series: dict[str, list[float | None]] = {p: [] for p in columns.values()}
            for line, raw in enumerate(reader, start=2):
                row = {k.strip().lower(): (v or "") for k, v in raw.items() if k is not None}
                times.append(row.get(time_column) if time_column else None)
                for column, pollutant in columns.items():
                    series[pollutant].append(_number(row.get(column, ""), f"{path}:{line}"))
    except OSError as exc:
        raise EdgeAgentError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise EdgeAgentError(f"{path}: not a UTF-8 CSV file ({exc})") from None
    if not times:
        raise EdgeAgentError(f"{path}: no rows")
    return times, series


def _from_csv(path: Path, *, daily: bool) -> list[tuple[str | None, AqiResult]]:
    times, series = _read_csv(path)
    if not daily:
        out = []
        for i, label in enumerate(times):
            window = slice(max(0, i - 11), i + 1)
            out.append(
                (
                    label,
                    hourly_aqi(
                        pm2_5_hours=series.get("pm2_5", [])[window][::-1],
                        pm10_hours=series.get("pm10", [])[window][::-1],
                        **{p: series[p][i] for p in ("o3", "co", "so2", "no2") if p in series},
                    ),
                )
            )
        return out
    return [
        (day, daily_from_hours(hours, o3_before=before))
        for day, hours, before in _days(path, times, series)
    ]


def _days(
    path: Path, times: Sequence[str | None], series: dict[str, list[float | None]]
) -> list[tuple[str | None, dict[str, list[float | None]], list[float | None]]]:
    if times[0] is None:
        if len(times) > 24:
            raise EdgeAgentError(
                f"{path}: without a time column --daily takes one day (24 rows at most)"
            )
        return [(None, series, [])]
    slots: dict[dt.date, dict[str, list[float | None]]] = {}
    for i, text in enumerate(times):
        try:
            end = dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
        except ValueError:
            raise EdgeAgentError(f"{path}:{i + 2}: time {text!r} is not ISO 8601") from None
        # A row is the hour ending at its time: 00:00 closes the previous day.
        last_second = end - dt.timedelta(seconds=1)
        day = slots.setdefault(last_second.date(), {p: [None] * 24 for p in series})
        for pollutant, values in series.items():
            day[pollutant][last_second.hour] = values[i]
    out: list[tuple[str | None, dict[str, list[float | None]], list[float | None]]] = []
    for date in sorted(slots):
        previous = slots.get(date - dt.timedelta(days=1), {})
        out.append((date.isoformat(), slots[date], previous.get("o3", [])[17:]))
    return out


def _as_json(label: str | None, result: AqiResult) -> dict[str, Any]:
    item: dict[str, Any] = {"period": result.period}
    if label is not None:
        item["time" if result.period == "hourly" else "day"] = label
    item["aqi"] = result.aqi
    item.update(result.fields())
    return item


def _as_text(label: str | None, result: AqiResult) -> str:
    title = {"hourly": "VN_AQI giờ (hourly)", "daily": "VN_AQI ngày (daily)"}[result.period]
    if label:
        title += f" {label}"
    cat = result.category
    if cat is None or result.aqi is None:
        lines = [f"{title}: none ({result.reason})"]
    else:
        lines = [
            f"{title}: {result.aqi} {cat.label_vi} ({cat.code}),"
            f" RGB {','.join(str(c) for c in cat.color)}; dominant {result.dominant}"
        ]
    labels = _INPUT_LABELS[result.period]
    for pollutant in POLLUTANTS:
        inputs = [
            f"{labels.get(key, 'mean' if result.period == 'hourly' else 'max 1-h')} {value:.2f}"
            for key, value in result.inputs.items()
            if key == pollutant or key.startswith(f"{pollutant}_")
        ]
        if pollutant in result.sub_indices or inputs:
            index = result.sub_indices.get(pollutant)
            shown = "-" if index is None else str(index)
            lines.append(f"  {pollutant:<6} {', '.join(inputs)} µg/m³ -> {shown}")
    return "\n".join(lines)
