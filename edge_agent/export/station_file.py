"""The monitoring-station file of Circular 10/2021/TT-BTNMT (Appendix 15), as the provincial
environment departments' servers take it.

One UTF-8 text file per station and period (5 minutes), named
`<Province>_<Facility>_<Station>_<yyyyMMddHHmmss>.txt` and put into `<Station>/yyyy/MM/dd/`;
one line per parameter, tab-separated: parameter symbol (Table 34), the period's mean with a
'.' decimal, unit, time `yyyyMMddHHmmss`, and the instrument status: 00 measuring,
01 calibrating, 02 instrument fault. Times are local (Vietnam: UTC+7).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from edge_agent.config.environment import StationParameter

MEASURING, CALIBRATING, FAULT = "00", "01", "02"
_STATUS_CODE = {"normal": MEASURING, "calibrating": CALIBRATING, "fault": FAULT}
LINE_END = "\r\n"  # the departments' receivers are Windows software; CRLF reads everywhere


@dataclass
class Samples:
    """What one parameter read during one period, by instrument status."""

    values: dict[str, list[float]] = field(
        default_factory=lambda: {MEASURING: [], CALIBRATING: [], FAULT: []}
    )
    seen: set[str] = field(default_factory=set)  # statuses met, with or without a number
    bad: int = 0

    def add(self, status: str, value: float | None) -> None:
        code = _STATUS_CODE.get(status, FAULT)
        usable = value is not None and math.isfinite(value)
        if code == MEASURING and not usable:
            self.bad += 1  # NaN or out of range: not a measurement
            return
        self.seen.add(code)
        if value is not None and usable:
            self.values[code].append(value)

    def outcome(self) -> tuple[str, float | None]:
        """The period's status (the worst one met) and the mean of the values taken under
        it. No usable value at all is an instrument fault without a value."""
        for code in (FAULT, CALIBRATING, MEASURING):
            if code in self.seen:
                values = self.values[code]
                return code, (math.fsum(values) / len(values)) if values else None
        return FAULT, None


def local_stamp(ts: float, offset_s: int) -> str:
    """`yyyyMMddHHmmss` in local time."""
    zone = dt.timezone(dt.timedelta(seconds=offset_s))
    return dt.datetime.fromtimestamp(ts, tz=zone).strftime("%Y%m%d%H%M%S")


def file_name(province: str, facility: str, station: str, end: float, offset_s: int) -> str:
    return f"{province}_{facility}_{station}_{local_stamp(end, offset_s)}.txt"


def station_dir(station: str, end: float, offset_s: int) -> str:
    """`<Station>/yyyy/MM/dd` of the period's local date."""
    stamp = local_stamp(end, offset_s)
    return f"{station}/{stamp[:4]}/{stamp[4:6]}/{stamp[6:8]}"


def format_value(value: float | None, parameter: StationParameter) -> str:
    """The value with a '.' decimal (whatever the locale) and the parameter's digits."""
    if value is None:
        return ""
    text = f"{value * parameter.scale:.{parameter.decimals}f}"
    return text.lstrip("-") if float(text) == 0 else text


def lines(
    parameters: Sequence[StationParameter],
    samples: Sequence[Samples | None],
    end: float,
    offset_s: int,
) -> list[str]:
    """The file's lines, one per parameter, in the configured order."""
    stamp = local_stamp(end, offset_s)
    out = []
    for parameter, taken in zip(parameters, samples, strict=True):
        status, value = (taken or Samples()).outcome()
        out.append(
            "\t".join(
                (
                    parameter.file_code,
                    format_value(value, parameter),
                    parameter.file_unit,
                    stamp,
                    status,
                )
            )
        )
    return out


def render(text_lines: Iterable[str]) -> bytes:
    return "".join(line + LINE_END for line in text_lines).encode("utf-8")
