"""Air-pollutant concentrations in µg/m³, the unit of VN_AQI's Table 2 and QCVN 05:2023."""

from __future__ import annotations

# Molar masses (g/mol) for ppb -> µg/m³ at 25 °C and 760 mmHg, the reference state of the
# Nm³ in QCVN 05:2023/BTNMT (1.3.10), where a mole of gas fills 24.45 L.
MOLAR_MASS: dict[str, float] = {"o3": 48.00, "no2": 46.01, "so2": 64.07, "co": 28.01}
MOLAR_VOLUME_L = 24.45
# Pollutants compared in µg/m³ (particles have no molar mass: only mass units convert).
AIR_POLLUTANTS: frozenset[str] = frozenset({"pm2_5", "pm10", "tsp", *MOLAR_MASS})
UG_M3 = "ug/m3"


def _normalise(unit: str) -> str:
    u = unit.strip().replace("µ", "u").replace("μ", "u").replace("³", "3").lower()
    return u.replace("/nm3", "/m3")


def to_ug_m3(pollutant: str, value: float, unit: str) -> float | None:
    """`value` in `unit` as µg/m³, or None when the unit does not convert for this pollutant.

    Accepts ug/m3 (also µg/m³, ug/Nm3), mg/m3, and for gases ppb and ppm."""
    u = _normalise(unit)
    if u == "ug/m3":
        return value
    if u == "mg/m3":
        return value * 1000.0
    mass = MOLAR_MASS.get(pollutant)
    if mass is None:
        return None
    if u == "ppb":
        return value * mass / MOLAR_VOLUME_L
    if u == "ppm":
        return value * 1000.0 * mass / MOLAR_VOLUME_L
    return None
