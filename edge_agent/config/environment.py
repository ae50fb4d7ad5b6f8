"""Environmental monitoring the way Vietnamese agencies read it: `[aqi]` (VN_AQI per Decision
1459/QĐ-TCMT), `[limits]` (QCVN 05:2023/BTNMT alerts) and `[station_export]` (the station
files of Circular 10/2021/TT-BTNMT). See docs/environment.md."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from edge_agent.config.base import Section

NAME = r"^[A-Za-z0-9_.-]+$"
# A code becomes part of a file name split by '_', so it may not contain one.
STATION_CODE = r"^[A-Za-z0-9.-]+$"
UTC_OFFSET = re.compile(r"^([+-])(\d{2}):(\d{2})$")

# Quantities of industrial-zone monitoring stations, read through the Modbus driver:
# reading quantity -> (parameter symbol of Circular 10/2021/TT-BTNMT, Appendix 15, Table 34;
# the reading's unit; the unit written in the station file). The file units are the usual
# ones; a department that lists others is served by each parameter's `unit`.
STATION_QUANTITIES: dict[str, tuple[str, str, str]] = {
    # wastewater
    "wastewater_flow": ("Flow", "m3/h", "m3/h"),
    "wastewater_temperature": ("Temp", "Cel", "°C"),
    "ph": ("pH", "[pH]", "-"),
    "tss": ("TSS", "mg/L", "mg/L"),
    "cod": ("COD", "mg/L", "mg/L"),
    "nh4": ("NH4", "mg/L", "mg/L"),
    "tn": ("TN", "mg/L", "mg/L"),
    "tp": ("TP", "mg/L", "mg/L"),
    "color": ("Color", "Pt/Co", "Pt-Co"),
    # stack emissions
    "stack_flow": ("Flow", "m3/h", "m3/h"),
    "stack_temperature": ("Temp", "Cel", "°C"),
    "stack_pm": ("PM", "mg/Nm3", "mg/Nm3"),
    "stack_so2": ("SO2", "mg/Nm3", "mg/Nm3"),
    "stack_no": ("NO", "mg/Nm3", "mg/Nm3"),
    "stack_no2": ("NO2", "mg/Nm3", "mg/Nm3"),
    "stack_co": ("CO", "mg/Nm3", "mg/Nm3"),
    "stack_o2": ("O2", "%", "%"),
    # ambient air stations
    "pm2_5": ("PM2,5", "ug/m3", "µg/m3"),
    "pm10": ("PM10", "ug/m3", "µg/m3"),
    "o3": ("O3", "ug/m3", "µg/m3"),
    "no2": ("NO2", "ug/m3", "µg/m3"),
    "so2": ("SO2", "ug/m3", "µg/m3"),
    "co": ("CO", "ug/m3", "µg/m3"),
}


def offset_seconds(value: str) -> int:
    """`+07:00` → 25200."""
    match = UTC_OFFSET.match(value)
    if match is None:
        raise ValueError(f"{value!r} is not a UTC offset like +07:00")
    sign, hours, minutes = match.groups()
    seconds = int(hours) * 3600 + int(minutes) * 60
    return -seconds if sign == "-" else seconds


def _check_offset(value: str) -> str:
    seconds = offset_seconds(value)
    if abs(seconds) > 14 * 3600 or seconds % 3600:
        raise ValueError("use a whole-hour offset within ±14:00 (Vietnam: +07:00)")
    return value


class AqiQuantities(Section):
    pm2_5: str = Field(default="pm2_5", pattern=NAME, description="Quantity carrying PM2.5.")
    pm10: str = Field(default="pm10", pattern=NAME, description="Quantity carrying PM10.")
    o3: str = Field(default="o3", pattern=NAME, description="Quantity carrying O3.")
    co: str = Field(default="co", pattern=NAME, description="Quantity carrying CO.")
    so2: str = Field(default="so2", pattern=NAME, description="Quantity carrying SO2.")
    no2: str = Field(default="no2", pattern=NAME, description="Quantity carrying NO2.")


class AqiConfig(Section):
    enabled: bool = Field(
        default=False, description="Publish VN_AQI (Decision 1459/QĐ-TCMT) from the readings."
    )
    name: str = Field(
        default="aqi",
        pattern=NAME,
        description="The `sensor` and stream of the vn_aqi_hourly and vn_aqi_daily readings.",
    )
    sensors: list[str] = Field(
        default_factory=list,
        description="Sensors whose readings feed the index (empty: every sensor); several "
        "sensors of one pollutant are averaged hour by hour.",
    )
    quantities: AqiQuantities = Field(
        default_factory=AqiQuantities, description="Which reading quantity is which pollutant."
    )
    daily: bool = Field(default=True, description="Also publish vn_aqi_daily after each day.")
    utc_offset: str = Field(
        default="+07:00",
        description="Local time of the hours and days (Vietnam: +07:00); a day runs from "
        "the hour ending 01:00 to the one ending 24:00. Also used by [limits].",
    )
    grace_s: float = Field(
        default=120.0,
        ge=0,
        le=3600,
        description="An hour is closed this long after it ends, so late readings still "
        "count; later ones are dropped and counted. Also used by [limits].",
    )
    min_samples_per_hour: int = Field(
        default=1,
        ge=1,
        le=3600,
        description="Usable readings an hour needs for its mean; fewer is a missing hour.",
    )
    min_coverage: float = Field(
        default=0.75,
        ge=0.5,
        le=1.0,
        description="Share of its hours an 8-hour or 24-hour mean needs (0.75: 6 of 8, "
        "18 of 24); less is a missing mean. Also used by [limits].",
    )
    checkpoint_s: float = Field(
        default=300.0,
        ge=1,
        le=3600,
        description="Seconds between saves of the open hour's sums under the state "
        "directory (a crash loses at most this much of the current hour).",
    )

    @field_validator("utc_offset")
    @classmethod
    def _offset(cls, value: str) -> str:
        return _check_offset(value)


class LimitRule(Section):
    quantity: str = Field(pattern=NAME, description="Reading quantity, e.g. pm2_5.")
    period: Literal["1h", "8h", "24h"] = Field(
        description="Averaging period: clock hour, last 8 hours, or local day."
    )
    limit: float = Field(gt=0, description="The mean must not exceed this.")
    unit: str = Field(
        default="ug/m3",
        description="Unit of the limit (ug/m3, mg/m3, ppb or ppm for air pollutants, "
        "which are compared in µg/m³; otherwise the readings' own unit).",
    )
    enabled: bool = Field(default=True, description="false switches a default rule off.")


class LimitsConfig(Section):
    enabled: bool = Field(
        default=False,
        description="Raise an `alert` when a period's mean exceeds its limit, and another "
        "when it returns.",
    )
    qcvn_defaults: bool = Field(
        default=True,
        description="Start from the ambient limits of QCVN 05:2023/BTNMT, Table 1.",
    )
    rules: list[LimitRule] = Field(
        default_factory=list,
        description="Limits added to the defaults; one with the quantity and period of a "
        "default replaces it.",
    )
    hysteresis: float = Field(
        default=0.05,
        ge=0,
        le=0.5,
        description="An exceeded limit counts as returned only once a mean is this share "
        "below it (0.05: at or under 95 %), so a mean at the border does not flap.",
    )
    sensors: list[str] = Field(
        default_factory=list, description="Sensors whose readings are watched (empty: all)."
    )

    @model_validator(mode="after")
    def _unique(self) -> LimitsConfig:
        seen: set[tuple[str, str]] = set()
        for rule in self.rules:
            key = (rule.quantity, rule.period)
            if key in seen:
                raise ValueError(f"rules: {rule.quantity} {rule.period} is given twice")
            seen.add(key)
        return self


class StationParameter(Section):
    quantity: str = Field(pattern=NAME, description="Reading quantity, e.g. cod.")
    code: str | None = Field(
        default=None,
        min_length=1,
        max_length=16,
        pattern=r"^[^\t\r\n]+$",
        description="Parameter symbol in the file (Circular 10/2021 Table 34); default "
        "from the quantity.",
    )
    unit: str | None = Field(
        default=None,
        pattern=r"^[^\t\r\n]*$",
        description="Unit written in the file; default from the quantity.",
    )
    sensor: str | None = Field(
        default=None, pattern=NAME, description="Only this sensor's readings (default: any)."
    )
    scale: float = Field(
        default=1.0, description="File value = reading value * scale (a unit conversion)."
    )
    decimals: int = Field(default=2, ge=0, le=6, description="Digits after the '.' decimal.")

    @model_validator(mode="after")
    def _known(self) -> StationParameter:
        if (self.code is None or self.unit is None) and self.quantity not in STATION_QUANTITIES:
            raise ValueError(
                f"quantity {self.quantity!r} has no default code and unit; give both"
                f" (known: {', '.join(sorted(STATION_QUANTITIES))})"
            )
        return self

    @property
    def file_code(self) -> str:
        return self.code or STATION_QUANTITIES[self.quantity][0]

    @property
    def file_unit(self) -> str:
        return self.unit if self.unit is not None else STATION_QUANTITIES[self.quantity][2]


class StationConfig(Section):
    code: str = Field(
        pattern=STATION_CODE, max_length=64, description="Station code: folder and file name."
    )
    parameters: list[StationParameter] = Field(
        min_length=1, description="One file line each, in this order."
    )

    @model_validator(mode="after")
    def _unique_codes(self) -> StationConfig:
        codes = [p.file_code for p in self.parameters]
        if len(codes) != len(set(codes)):
            raise ValueError(f"station {self.code}: a parameter code is used twice")
        return self


class StationExportConfig(Section):
    enabled: bool = Field(
        default=False,
        description="Write monitoring-station files (Circular 10/2021/TT-BTNMT) and upload "
        "them to the department's server.",
    )
    province: str | None = Field(
        default=None, pattern=STATION_CODE, max_length=64, description="Province code in names."
    )
    facility: str | None = Field(
        default=None, pattern=STATION_CODE, max_length=64, description="Facility code in names."
    )
    stations: list[StationConfig] = Field(
        default_factory=list, description="Stations of the facility, one file each per period."
    )
    interval_s: int = Field(
        default=300,
        ge=60,
        le=3600,
        description="Seconds per file (the circular: 5 minutes); must divide an hour.",
    )
    utc_offset: str = Field(
        default="+07:00", description="Local time of file names and lines (Vietnam: +07:00)."
    )
    grace_s: float = Field(
        default=30.0,
        ge=0,
        le=600,
        description="A period's file is written this long after it ends, for late readings.",
    )
    protocol: Literal["ftp", "ftps"] = Field(
        default="ftp",
        description="ftp, or ftps (explicit TLS, AUTH TLS, protected data channel).",
    )
    host: str | None = Field(default=None, description="The department's FTP server.")
    port: int = Field(default=21, ge=1, le=65535, description="FTP control port.")
    username: str = Field(default="anonymous", description="FTP user.")
    password: SecretStr | None = Field(
        default=None,
        description="FTP password (better as the credential file station_export.password).",
    )
    remote_dir: str = Field(
        default="/",
        pattern=r"^/[^\r\n]*$",
        description="Folder on the server that holds the station folders.",
    )
    ca_file: str | None = Field(
        default=None, description="ftps: CA that signs the server certificate (default: system)."
    )
    passive: bool = Field(default=True, description="Passive-mode data connections.")
    timeout_s: float = Field(
        default=30.0, gt=0, le=600, description="Network timeout of one FTP operation."
    )
    retry_max_s: float = Field(
        default=300.0, ge=1, description="Cap of the retry delay while the server is down."
    )
    max_pending_files: int = Field(
        default=20_000,
        ge=10,
        description="Files kept for upload at most (20,000 = 69 days of 5-minute files); "
        "beyond it the oldest are dropped, counted and reported as an alert.",
    )
    keep_sent_days: float = Field(
        default=60.0,
        ge=0,
        description="Days uploaded files stay on the node (the circular's data logger keeps "
        "60 days); 0 deletes them once uploaded.",
    )

    @field_validator("utc_offset")
    @classmethod
    def _offset(cls, value: str) -> str:
        return _check_offset(value)

    @model_validator(mode="after")
    def _complete(self) -> StationExportConfig:
        if 3600 % self.interval_s:
            raise ValueError(f"interval_s {self.interval_s} does not divide an hour")
        if not self.enabled:
            return self
        missing = [k for k in ("province", "facility", "host") if getattr(self, k) is None]
        if missing:
            raise ValueError(f"enabled, but {', '.join(missing)} not set")
        if not self.stations:
            raise ValueError("enabled, but no [[station_export.stations]]")
        codes = [s.code for s in self.stations]
        if len(codes) != len(set(codes)):
            raise ValueError("a station code is used twice")
        return self
